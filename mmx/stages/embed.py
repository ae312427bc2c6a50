"""Ray adapter for embedding: model replicas in an actor pool over the run's features store.

``read_parquet(features store, ok rows) → map_batches(EmbedActor pool) → write_parquet``: each
actor loads the fine-grained and the coarse checkpoints once; a batch of trailers comes out as
fine embeddings, genre scores (sigmoid of the coarse head), the index shard of each trailer
and the ImageNet concept of each of its clips (for the sub-genre descriptions). Nothing passes
through the driver.

Fault tolerance: a replica lost with its node (or its process) is restarted and its batches
re-run by Ray Data's actor-pool defaults (``max_restarts=-1``, ``max_task_retries=-1``; Ray 2.60
deprecates setting them per operator); embedding is a pure function of the checkpoints, so a
re-run batch gives the same rows. tests/integration/test_failures.py pins these defaults.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.expressions import col

from mmx.config import RunConfig
from mmx.stages import dataset

EMBEDDINGS = pa.schema(
    [
        ("trailer_id", pa.string()),
        ("shard", pa.int32()),  # index shard (mmx.index.shards.shard_of)
        ("embedding", pa.list_(pa.float32())),
        # the coarse (genre) model's bottleneck: the report's coarse map only; null without a
        # genre model or for a trailer whose published embedding was reused
        ("coarse_embedding", pa.list_(pa.float32())),
        ("genre_scores", pa.list_(pa.float32())),
        ("concepts", pa.list_(pa.int16())),  # ImageNet class of each clip; null: not known
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
        self.n_shards = cfg.index.n_shards
        self.head = None
        if cfg.index.top_concepts > 0 and "appearance" in cfg.experts.names:
            from mmx.experts.concepts import classifier_head

            self.head = classifier_head(cfg.experts)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from mmx.train.data import TrailerSet, trailer_set_from_table
        from mmx.train.loop import predict

        data = trailer_set_from_table(batch, {}, self.genres)
        # the model's experts, in its order: a batch whose rows all lack one (a per-title
        # expert no title of the batch has input for) still lines up, masked
        data = TrailerSet(data.trailers, self.fine.expert_dims, self.fine.audio_dim, self.genres)
        pred = predict(self.fine, data, self.batch, coarse_model=self.coarse, device=self.device)
        return pa.table(
            {
                "trailer_id": batch["trailer_id"],
                "shard": shard_column(batch["trailer_id"], self.n_shards),
                "embedding": lists(pred.embeddings),
                "coarse_embedding": (lists(pred.coarse_embeddings) if self.coarse is not None
                                     else pa.nulls(batch.num_rows, pa.list_(pa.float32()))),
                "genre_scores": lists(pred.scores),
                "concepts": self._concepts(batch),
            },
            schema=EMBEDDINGS,
        )

    def _concepts(self, batch: pa.Table) -> pa.Array:
        """The top ImageNet class of every clip of every row (null without a classifier)."""
        if self.head is None:
            return pa.nulls(batch.num_rows, EMBEDDINGS.field("concepts").type)
        from mmx.experts.concepts import top_classes

        weight, bias = self.head
        col = batch["appearance"].combine_chunks()
        dim = weight.shape[1]
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False) // dim
        classes = (top_classes(flat.reshape(-1, dim), weight, bias) if flat.size
                   else np.zeros(0, np.int64))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(classes.astype(np.int16)))


def shard_column(trailer_ids: pa.ChunkedArray | pa.Array, n_shards: int) -> pa.Array:
    """The index shard of each trailer (:func:`mmx.index.shards.shard_of`), int32."""
    from mmx.index.shards import shard_of

    return pa.array([shard_of(t, n_shards) for t in trailer_ids.to_pylist()], pa.int32())


def lists(x: np.ndarray) -> pa.Array:
    """(N, D) float32 → list<float32> of N rows (zero-copy through a flat buffer)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    offsets = np.arange(n + 1, dtype=np.int32) * d  # (N+1,); d = 0: N empty lists
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(x.reshape(-1)))


def embed_trailers(store: str, fine: str, coarse: str | None, cfg: RunConfig, dest: str,
                   only: list[str] | None = None, append: bool = False) -> None:
    """Embeddings, genre scores, shards and clip concepts of the ok trailers of the features
    ``store`` (all of them, or the trailer ids ``only``), written to the folder ``dest``
    (:data:`EMBEDDINGS`; ``append``: beside the rows already there). ``coarse`` None: a model
    without a genre head (empty scores)."""
    res = cfg.resources
    keep = col("status") == "ok"
    if only is not None:
        keep = keep & col("trailer_id").is_in(list(only))
    ds = dataset.read(store, where=keep).map_batches(
        EmbedActor,
        batch_size=res.embed_batch,
        batch_format="pyarrow",
        fn_constructor_kwargs={"fine": fine, "coarse": coarse, "cfg": cfg},
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=res.embed_pool),
        num_cpus=1,
        num_gpus=res.embed_gpus,
    )
    dataset.write(ds, dest, res.store_rows_per_file, append=append)
