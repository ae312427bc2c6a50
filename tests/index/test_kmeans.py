"""Spherical k-means, choice of k and nearest-centroid assignment on planted clusters."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from mmx.index import kmeans as kmeans_mod
from mmx.index.kmeans import assign, choose_k, cluster, train_sample


def clustered(
    n_clusters: int, per_cluster: int, dim: int = 32, noise: float = 0.35, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded planted clusters: vectors (N, D) float32, true labels (N,), centres (C, D)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    truth = np.repeat(np.arange(n_clusters), per_cluster)
    x = centres[truth] + noise * rng.normal(size=(len(truth), dim))
    # Unequal norms: cosine k-means must not care about vector length.
    x *= rng.uniform(0.5, 3.0, size=(len(truth), 1))
    return x.astype(np.float32), truth, centres


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_cluster_recovers_planted_clusters(seed: int) -> None:
    x, truth, _ = clustered(8, 120, seed=seed)
    labels, centroids = cluster(x, 8, seed=seed)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    assert centroids.dtype == np.float32 and centroids.shape == (8, 32)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert adjusted_rand_score(truth, labels) >= 0.9


def test_cluster_is_deterministic_and_ordered_by_size() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 16))
    truth = np.repeat(np.arange(4), [10, 80, 40, 20])
    x = (centres[truth] + 0.3 * rng.normal(size=(len(truth), 16))).astype(np.float32)
    a_labels, a_centroids = cluster(x, 4, seed=11)
    b_labels, b_centroids = cluster(x, 4, seed=11)
    np.testing.assert_array_equal(a_labels, b_labels)
    np.testing.assert_array_equal(a_centroids, b_centroids)
    np.testing.assert_array_equal(np.bincount(a_labels), [80, 40, 20, 10])


def test_cluster_clamps_k_and_handles_one_cluster() -> None:
    x, _, _ = clustered(2, 3, dim=8)
    labels, centroids = cluster(x, 50, seed=0)
    assert centroids.shape == (6, 8) and labels.max() < 6
    labels, centroids = cluster(x, 1, seed=0)
    assert centroids.shape == (1, 8) and not labels.any()
    with pytest.raises(ValueError):
        cluster(x[:0], 3, seed=0)


def test_assign_matches_cluster_and_places_new_points() -> None:
    x, truth, _ = clustered(5, 60, seed=3)
    labels, centroids = cluster(x, 5, seed=0)
    np.testing.assert_array_equal(assign(x, centroids), labels)
    # New trailers near each planted centre go to the cluster holding that centre's members.
    new, new_truth, _ = clustered(5, 10, seed=3)
    cluster_of_truth = {t: np.bincount(labels[truth == t]).argmax() for t in range(5)}
    expected = np.array([cluster_of_truth[t] for t in new_truth])
    assert (assign(new * 7.0, centroids) == expected).mean() >= 0.95


def test_choose_k_finds_planted_k() -> None:
    x, _, _ = clustered(5, 60, noise=0.3, seed=7)
    assert choose_k(x, range(2, 10), seed=0) == 5
    assert choose_k(x[:3], [5, 8], seed=0) == 3  # no valid candidate: clamp to N


def test_cluster_on_a_sample_neither_copies_nor_changes_its_input(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Large N: k-means trains on a seeded sample (restarts on a sub-sample), every row is then
    assigned; the caller's array is read in blocks, never copied whole or modified."""
    monkeypatch.setattr(kmeans_mod, "MAX_POINTS_PER_CENTROID", 200)  # sample 1,200 of 60,000
    monkeypatch.setattr(kmeans_mod, "RESTART_POINTS_PER_CENTROID", 50)  # restarts on 300
    runs: list[tuple[int, int, bool]] = []  # (sample rows, nredo, started from centroids)
    real = kmeans_mod._kmeans

    def spy(sample: np.ndarray, k: int, **kw: object) -> object:
        runs.append((len(sample), kw["nredo"], kw.get("init") is not None))
        return real(sample, k, **kw)

    monkeypatch.setattr(kmeans_mod, "_kmeans", spy)
    x, truth, _ = clustered(6, 10_000, dim=64, noise=0.5, seed=4)  # 15 MiB, unequal norms
    before = x.copy()
    tracemalloc.start()
    try:
        labels, centroids = cluster(x, 6, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 2, f"peak {peak} bytes for a {x.nbytes}-byte input"
    assert runs == [(300, 10, False), (1200, 1, True)]  # 10 restarts small, best one refined
    np.testing.assert_array_equal(x, before)
    assert adjusted_rand_score(truth, labels) >= 0.95
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    again, _ = cluster(x, 6, seed=0)
    np.testing.assert_array_equal(again, labels)


def test_train_sample_is_seeded_normalised_and_bounded() -> None:
    x, _, _ = clustered(3, 400, dim=8)
    s = train_sample(x, 3, seed=1, max_points_per_centroid=100)
    assert s.shape == (300, 8)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(s, train_sample(x, 3, seed=1, max_points_per_centroid=100))
    assert not np.array_equal(s, train_sample(x, 3, seed=2, max_points_per_centroid=100))
    assert train_sample(x, 3, seed=1, max_points=50).shape == (50, 8)
    whole = train_sample(x, 3, seed=1)  # N below the cap: every row, in order
    np.testing.assert_allclose(whole, x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-6)


def test_assign_in_blocks_equals_one_block() -> None:
    x, _, _ = clustered(5, 60, seed=2)
    _, centroids = cluster(x, 5, seed=0)
    np.testing.assert_array_equal(assign(x, centroids, chunk=7), assign(x, centroids))
