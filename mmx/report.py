"""The HTML run report of a snapshot: one self-contained page (inline CSS, inline SVG charts,
thumbnails as base64 JPEG; no script or style from the network).

Sections (each a ``<section id=…>``): ``genres`` (per-genre AP beside the label-frequency
prior, the paper's Table 2 shape), ``pr-curves`` (per genre, test split), ``silhouette`` (per
contrastive epoch), ``maps`` (2-D PCA of the coarse and fine embeddings by primary genre),
``subgenres`` (one card per sub-genre with its exemplars' thumbnails), ``neighbours``
(example lists), ``shots`` (shot-length histogram), ``status`` (status and failure reasons),
``timings`` (seconds per stage).

Pure: numpy, pyarrow and the standard library (plus :mod:`mmx.storage` to read local or s3://
snapshots); no Ray, no torch, so the slim query install renders it too. The pipeline writes it
into every snapshot as ``report.html`` (:func:`write_snapshot_report`); ``mmx report`` renders
any snapshot again.
"""

from __future__ import annotations

import base64
import html
import itertools
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmx import storage

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
THUMBNAILS_FILE = "thumbnails.parquet"
MAX_MAP_POINTS = 2000  # trailers drawn on each 2-D map (an even sample above this)
N_NEIGHBOUR_EXAMPLES = 6  # trailers whose neighbour lists are shown
N_NEIGHBOURS_SHOWN = 5
STAGES = ("discover", "ingest", "store", "train", "embed", "cluster", "index", "publish")
SECTIONS = ("genres", "pr-curves", "silhouette", "maps", "subgenres", "neighbours", "shots",
            "status", "timings")
# 20 distinguishable colours (Tableau 20), one per primary genre
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
_TRAILER_COLUMNS = ["trailer_id", "status", "reason", "genres", "genre_scores", "split",
                    "subgenre"]


class ReportError(ValueError):
    """The snapshot cannot be reported on (missing, incomplete, unreadable)."""


# ------------------------------------------------------------------------------ numbers
def precision_recall_curve(y_true: np.ndarray, scores: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and thresholds of one genre, as scikit-learn's
    ``precision_recall_curve`` returns them: ``y_true (N,) {0,1}``, ``scores (N,)`` →
    precision ``(T+1,)``, recall ``(T+1,)`` (decreasing, ending at precision 1, recall 0) and
    the ``T`` distinct score thresholds, increasing. Raises when there is no positive."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true {y.shape} and scores {s.shape} must have one value per row")
    if not y.any():
        raise ValueError("no positive example: the curve is undefined")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], y.size - 1]  # last row of each distinct score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return (np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], s[last][::-1])


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Uninterpolated AP of a curve from :func:`precision_recall_curve` (sklearn's
    ``average_precision_score``)."""
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(N, D) float → (N, 2) float64: the first two principal components (numpy SVD); the sign
    of each axis is fixed so the largest loading is positive (the same data draws the same)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        return np.zeros((0, 2))
    xc = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    vt = vt[:2]
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])[:, None]
    xy = xc @ vt.T  # (N, ≤2)
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))


def _labels_matrix(genres: pa.ChunkedArray | pa.Array, vocab: list[str]) -> np.ndarray:
    """list<string> labels of N rows → (N, G) bool over ``vocab`` (vectorised)."""
    genres = genres.combine_chunks() if isinstance(genres, pa.ChunkedArray) else genres
    n = len(genres)
    lengths = pc.list_value_length(genres).fill_null(0).to_numpy(zero_copy_only=False)
    flat = pc.index_in(pc.list_flatten(genres), value_set=pa.array(vocab, pa.string()))
    col = flat.fill_null(-1).to_numpy(zero_copy_only=False)
    row = np.repeat(np.arange(n), lengths)
    out = np.zeros((n, len(vocab)), dtype=bool)
    known = col >= 0
    out[row[known], col[known]] = True
    return out


def _f32_matrix(col: pa.ChunkedArray | pa.Array, n: int) -> np.ndarray:
    """A list<float32> column of equal-length rows → (N, D) float32."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, -1) if n else np.zeros((0, 0), np.float32)


