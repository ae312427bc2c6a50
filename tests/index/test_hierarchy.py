"""Sub-genres by Ward's hierarchy: the cut follows nested planted structure, not a few big
clusters; fixed k; sampling; every row gets the nearest centroid; clusters ordered by size."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from mmx.index.hierarchy import choose_cut, ward_subgenres


def _nested(seed: int, coarse: int = 5, fine: int = 4, per: int = 8, dim: int = 32):
    """``coarse`` well-separated groups, each made of ``fine`` tighter sub-groups."""
    rng = np.random.default_rng(seed)
    x, truth = [], []
    for c in range(coarse):
        centre = rng.normal(size=dim) * 4.0
        for f in range(fine):
            sub = centre + rng.normal(size=dim) * 1.2
            x.append(sub + rng.normal(size=(per, dim)) * 0.3)
            truth += [c * fine + f] * per
    return np.concatenate(x).astype(np.float32), np.asarray(truth)


def test_auto_cut_finds_the_fine_level():
    x, truth = _nested(0)
    cut = ward_subgenres(x)
    assert 15 <= cut.k <= 26, cut.k  # 20 planted sub-groups, not the 5 coarse groups
    assert adjusted_rand_score(truth, cut.labels) > 0.8
    best = max(cut.curve, key=cut.curve.get)
    assert cut.k >= best  # never coarser than the silhouette peak
    q = cut.quality()
    assert q["k"] == cut.k and q["sizes"]["max"] >= q["sizes"]["min"] >= 1


def test_choose_cut_takes_the_finest_within_tolerance():
    curve = {2: 0.50, 5: 0.60, 10: 0.57, 20: 0.56, 40: 0.40}
    assert choose_cut(curve, 0.0) == 5
    assert choose_cut(curve, 0.05) == 20
    assert choose_cut(curve, 0.25) == 40


def test_fixed_k_sampling_and_ordering():
    x, _ = _nested(1)
    cut = ward_subgenres(x, k=20, sample=60, seed=3)  # hierarchy on 60 of 160 rows
    assert cut.n_sample == 60 and len(cut.labels) == len(x)
    sizes = np.bincount(cut.labels)
    assert (np.diff(sizes) <= 0).all()  # 0 = largest
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    nearest = np.argmax(unit @ cut.centroids.T, axis=1)
    np.testing.assert_array_equal(nearest, cut.labels)
    np.testing.assert_allclose(np.linalg.norm(cut.centroids, axis=1), 1.0, rtol=1e-5)
    again = ward_subgenres(x, k=20, sample=60, seed=3)
    np.testing.assert_array_equal(again.labels, cut.labels)


def test_tiny_inputs():
    x = np.eye(2, 4, dtype=np.float32)
    cut = ward_subgenres(x)
    assert cut.k == 2 and sorted(cut.labels.tolist()) == [0, 1]
