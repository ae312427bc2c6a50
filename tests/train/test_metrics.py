"""Genre metrics agree with scikit-learn; baseline and silhouette behave."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_fscore_support,
    silhouette_score,
)

from mmx.train.metrics import genre_metrics, label_frequency_baseline, silhouette


def _data(seed: int, n: int = 60, g: int = 6, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, g)) < 0.3).astype(np.int64)
    y[:, 2] = 0  # a genre with no positives
    y[0, 4] = 1  # a genre with a single positive
    y[1:, 4] = 0
    scores = rng.random((n, g))
    scores[:, 1] = 0.7 * y[:, 1] + 0.3 * scores[:, 1]  # an informative genre
    if ties:
        scores = np.round(scores, 1)  # many tied scores
    return y, scores


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_agrees_with_sklearn(seed, ties):
    y, scores = _data(seed, ties=ties)
    genres = [f"g{i}" for i in range(y.shape[1])]
    got = genre_metrics(y, scores, threshold=0.3, genres=genres)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the genre with no positives
        per_genre = average_precision_score(y, scores, average=None)
        for avg in ("micro", "macro", "weighted", "samples"):
            assert got[f"au_prc_{avg}"] == pytest.approx(
                average_precision_score(y, scores, average=avg), abs=1e-6
            )
        p, r, f, _ = precision_recall_fscore_support(
            y, (scores >= 0.3).astype(int), average="weighted", zero_division=0
        )
    np.testing.assert_allclose([got["ap_per_genre"][g] for g in genres], per_genre, atol=1e-6)
    assert got["ap_per_genre"]["g2"] == 0.0  # sklearn's value for a genre without positives
    assert got["precision_weighted"] == pytest.approx(p, abs=1e-6)
    assert got["recall_weighted"] == pytest.approx(r, abs=1e-6)
    assert got["f1_weighted"] == pytest.approx(f, abs=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_samples_ap_with_ties_and_rows_without_positives(seed):
    """AP samples = sklearn's average="samples": per-trailer AP over genres, mean over trailers;
    a trailer with no positive genre counts as 0 (sklearn does not skip it)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((40, 8)) < 0.25).astype(np.int64)
    y[:5] = 0  # trailers without any positive genre
    y[5] = 1  # a trailer with every genre
    scores = rng.integers(0, 4, size=(40, 8)) / 4.0  # heavy ties within each trailer
    scores[6] = 0.5  # a trailer whose genres all tie
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = average_precision_score(y, scores, average="samples")
        kept = average_precision_score(y[5:], scores[5:], average="samples")
    got = genre_metrics(y, scores)["au_prc_samples"]
    assert got == pytest.approx(want, abs=1e-9)
    assert got == pytest.approx(kept * 35 / 40, abs=1e-9)  # the 5 empty rows weigh in as 0


def test_no_positive_at_all_is_zero_like_sklearn():
    y = np.zeros((5, 3), dtype=int)
    got = genre_metrics(y, np.random.default_rng(0).random((5, 3)))
    assert got["au_prc_weighted"] == 0.0 and got["f1_weighted"] == 0.0
    assert got["au_prc_micro"] == 0.0 and got["au_prc_samples"] == 0.0


def test_label_frequency_baseline():
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0]])
    scores = label_frequency_baseline(y, 5)
    assert scores.shape == (5, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[3], [0.75, 0.5, 0.0])


def test_silhouette():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    labels = np.repeat([0, 1, 2], 10)
    x[labels == 1] += 3.0
    assert silhouette(x, labels) == pytest.approx(silhouette_score(x, labels, metric="cosine"))
    assert np.isnan(silhouette(x, np.zeros(30, dtype=int)))  # one label
    assert np.isnan(silhouette(x, np.full(30, -1)))  # nothing labelled
    masked = labels.copy()
    masked[:10] = -1  # rows without a label are ignored
    assert silhouette(x, masked) == pytest.approx(
        silhouette_score(x[10:], labels[10:], metric="cosine")
    )


def test_bootstrap_interval_holds_the_estimate_and_shrinks_with_n():
    from mmx.train.metrics import bootstrap_ci, split_metrics

    rng = np.random.default_rng(1)

    def data(n):
        y = (rng.random((n, 4)) < 0.3).astype(float)
        return y, np.clip(y * 0.4 + rng.random((n, 4)) * 0.6, 0, 1)

    y, s = data(30)
    small = bootstrap_ci(y, s, n_boot=300)
    point = genre_metrics(y, s)["au_prc_micro"]
    assert small["au_prc_micro"][0] <= point <= small["au_prc_micro"][1]
    y2, s2 = data(600)
    big = bootstrap_ci(y2, s2, n_boot=300)
    width = {k: v[1] - v[0] for k, v in small.items()}
    assert all(big[k][1] - big[k][0] < width[k] for k in width)
    m = split_metrics(y, s)
    assert m["n"] == 30 and set(m["ci95"]) >= {"au_prc_micro", "au_prc_weighted"}