def sample_rows(n: int, k: int) -> np.ndarray:
    """Evenly spaced row indices, at most ``k`` of ``n`` (deterministic)."""
    return np.arange(n) if n <= k else np.linspace(0, n - 1, k).round().astype(np.int64)


# ------------------------------------------------------------------------------ the data
@dataclass
class ReportData:
    """What the report draws, read from a snapshot (or handed over by the pipeline).

    ``coarse`` / ``fine``: ``(trailer_ids, (N, D) float32)`` samples of the embeddings for
    the maps (``coarse`` None: not available, the page says why)."""

    name: str
    trailers: pa.Table  # the trailers table, :data:`_TRAILER_COLUMNS`
    scenes: pa.Table  # trailer_id, start_s, end_s
    subgenres: pa.Table
    neighbours: pa.Table
    vocab: list[str]
    metrics: dict[str, Any]
    thumbnails: dict[str, bytes | None] = field(default_factory=dict)
    fine: tuple[list[str], np.ndarray] | None = None
    coarse: tuple[list[str], np.ndarray] | None = None
    coarse_missing: str = "the snapshot publishes fine embeddings only"
    run_report: dict[str, Any] = field(default_factory=dict)


def resolve_snapshot(out: str | None, name: str | None) -> str:
    """URI of snapshot ``name`` under ``out`` (default: the one LATEST names, under
    ``.mmx/out``). Raises :class:`ReportError` when there is none or it is incomplete."""
    from mmx.config import DEFAULT_WORKDIR

    out = out or str((DEFAULT_WORKDIR / "out").resolve())
    if name is None:
        try:
            uri = storage.latest(out)
        except FileNotFoundError as err:
            raise ReportError(str(err)) from err
        if uri is None:
            raise ReportError(f"no snapshot under {out} (LATEST missing): run the job first")
        return uri
    uri = storage.snapshot_uri(out, name)
    if not storage.exists(storage.join(uri, storage.COMPLETE)):
        raise ReportError(f"{uri} is not a complete snapshot")
    return uri


def load_snapshot(uri: str, *, run_report: str | None = None,
                  map_ids: list[str] | None = None) -> ReportData:
    """Read what the report needs from the snapshot at ``uri`` (projected columns; the
    embeddings of at most :data:`MAX_MAP_POINTS` trailers: an even sample of the ok ones, or
    those of ``map_ids``)."""
    def table(name: str, columns: list[str] | None = None) -> pa.Table:
        path = storage.join(uri, name)
        if not storage.exists(path):
            raise ReportError(f"{uri} has no {name}")
        return storage.read_table(path, columns)

    trailers = table("trailers.parquet", _TRAILER_COLUMNS)
    metrics = storage.read_json(storage.join(uri, "metrics.json"))
    genres_uri = storage.join(uri, "genres.json")
    vocab = list(storage.read_json(genres_uri)) if storage.exists(genres_uri) else []
    ok = pc.equal(trailers["status"], "ok").to_numpy(zero_copy_only=False)
    if map_ids is not None:
        ok &= pc.is_in(trailers["trailer_id"], value_set=pa.array(map_ids, pa.string())
                       ).to_numpy(zero_copy_only=False)
    rows = np.nonzero(ok)[0]
    rows = rows[sample_rows(len(rows), MAX_MAP_POINTS)]
    fine = None
    if len(rows):
        emb = _read_rows(storage.join(uri, "trailers.parquet"), ["trailer_id", "embedding"],
                         trailers["trailer_id"].take(pa.array(rows)))
        emb = emb.filter(pc.is_valid(emb["embedding"]))
        fine = (emb["trailer_id"].to_pylist(), _f32_matrix(emb["embedding"], emb.num_rows))
    thumbs: dict[str, bytes | None] = {}
    if storage.exists(storage.join(uri, THUMBNAILS_FILE)):
        t = table(THUMBNAILS_FILE)
        thumbs = dict(zip(t["trailer_id"].to_pylist(), t["jpeg"].to_pylist(), strict=True))
    report = {}
    if run_report and storage.exists(run_report):
        report = storage.read_json(run_report)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return ReportData(
        name=name, trailers=trailers,
        scenes=table("scenes.parquet", ["trailer_id", "start_s", "end_s"]),
        subgenres=table("subgenres.parquet", ["subgenre", "size", "top_genres",
                                              "top_concepts", "exemplars"]),
        neighbours=table("neighbours.parquet"), vocab=vocab, metrics=metrics,
        thumbnails=thumbs, fine=fine,
        coarse_missing=("the snapshot publishes the fine embedding only; the coarse map is "
                        "drawn when the job writes the report at publish time"),
        run_report=report,
    )


