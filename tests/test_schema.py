"""The published vector columns: fixed-size types, and one reader for both generations."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mmx import schema


def test_published_fixes_the_size_of_vector_columns_only() -> None:
    s = schema.published(schema.with_vocab(schema.TRAILERS, ["A"]), embedding=8, genre_scores=0)
    assert s.field("embedding").type == pa.list_(pa.float32(), 8)
    assert s.field("genre_scores").type == pa.list_(pa.float32())  # 0: size unknown
    assert schema.vocab_of(s) == ["A"]  # metadata kept
    with pytest.raises(ValueError, match="not a vector column"):
        schema.published(schema.TRAILERS, genres=3)


@pytest.mark.parametrize("fixed", [True, False], ids=["float32[D]", "list<float32>"])
def test_matrix_reads_fixed_and_variable_size_vectors(fixed: bool) -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    col = schema.vectors(x) if fixed else pa.array(list(x), pa.list_(pa.float32()))
    assert col.type == (pa.list_(pa.float32(), 3) if fixed else pa.list_(pa.float32()))
    chunked = pa.chunked_array([col.slice(0, 1), col.slice(1)])
    np.testing.assert_array_equal(schema.matrix(chunked), x)
    assert schema.matrix(col.slice(0, 0), 3).shape == (0, 3)
    with pytest.raises(ValueError, match="null"):
        schema.matrix(pa.concat_arrays([col, pa.nulls(1, col.type)]))
    ragged = pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match="equal-length"):
        schema.matrix(ragged)
