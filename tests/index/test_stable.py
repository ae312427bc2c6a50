"""Sub-genre ids across retrains: new clusters take the ids of the old ones they continue."""

from __future__ import annotations

import numpy as np
import pytest

from mmx.index.stable import match_ids, membership_jaccard, stability


def test_permuted_labels_map_back() -> None:
    rng = np.random.default_rng(0)
    old_ids = np.array([3, 5, 8, 11])
    old = rng.choice(old_ids, size=200)
    perm = {3: 2, 5: 0, 8: 3, 11: 1}  # the retrain numbered the same groups differently
    new = np.array([perm[o] for o in old])
    m = match_ids(new, old, 4, old_ids=old_ids, min_jaccard=0.3)
    assert m.ids.tolist() == [5, 11, 3, 8]
    assert m.matched.all() and m.retired == [] and m.high_water == 11
    np.testing.assert_allclose(m.jaccard, 1.0)
    s = stability(m.ids[new], old, m)
    assert s["kept_share"] == 1.0 and s["ari"] == pytest.approx(1.0)
    assert (s["matched"], s["new"], s["retired"], s["n"]) == (4, 0, 0, 200)


def test_a_split_cluster_keeps_its_id_on_the_bigger_part() -> None:
    old = np.array([0] * 10 + [1] * 10)
    new = np.array([0] * 6 + [2] * 4 + [1] * 10)  # old 0 split 6 / 4
    m = match_ids(new, old, 3, old_ids=[0, 1], min_jaccard=0.3)
    assert m.ids.tolist() == [0, 1, 2]
    assert m.matched.tolist() == [True, True, False]
    np.testing.assert_allclose(m.jaccard, [0.6, 1.0, 0.0])
    s = stability(m.ids[new], old, m)
    assert s["kept_share"] == pytest.approx(16 / 20)
    assert 0 < s["ari"] < 1


def test_a_new_cluster_gets_an_id_above_every_id_ever_used() -> None:
    old = np.array([0] * 5 + [4] * 5)
    new = np.array([1] * 5 + [0] * 5)
    # cluster 2 has members only among trailers new this run (no shared trailer)
    m = match_ids(new, old, 3, old_ids=[0, 4, 6], min_jaccard=0.3, high_water=9)
    assert m.ids.tolist() == [4, 0, 10]  # not 1..3 (never used), not 5..9 (used before)
    assert m.retired == [6] and m.high_water == 10


def test_no_overlap_gives_fresh_ids() -> None:
    old = np.array([0, 0, 1, 1, 2, 2])
    new = np.array([0, 1, 2, 0, 1, 2])  # every pair shares at most one of its four trailers
    assert membership_jaccard(new, old, 3, np.array([0, 1, 2])).max() < 0.35
    m = match_ids(new, old, 3, old_ids=[0, 1, 2], min_jaccard=0.5)
    assert not m.matched.any() and m.ids.tolist() == [3, 4, 5] and m.retired == [0, 1, 2]
    m = match_ids(np.zeros(0, int), np.zeros(0, int), 2, old_ids=[0, 1], min_jaccard=0.3)
    assert m.ids.tolist() == [2, 3]  # no shared trailers at all


def test_first_snapshot_numbers_from_zero() -> None:
    m = match_ids(np.zeros(0, int), np.zeros(0, int), 3, old_ids=[], min_jaccard=0.3)
    assert m.ids.tolist() == [0, 1, 2] and m.high_water == 2


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        match_ids(np.array([0, 3]), np.array([0, 0]), 2, old_ids=[0], min_jaccard=0.3)
    with pytest.raises(ValueError, match="not among old_ids"):
        match_ids(np.array([0, 1]), np.array([0, 7]), 2, old_ids=[0], min_jaccard=0.3)
    with pytest.raises(ValueError, match="min_jaccard"):
        match_ids(np.array([0]), np.array([0]), 1, old_ids=[0], min_jaccard=0.0)
    with pytest.raises(ValueError, match="equal"):
        match_ids(np.array([0, 1]), np.array([0]), 2, old_ids=[0], min_jaccard=0.3)