def _read_rows(uri: str, columns: list[str], ids: pa.ChunkedArray | pa.Array) -> pa.Table:
    """The rows of the Parquet ``uri`` whose trailer_id is in ``ids`` (streamed with the filter:
    only those rows' vectors are held, whatever the table's size)."""
    import pyarrow.dataset as pads

    fs, path = storage.filesystem(uri)
    data = pads.dataset(path, filesystem=fs, format="parquet")
    return data.to_table(columns=columns,
                         filter=pc.is_in(pc.field("trailer_id"), value_set=ids))


# ------------------------------------------------------------------------------ SVG
_W, _H, _PAD = 400, 260, 40


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _axes(xlabel: str, ylabel: str, x0: float, x1: float, y0: float, y1: float,
          xticks: bool = True) -> list[str]:
    """Frame, ticks and labels of a chart whose data box is [x0, x1] × [y0, y1] (``xticks``
    False: the caller labels the x axis)."""
    out = [(f'<rect x="{_PAD}" y="10" width="{_W - _PAD - 10}" height="{_H - _PAD - 10}" '
            'fill="#fff" stroke="#999"/>')]
    for i in range(5):
        f = i / 4
        x = _PAD + f * (_W - _PAD - 10)
        y = _H - _PAD - f * (_H - _PAD - 20)
        if xticks:
            out.append(f'<text x="{x:.1f}" y="{_H - _PAD + 14}" class="tick" '
                       f'text-anchor="middle">{x0 + f * (x1 - x0):.3g}</text>')
        out.append(f'<text x="{_PAD - 4}" y="{y + 3:.1f}" class="tick" '
                   f'text-anchor="end">{y0 + f * (y1 - y0):.3g}</text>')
        out.append(f'<line x1="{_PAD}" x2="{_W - 10}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#eee"/>')
    out.append(f'<text x="{(_W + _PAD) / 2}" y="{_H - 6}" class="axis" '
               f'text-anchor="middle">{_e(xlabel)}</text>')
    out.append(f'<text x="12" y="{_H / 2}" class="axis" text-anchor="middle" '
               f'transform="rotate(-90 12 {_H / 2})">{_e(ylabel)}</text>')
    return out


def _to_px(x: np.ndarray, y: np.ndarray, box: tuple[float, float, float, float]
           ) -> tuple[np.ndarray, np.ndarray]:
    x0, x1, y0, y1 = box
    px = _PAD + (x - x0) / ((x1 - x0) or 1.0) * (_W - _PAD - 10)
    py = _H - _PAD - (y - y0) / ((y1 - y0) or 1.0) * (_H - _PAD - 20)
    return px, py


def svg_lines(series: list[tuple[str, np.ndarray, np.ndarray, str]], xlabel: str, ylabel: str,
              box: tuple[float, float, float, float] | None = None, title: str = "") -> str:
    """A line chart: ``series`` of (name, x, y, colour); ``box`` (x0, x1, y0, y1) defaults
    to the data's range."""
    xs = np.concatenate([s[1] for s in series]) if series else np.zeros(1)
    ys = np.concatenate([s[2] for s in series]) if series else np.zeros(1)
    box = box or (float(xs.min()), float(xs.max()), float(np.nanmin(ys)), float(np.nanmax(ys)))
    parts = _axes(xlabel, ylabel, *box)
    for name, x, y, colour in series:
        px, py = _to_px(np.asarray(x, float), np.asarray(y, float), box)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True)
                       if math.isfinite(b))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.6"><title>{_e(name)}</title></polyline>')
        if len(px) <= 60:
            parts.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.2" fill="{colour}"/>'
                         for a, b in zip(px, py, strict=True) if math.isfinite(b))
    return _svg(parts, title)


