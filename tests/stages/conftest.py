"""Fixtures of the stage tests: hand-made stage outputs in the run's own schemas."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmx.index import shards
from mmx.stages.embed import EMBEDDINGS


def _write_embeddings(folder: Path, ids: list[str], x: np.ndarray,
                      scores: np.ndarray | None = None, n_shards: int = 2) -> str:
    """An embeddings folder (one part, :data:`EMBEDDINGS`) of the vectors ``x`` of ``ids``,
    each in its shard of ``n_shards``, with genre ``scores`` (or nulls); its URI."""
    folder.mkdir(parents=True)
    n = len(ids)
    pq.write_table(pa.table({
        "trailer_id": ids,
        "shard": pa.array([shards.shard_of(t, n_shards) for t in ids], pa.int32()),
        "embedding": pa.array(list(x), pa.list_(pa.float32())),
        "coarse_embedding": pa.nulls(n, pa.list_(pa.float32())),
        "genre_scores": (pa.nulls(n, pa.list_(pa.float32())) if scores is None
                         else pa.array(list(scores), pa.list_(pa.float32()))),
        "concepts": pa.nulls(n, pa.list_(pa.int16())),
    }, schema=EMBEDDINGS), folder / "part-0.parquet")
    return str(folder)


@pytest.fixture()
def write_embeddings() -> Callable[..., str]:
    """``write_embeddings(folder, ids, x, scores=None, n_shards=2) -> uri``."""
    return _write_embeddings
