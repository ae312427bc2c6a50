"""Sub-genre descriptions: genre lift with minimum support, exemplars nearest the centroid."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mmx import schema
from mmx.index.describe import describe_clusters, genre_matrix

VOCAB = ["Action", "Comedy", "Drama", "Horror"]


def test_genre_matrix_ignores_unknown_genres() -> None:
    y = genre_matrix([["Action", "Drama"], [], ["Western"]], VOCAB)
    np.testing.assert_array_equal(y, [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_describe_clusters_lift_support_and_exemplars() -> None:
    # Cluster 0: mostly Horror (archive-wide rare) plus Drama (everywhere);
    # cluster 1: Comedy; one Action trailer in cluster 1 is below the support threshold;
    # cluster 2 has no members.
    centroids = np.eye(3, 4, dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    genres = [
        ["Horror", "Drama"],
        ["Horror", "Drama"],
        ["Horror"],
        [],  # unlabelled: ignored by lift, still a member
        ["Comedy", "Drama"],
        ["Comedy"],
        ["Comedy", "Action"],
        ["Comedy", "Drama"],
        ["Drama"],
        ["Comedy"],
    ]
    tids = [f"t{i}" for i in range(10)]
    # Members' distance to their centroid grows with the row number inside cluster 0,
    # shrinks inside cluster 1.
    vectors = np.zeros((10, 4), dtype=np.float32)
    vectors[:4, 0] = 1.0
    vectors[:4, 3] = [0.1, 0.2, 0.3, 0.4]
    vectors[4:, 1] = 1.0
    vectors[4:, 3] = [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
    table = describe_clusters(
        labels, genres, VOCAB, tids, vectors, centroids, top=3, exemplars=2, min_support=2
    )
    # the centroid is published as a fixed-size float32[D] vector (DuckDB FLOAT[D])
    assert table.schema.equals(schema.published(schema.SUBGENRES, centroid=4))
    assert table.schema.field("centroid").type == pa.list_(pa.float32(), 4)
    rows = table.to_pylist()
    assert [r["subgenre"] for r in rows] == [0, 1, 2]
    assert [r["size"] for r in rows] == [4, 6, 0]
    # Horror: share 1.0 vs 3/9 in the archive; Drama 2/3 vs 5/9 → both over-represented.
    assert rows[0]["top_genres"] == ["Horror", "Drama"]
    # Comedy lift 5/6 / (5/9) = 1.5; Action has lift > 1 but a single carrier; Drama lift < 1.
    assert rows[1]["top_genres"] == ["Comedy"]
    assert rows[2]["top_genres"] == [] and rows[2]["exemplars"] == []
    assert rows[0]["exemplars"] == ["t0", "t1"]
    assert rows[1]["exemplars"] == ["t9", "t8"]


def test_describe_clusters_empty_vocab_and_no_labels() -> None:
    vectors = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    table = describe_clusters(
        np.zeros(5, dtype=np.int32), [[]] * 5, [], list("abcde"), vectors, vectors[:1]
    )
    assert table.num_rows == 1
    assert table.column("top_genres").type == pa.list_(pa.string())
    assert table.to_pylist()[0]["size"] == 5


def test_describe_clusters_names_over_represented_concepts() -> None:
    # 3 clusters of 4 trailers, 10 clips each, over 5 concepts. Concept 0 ("sky") is everywhere;
    # cluster 0 shows "desert" in every member, cluster 1 "castle" in 3 of 4 and a single
    # "volcano" clip (one carrier: under the support threshold); cluster 2 nothing special.
    names = ["sky", "desert", "castle", "volcano", "seashore"]
    labels = np.repeat([0, 1, 2], 4)
    counts = np.zeros((12, 5), dtype=np.int32)
    counts[:, 0] = 10
    counts[0:4, 0], counts[0:4, 1] = 6, 4
    counts[4:7, 0], counts[4:7, 2] = 5, 5
    counts[7, 0], counts[7, 3] = 9, 1
    counts[8:12, 4] = [1, 0, 0, 0]
    counts[8, 0] = 9
    vectors = np.eye(3, dtype=np.float32)[labels]
    table = describe_clusters(
        labels, [[]] * 12, [], [f"t{i}" for i in range(12)], vectors, np.eye(3, dtype=np.float32),
        concept_counts=counts, concept_names=names, top_concepts=3, concept_min_share=0.5,
    )
    rows = table.to_pylist()
    assert rows[0]["top_concepts"] == ["desert"]
    assert rows[1]["top_concepts"] == ["castle"]
    # Cluster 2's clips are nearly all "sky" (39 of 40 vs 87 of 120 archive-wide: lift 1.34);
    # seashore has 1 carrier of 4 < max(2, 0.5 × 4).
    assert rows[2]["top_concepts"] == ["sky"]
    assert rows[0]["centroid"] == [1.0, 0.0, 0.0]


def test_describe_clusters_rejects_misaligned_concepts() -> None:
    import pytest

    x = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match="concept_counts"):
        describe_clusters(
            [0, 1], [[], []], [], ["a", "b"], x, x,
            concept_counts=np.zeros((3, 2)), concept_names=["p", "q"],
        )