def svg_scatter(xy: np.ndarray, colours: list[str], names: list[str], title: str) -> str:
    """A scatter plot of ``xy (N, 2)``; each point's tooltip is its name."""
    if len(xy) == 0:
        return _svg(_axes("PC 1", "PC 2", 0, 1, 0, 1), title)
    # the box holds the central 96% (widened a little): a few outliers would squash the rest;
    # points beyond it sit on its edge
    lo, hi = np.percentile(xy, 2, axis=0), np.percentile(xy, 98, axis=0)
    pad = np.maximum((hi - lo) * 0.08, 1e-9)
    lo, hi = lo - pad, hi + pad
    xy = np.clip(xy, lo, hi)
    box = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    parts = _axes("PC 1", "PC 2", *box)
    px, py = _to_px(xy[:, 0], xy[:, 1], box)
    parts.extend(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}" fill-opacity="0.8">'
                 f'<title>{_e(n)}</title></circle>'
                 for a, b, c, n in zip(px, py, colours, names, strict=True))
    return _svg(parts, title)


def svg_bars(labels: list[str], values: list[float], xlabel: str, ylabel: str,
             title: str = "", colour: str = "#4c78a8",
             x_range: tuple[float, float] | None = None) -> str:
    """A vertical bar chart, one bar per label: the labels under the bars, or numeric ticks
    over ``x_range`` (a histogram's edges)."""
    n = max(1, len(labels))
    top = max([float(v) for v in values] + [1e-9])
    parts = _axes(xlabel, ylabel, *(x_range or (0, n)), 0, top, xticks=x_range is not None)
    width = (_W - _PAD - 10) / n
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        h = float(v) / top * (_H - _PAD - 20)
        x = _PAD + i * width
        parts.append(f'<rect x="{x + 1:.1f}" y="{_H - _PAD - h:.1f}" width="{max(width - 2, 1):.1f}"'
                     f' height="{h:.1f}" fill="{colour}"><title>{_e(label)}: {v:g}</title>'
                     '</rect>')
        if x_range is None:
            parts.append(f'<text x="{x + width / 2:.1f}" y="{_H - _PAD + 14}" class="tick" '
                         f'text-anchor="middle">{_e(label)}</text>')
            parts.append(f'<text x="{x + width / 2:.1f}" y="{_H - _PAD - h - 3:.1f}" '
                         f'class="tick" text-anchor="middle">{v:g}</text>')
    return _svg(parts, title)


def _svg(parts: list[str], title: str) -> str:
    head = f'<figure class="chart"><svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" ' \
           'xmlns="http://www.w3.org/2000/svg" role="img">'
    caption = f"<figcaption>{_e(title)}</figcaption>" if title else ""
    return head + "".join(parts) + "</svg>" + caption + "</figure>"


