"""Fixtures of the index tests."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import pytest


@pytest.fixture(autouse=True)
def _one_faiss_thread() -> Iterator[None]:
    """Tiny problems: one OpenMP thread avoids spin-wait stalls on a busy 2-core machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
