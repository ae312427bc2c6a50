"""Ray adapter for embedding: model replicas in an actor pool over per-trailer feature rows.

Each actor loads the fine-grained and the coarse checkpoints once; a batch of trailers comes
out as fine embeddings, coarse embeddings and genre scores (sigmoid of the coarse head).

Fault tolerance: a replica lost with its node (or its process) is restarted and its batches
re-run by Ray Data's actor-pool defaults (``max_restarts=-1``, ``max_task_retries=-1``; Ray 2.60
deprecates setting them per operator); embedding is a pure function of the checkpoints, so a
re-run batch gives the same rows. tests/integration/test_failures.py pins these defaults.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from mmx.config import RunConfig

EMBEDDINGS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("coarse_embedding", pa.list_(pa.float32())),
        ("genre_scores", pa.list_(pa.float32())),
    ]
)


class EmbedActor:
    """One model replica (fine + coarse), loaded once per actor."""

    def __init__(self, fine: str, coarse: str | None, cfg: RunConfig) -> None:
        import torch

        from mmx.train.loop import load_model

        torch.set_num_threads(1)
        self.device = "cuda" if cfg.resources.embed_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.fine, meta = load_model(fine)
        # no coarse model (self-supervised run): the fine model's own (empty) head scores
        self.coarse = load_model(coarse)[0] if coarse else None
        self.genres = list(meta["genres"])
        self.batch = cfg.resources.embed_batch

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mmx.train.data import trailer_set_from_table
        from mmx.train.loop import predict

        data = trailer_set_from_table(batch, {}, self.genres)
        pred = predict(self.fine, data, self.batch, coarse_model=self.coarse, device=self.device)
        return pa.table(
            {
                "trailer_id": batch["trailer_id"],
                "embedding": _lists(pred.embeddings),
                "coarse_embedding": _lists(pred.coarse_embeddings),
                "genre_scores": _lists(pred.scores),
            },
            schema=EMBEDDINGS,
        )


def _lists(x: np.ndarray) -> pa.Array:
    """(N, D) float32 → list<float32> of N rows (zero-copy through a flat buffer)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    offsets = np.arange(n + 1, dtype=np.int32) * d  # (N+1,); d = 0: N empty lists
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(x.reshape(-1)))


def embed_trailers(ok: pa.Table, fine: str, coarse: str | None, cfg: RunConfig) -> pa.Table:
    """Embeddings and genre scores of every ok trailer (rows of the ``features`` table);
    ``coarse`` None: a model without a genre head (scores are empty lists)."""
    if ok.num_rows == 0:
        return EMBEDDINGS.empty_table()
    res = cfg.resources
    ds = ray.data.from_arrow(ok).map_batches(
        EmbedActor,
        batch_size=res.embed_batch,
        batch_format="pyarrow",
        fn_constructor_kwargs={"fine": fine, "coarse": coarse, "cfg": cfg},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=res.embed_pool),
        num_cpus=1,
        num_gpus=res.embed_gpus,
    )
    table = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    return table.cast(EMBEDDINGS).sort_by("trailer_id")
