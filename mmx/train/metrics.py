"""Genre metrics of DESIGN §1, a label-frequency baseline and the embedding silhouette.

Average precision and the thresholded weighted P/R/F1 are computed here with vectorised numpy
(all genres at once) and agree with scikit-learn's ``average_precision_score`` and
``precision_recall_fscore_support(average="weighted", zero_division=0)`` (tested to 1e-6).

Genres with no positive in ``y_true`` follow scikit-learn: their AP is 0 (sklearn sets recall
to 1 at every threshold, so the uninterpolated AP sums to 0); they count as 0 in the macro
average, and weigh nothing in the weighted averages (weight = support = 0). When no genre has a
positive at all, the weighted averages are 0, as in scikit-learn.

``au_prc_samples`` is scikit-learn's ``average_precision_score(..., average="samples")``: the AP
of each trailer's ranking of the genres, averaged over trailers. scikit-learn does not skip a
trailer without any positive genre: its AP is 0 and it counts in the mean (checked against
scikit-learn 1.9.1); so does it here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import silhouette_score


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Uninterpolated AP per column: ``y_true (N, G) {0,1}``, ``scores (N, G)`` → ``(G,) float64``.

    AP = Σ_k (R_k − R_{k−1}) P_k over the distinct score thresholds in decreasing order, which
    equals the mean over positives of the precision at the end of the positive's tie group.
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    n = y.shape[0]
    if n == 0:
        return np.zeros(y.shape[1])
    order = np.argsort(-s, axis=0, kind="stable")  # (N, G) decreasing score
    s_sorted = np.take_along_axis(s, order, axis=0)  # (N, G)
    y_sorted = np.take_along_axis(y, order, axis=0)  # (N, G)
    precision = np.cumsum(y_sorted, axis=0) / np.arange(1, n + 1)[:, None]  # (N, G)
    is_last = np.ones_like(s_sorted, dtype=bool)  # last row of each group of tied scores
    is_last[:-1] = s_sorted[:-1] != s_sorted[1:]
    rows = np.broadcast_to(np.arange(n)[:, None], s_sorted.shape)
    candidates = np.where(is_last, rows, n)  # (N, G)
    group_end = np.minimum.accumulate(candidates[::-1], axis=0)[::-1]  # (N, G) end of own group
    precision_at_end = np.take_along_axis(precision, group_end, axis=0)  # (N, G)
    n_pos = y.sum(axis=0)  # (G,)
    return (y_sorted * precision_at_end).sum(axis=0) / np.maximum(n_pos, 1.0)


def _weighted(values: np.ndarray, support: np.ndarray) -> float:
    total = support.sum()
    return float((values * support).sum() / total) if total > 0 else 0.0


def genre_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.3,
    genres: Sequence[str] | None = None,
) -> dict[str, object]:
    """All coarse metrics by name.

    ``y_true (N, G) {0,1}``, ``scores (N, G)`` float (sigmoid probabilities). A genre is
    predicted when its score is ``>= threshold``. Returns ``au_prc_micro``, ``au_prc_macro``,
    ``au_prc_weighted``, ``au_prc_samples``, ``f1_weighted``, ``precision_weighted``,
    ``recall_weighted`` (floats) and ``ap_per_genre`` (genre name → AP; names default to
    ``"0"``, ``"1"``, …).
    """
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must be equal (N, G) arrays")
    names = [str(g) for g in (genres if genres is not None else range(y.shape[1]))]
    support = y.sum(axis=0)  # (G,)
    ap = average_precision(y, s)  # (G,)
    micro = float(average_precision(y.reshape(-1, 1), s.reshape(-1, 1))[0])  # (N*G, 1)
    per_trailer = average_precision(y.T, s.T)  # (N,) AP of each trailer's genre ranking

    pred = s >= threshold  # (N, G)
    tp = (pred & (y > 0)).sum(axis=0).astype(np.float64)  # (G,)
    fp = (pred & (y == 0)).sum(axis=0).astype(np.float64)
    fn = support - tp
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "au_prc_micro": micro,
        "au_prc_macro": float(ap.mean()) if ap.size else 0.0,
        "au_prc_weighted": _weighted(ap, support),
        "au_prc_samples": float(per_trailer.mean()) if per_trailer.size else 0.0,
        "f1_weighted": _weighted(f1, support),
        "precision_weighted": _weighted(precision, support),
        "recall_weighted": _weighted(recall, support),
        "ap_per_genre": {name: float(v) for name, v in zip(names, ap, strict=True)},
    }


def label_frequency_baseline(y_train: np.ndarray, n: int) -> np.ndarray:
    """Scores (n, G) float32 that predict each genre's training frequency for every trailer."""
    freq = np.asarray(y_train, dtype=np.float64).mean(axis=0) if len(y_train) else 0.0
    return np.broadcast_to(np.asarray(freq, dtype=np.float32), (n, np.shape(y_train)[1])).copy()


def silhouette(
    embeddings: np.ndarray,
    labels: np.ndarray,
    sample_size: int | None = None,
    seed: int = 0,
) -> float:
    """Cosine silhouette of ``embeddings (N, D)`` w.r.t. integer ``labels (N,)``.

    Rows with a negative label are ignored. Returns nan when fewer than 2 distinct labels
    remain (or every row is its own label). ``sample_size`` subsamples large sets.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    lab = np.asarray(labels).astype(np.int64)
    keep = lab >= 0
    x, lab = x[keep], lab[keep]
    n_labels = len(np.unique(lab))
    if n_labels < 2 or n_labels > len(lab) - 1:
        return float("nan")
    if sample_size is not None and sample_size < len(lab):
        return float(
            silhouette_score(x, lab, metric="cosine", sample_size=sample_size, random_state=seed)
        )
    return float(silhouette_score(x, lab, metric="cosine"))


HEADLINE = ("au_prc_micro", "au_prc_macro", "au_prc_weighted", "f1_weighted")


def bootstrap_ci(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.3,
    keys: Sequence[str] = HEADLINE,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile bootstrap confidence intervals of the headline metrics over trailers.

    Resamples the rows of ``y_true (N, G)`` / ``scores (N, G)`` with replacement ``n_boot``
    times (seeded) and returns ``{key: [low, high]}`` at ``level``. A metric on a handful of
    trailers gets an interval as wide as it deserves.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores)
    n = len(y)
    if n == 0:
        return {k: [float("nan"), float("nan")] for k in keys}
    rng = np.random.default_rng(seed)
    draws = {k: np.empty(n_boot) for k in keys}
    for b in range(n_boot):
        rows = rng.integers(0, n, size=n)
        m = genre_metrics(y[rows], s[rows], threshold)
        for k in keys:
            draws[k][b] = m[k]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: [round(float(np.percentile(v, lo)), 4), round(float(np.percentile(v, hi)), 4)]
            for k, v in draws.items()}


def split_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.3,
    genres: Sequence[str] | None = None,
) -> dict[str, object]:
    """:func:`genre_metrics` of one split plus its size ``n`` and 95% bootstrap intervals of
    the headline figures under ``ci95`` (what ``metrics.json`` reports per split)."""
    return {
        **genre_metrics(y_true, scores, threshold, genres),
        "n": len(y_true),
        "ci95": bootstrap_ci(y_true, scores, threshold, n_boot=500),
    }