# ------------------------------------------------------------------------------ sections
def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _num(v: Any, fmt: str = "{:.3f}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v)


def _test_labels(d: ReportData) -> tuple[np.ndarray, np.ndarray]:
    """(N, G) labels and scores of the test split's ok trailers with scores."""
    t = d.trailers
    keep = pc.and_(pc.equal(t["split"], "test"), pc.is_valid(t["genre_scores"]))
    t = t.filter(pc.fill_null(keep, False))
    if not d.vocab or t.num_rows == 0:
        return np.zeros((0, len(d.vocab)), bool), np.zeros((0, len(d.vocab)), np.float32)
    return _labels_matrix(t["genres"], d.vocab), _f32_matrix(t["genre_scores"], t.num_rows)


def section_genres(d: ReportData) -> str:
    test = d.metrics.get("test") or {}
    base = d.metrics.get("baseline") or {}
    ap, prior = test.get("ap_per_genre") or {}, base.get("ap_per_genre") or {}
    if not ap:
        why = (d.metrics.get("genre_model") or {}).get("reason", "no test metrics recorded")
        return f'<p class="note">No genre model in this snapshot: {_e(why)}.</p>'
    y, _ = _test_labels(d)
    positives = dict(zip(d.vocab, y.sum(axis=0).tolist(), strict=True)) if len(y) else {}
    rows = [[_e(g), _num(v), _num(prior.get(g)), _num(v - prior[g], "{:+.3f}")
             if g in prior else "–", positives.get(g, "–")] for g, v in ap.items()]
    for key, label in (("au_prc_micro", "micro"), ("au_prc_macro", "macro"),
                       ("au_prc_weighted", "weighted"), ("au_prc_samples", "samples")):
        if key in test:
            rows.append([f"<b>AU(PRC) {label}</b>", f"<b>{_num(test[key])}</b>",
                         _num(base.get(key)), "", test.get("n", "")])
    note = (f"Test split, n = {test.get('n', '?')} trailers; the prior scores every trailer "
            "with each genre's training frequency.")
    return (f'<p class="note">{_e(note)}</p>'
            + _table(["genre", "AP (model)", "AP (prior)", "Δ", "n positives"], rows, "num")
            + _title_fusion_note(d.metrics.get("title_fusion") or {}))


def _title_fusion_note(fusion: dict[str, Any]) -> str:
    """One line on the late-fused title experts' weights (metrics.json → title_fusion)."""
    weights = fusion.get("weights") or {}
    if not weights:
        return ""
    names = sorted(weights, key=lambda n: (n != "trailer", n))  # the trailer first
    parts = ", ".join(f"{name} {weights[name]:.2f}" for name in names)
    return (f'<p class="note">Scores fuse the trailer with its title experts, weights {_e(parts)}'
            f' ({_e(fusion.get("reason", ""))}).</p>')


def section_pr_curves(d: ReportData) -> str:
    y, s = _test_labels(d)
    charts = []
    for g, name in enumerate(d.vocab):
        if len(y) == 0 or not y[:, g].any():
            continue
        p, r, _ = precision_recall_curve(y[:, g], s[:, g])
        prior = y[:, g].mean()
        charts.append(svg_lines(
            [("model", r, p, PALETTE[0]), ("prior", np.array([0.0, 1.0]),
                                            np.array([prior, prior]), "#bbb")],
            "recall", "precision", (0.0, 1.0, 0.0, 1.0),
            f"{name}: AP {average_precision(p, r):.3f} (n+ = {int(y[:, g].sum())})"))
    if not charts:
        return '<p class="note">No test trailer with genre scores and a positive label.</p>'
    return ('<p class="note">Test split; grey: the positive rate (a random ranking).</p>'
            '<div class="grid small">' + "".join(charts) + "</div>")


def section_silhouette(d: ReportData) -> str:
    y = np.asarray([np.nan if v is None else v for v in d.metrics.get("silhouette") or []],
                   dtype=np.float64)
    x = np.nonzero(np.isfinite(y))[0]  # epochs with a value (nan: too few labelled trailers)
    if len(x) == 0:
        return '<p class="note">No silhouette recorded (no genre labels to score it).</p>'
    y = y[x]
    chart = svg_lines([("silhouette", x.astype(float), y, PALETTE[3])],
                      "contrastive epoch (0 = coarse model)", "silhouette (cosine)",
                      title="genre silhouette of the embedding")
    return ('<p class="note">It should fall while fine-tuning breaks the rigid genre clusters '
            f'up: {_num(y[0])} (coarse) → {_num(y[-1])} (fine).</p>' + chart)


def _primary(d: ReportData) -> dict[str, str]:
    t = d.trailers.filter(pc.greater(pc.fill_null(pc.list_value_length(d.trailers["genres"]),
                                                  0), 0))
    firsts = pc.list_element(t["genres"], 0).to_pylist()
    return dict(zip(t["trailer_id"].to_pylist(), firsts, strict=True))


def section_maps(d: ReportData) -> str:
    primary = _primary(d)
    order = sorted(set(primary.values()))
    colour = {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(order)}
    charts, notes = [], []
    for label, data, missing in (("coarse (genre model)", d.coarse, d.coarse_missing),
                                 ("fine (contrastive)", d.fine, "no embeddings")):
        if data is None or len(data[0]) == 0:
            notes.append(f"No {label.split()[0]} map: {missing}.")
            continue
        ids, x = data
        colours = [colour.get(primary.get(t, ""), "#999") for t in ids]
        names = [f"{t} ({primary.get(t, 'unlabelled')})" for t in ids]
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # cosine space
        charts.append(svg_scatter(pca_2d(unit), colours, names,
                                  f"{label}: {len(ids)} trailers"))
    legend = "".join(f'<span class="key"><i style="background:{colour[g]}"></i>{_e(g)}</span>'
                     for g in order) + '<span class="key"><i style="background:#999"></i>' \
                     'unlabelled</span>'
    return ("".join(f'<p class="note">{_e(n)}</p>' for n in notes)
            + '<p class="note">PCA of the unit-normalised vectors to two dimensions, coloured by '
            'primary (first) genre; the few points beyond the 2nd–98th percentiles sit on the '
            'frame.</p>'
            + f'<div class="grid">{"".join(charts)}</div><div class="legend">{legend}</div>')


def _thumb(d: ReportData, trailer_id: str) -> str:
    jpeg = d.thumbnails.get(trailer_id)
    if not jpeg:
        return f'<div class="thumb ph" title="{_e(trailer_id)}">no thumbnail</div>'
    b64 = base64.b64encode(jpeg).decode()
    return (f'<img class="thumb" alt="{_e(trailer_id)}" title="{_e(trailer_id)}" '
            f'src="data:image/jpeg;base64,{b64}">')


def section_subgenres(d: ReportData) -> str:
    if d.subgenres.num_rows == 0:
        return '<p class="note">No sub-genres.</p>'
    cards = []
    for r in d.subgenres.sort_by("subgenre").to_pylist():
        exemplars = (r["exemplars"] or [])[:4]
        cards.append(
            f'<div class="card"><h3>sub-genre {_e(r["subgenre"])} '
            f'<small>{_e(r["size"])} trailers</small></h3>'
            f'<div class="thumbs">{"".join(_figure(d, t) for t in exemplars)}</div>'
            f'<p><b>genres</b> {_e(", ".join(r["top_genres"] or []) or "–")}</p>'
            f'<p><b>concepts</b> {_e(", ".join((r["top_concepts"] or [])[:5]) or "–")}</p>'
            "</div>")
    return '<div class="cards">' + "".join(cards) + "</div>"


def _figure(d: ReportData, trailer_id: str, caption: str = "") -> str:
    return (f'<figure class="tf">{_thumb(d, trailer_id)}'
            f"<figcaption>{_e(caption or trailer_id)}</figcaption></figure>")


def section_neighbours(d: ReportData) -> str:
    nb = d.neighbours
    if nb.num_rows == 0:
        return '<p class="note">No neighbours.</p>'
    queries = sorted(set(nb["trailer_id"].to_pylist()))
    picks = [queries[i] for i in sample_rows(len(queries), N_NEIGHBOUR_EXAMPLES)]
    nb = nb.filter(pc.is_in(nb["trailer_id"], value_set=pa.array(picks, pa.string())))
    nb = nb.sort_by([("trailer_id", "ascending"), ("rank", "ascending")]).to_pylist()
    rows = []
    for q in picks:
        hits = [r for r in nb if r["trailer_id"] == q][:N_NEIGHBOURS_SHOWN]
        cells = "".join(_figure(d, h["neighbour_id"], f'{h["neighbour_id"]} · {h["score"]:.2f}')
                        for h in hits)
        rows.append(f'<div class="nrow">{_figure(d, q, q)}<span class="arrow">→</span>'
                    f"{cells}</div>")
    return "".join(rows)


def section_shots(d: ReportData) -> str:
    sc = d.scenes
    if sc.num_rows == 0:
        return '<p class="note">No shots.</p>'
    lengths = (sc["end_s"].to_numpy(zero_copy_only=False)
               - sc["start_s"].to_numpy(zero_copy_only=False))
    hi = float(np.quantile(lengths, 0.99)) or 1.0
    counts, edges = np.histogram(np.clip(lengths, 0, hi), bins=20, range=(0, hi))
    labels = [f"{a:.2f}–{b:.2f} s" for a, b in itertools.pairwise(edges)]
    chart = svg_bars(labels, counts.tolist(), "shot length (s; the longest 1% in the last bin)",
                     "shots", f"{sc.num_rows} kept shots, median {np.median(lengths):.2f} s",
                     x_range=(0.0, hi))
    return chart


def section_status(d: ReportData) -> str:
    t = d.trailers
    counts = Counter(t["status"].to_pylist())
    order = ["ok", "excluded", "failed"]
    chart = svg_bars(order, [counts.get(s, 0) for s in order], "status", "trailers",
                     f"{t.num_rows} input files")
    bad = t.filter(pc.not_equal(t["status"], "ok"))
    grouped = Counter((s, re.sub(r"\d+(?:\.\d+)?", "#", r or ""))
                      for s, r in zip(bad["status"].to_pylist(), bad["reason"].to_pylist(),
                                      strict=True))
    rows = [[_e(s), _e(r), n] for (s, r), n in grouped.most_common()]
    table = (_table(["status", "reason (numbers masked)", "trailers"], rows)
             if rows else '<p class="note">Every input ended ok.</p>')
    return chart + table


def section_timings(d: ReportData) -> str:
    timings = d.metrics.get("timings_s") or d.run_report.get("timings_s") or {}
    if not timings:
        return '<p class="note">No stage timings recorded.</p>'
    names = sorted(timings, key=lambda k: (STAGES.index(k) if k in STAGES else len(STAGES), k))
    values = [float(timings[k]) for k in names]
    chart = svg_bars(names, values, "stage", "seconds",
                     f"total {sum(values):.1f} s", colour="#f58518")
    rows = [[_e(k), f"{v:.1f}"] for k, v in zip(names, values, strict=True)]
    throughput = d.run_report.get("throughput_trailers_per_s")
    note = (f'<p class="note">Ingest throughput: {throughput} trailers/s.</p>'
            if throughput else "")
    return chart + _table(["stage", "seconds"], rows, "num") + note


_RENDER = {
    "genres": ("Genre AP (test split) beside the prior", section_genres),
    "pr-curves": ("Precision–recall per genre", section_pr_curves),
    "silhouette": ("Silhouette over contrastive epochs", section_silhouette),
    "maps": ("Coarse vs fine embedding", section_maps),
    "subgenres": ("Sub-genres", section_subgenres),
    "neighbours": ("Example neighbours", section_neighbours),
    "shots": ("Shot lengths", section_shots),
    "status": ("Status and failure reasons", section_status),
    "timings": ("Stage timings", section_timings),
}

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;
background:#f4f5f7;color:#222}
header{background:#1d2b3a;color:#fff;padding:16px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d3dd}nav a{color:#9cc9ff;margin-right:12px}
main{padding:8px 28px 40px}section{background:#fff;border-radius:6px;padding:8px 20px 16px;
margin:16px 0;box-shadow:0 1px 2px rgba(0,0,0,.08)}h2{font-size:17px;border-bottom:1px solid
#eee;padding-bottom:6px}.note{color:#555}table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
table.num td+td{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figure.chart{display:inline-block;
vertical-align:top;margin-right:16px}figure.chart figcaption{font-size:12px;text-align:center;
color:#333}.grid.small svg{width:280px;height:auto}.grid.small figure.chart{margin-right:0}
.tick{font-size:9px;fill:#666}
.axis{font-size:10px;fill:#333}.legend{margin-top:6px}.key{margin-right:12px;font-size:12px;
white-space:nowrap}.key i{display:inline-block;width:10px;height:10px;border-radius:5px;
margin-right:4px}.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;
border-radius:6px;padding:8px 12px;width:360px}.card h3{margin:4px 0;font-size:15px}
.card small{color:#777;font-weight:normal}.card p{margin:3px 0;font-size:12px}
.thumbs{display:flex;gap:6px;flex-wrap:wrap}.thumb{width:80px;height:45px;object-fit:cover;
border-radius:3px;display:block}.ph{background:#ddd;color:#777;font-size:10px;display:flex;
align-items:center;justify-content:center}figure.tf figcaption{font-size:10px;max-width:80px;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}.nrow{display:flex;gap:6px;
align-items:center;margin:6px 0}.arrow{font-size:20px;color:#888;margin:0 6px}
"""

# records script errors and broken images into <body data-…> (read by the acceptance test)
_SCRIPT = """
window.mmxErrors=[];
window.addEventListener('error',function(e){window.mmxErrors.push(String(e.message));},true);
(function(){var log=console.error;console.error=function(){
  window.mmxErrors.push(Array.prototype.join.call(arguments,' '));return log.apply(console,arguments);};})();
window.addEventListener('load',function(){
  var imgs=Array.prototype.slice.call(document.images);
  var broken=imgs.filter(function(i){return i.complete&&i.naturalWidth===0;}).length;
  document.body.setAttribute('data-images',imgs.length);
  document.body.setAttribute('data-broken',broken);
  document.body.setAttribute('data-errors',window.mmxErrors.length);
  document.body.setAttribute('data-loaded','1');
});
"""


def render(d: ReportData) -> str:
    """The whole page for ``d`` (a string of HTML; self-contained)."""
    sections = []
    for key in SECTIONS:
        title, fn = _RENDER[key]
        try:
            body = fn(d)
        except Exception as err:  # noqa: BLE001 - one bad section must not lose the page
            log.warning("report section %s failed: %s", key, err)
            body = f'<p class="note">This section could not be drawn: {_e(err)}</p>'
        sections.append(f'<section id="{key}"><h2>{_e(title)}</h2>{body}</section>')
    counts = Counter(d.trailers["status"].to_pylist())
    test = d.metrics.get("test") or {}
    headline = ", ".join(f"{k} {counts.get(k, 0)}" for k in ("ok", "excluded", "failed"))
    if "au_prc_weighted" in test:
        headline += f" · AU(PRC) weighted {test['au_prc_weighted']:.3f} (n = {test.get('n')})"
    nav = "".join(f'<a href="#{k}">{_e(_RENDER[k][0].split(" (")[0])}</a>' for k in SECTIONS)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>mmx report · {_e(d.name)}</title><style>{_CSS}</style>"
            f"<script>{_SCRIPT}</script></head><body>"
            f"<header><h1>mmx snapshot {_e(d.name)}</h1><p>{_e(headline)}</p>"
            f"<nav>{nav}</nav></header><main>{''.join(sections)}</main></body></html>")


def render_snapshot(uri: str, run_report: str | None = None) -> str:
    """The report page of the snapshot at ``uri``."""
    return render(load_snapshot(uri, run_report=run_report))


def write_snapshot_report(uri: str, coarse: tuple[list[str], np.ndarray] | None = None,
                          coarse_missing: str = "") -> bool:
    """Render the snapshot at ``uri`` (still being written: before ``_COMPLETE``) into its
    ``report.html``, with the ``coarse`` embedding sample the run still holds. A failure is
    logged and returns False: a report never fails a run."""
    try:
        if coarse is not None and len(coarse[0]):
            keep = sample_rows(len(coarse[0]), MAX_MAP_POINTS)
            coarse = ([coarse[0][i] for i in keep], np.asarray(coarse[1])[keep])
            d = load_snapshot(uri, map_ids=coarse[0])  # both maps draw the same trailers
            d.coarse = coarse
        else:
            d = load_snapshot(uri)
        if coarse is None and coarse_missing:
            d.coarse_missing = coarse_missing
        storage.write_text(storage.join(uri, REPORT_FILE), render(d))
        return True
    except Exception as err:  # noqa: BLE001
        log.warning("could not write %s into the snapshot (the run goes on): %s", REPORT_FILE,
                    err)
        return False
