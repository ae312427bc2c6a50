"""The synthetic archive: real H.264/AAC files, deterministic, labels in the contract's
format, generated once (idempotent)."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from mmx import archive, synth, synth_metadata
from mmx.metadata import read_metadata, read_poster
from mmx.synth import (
    GENRES,
    GENRES_20,
    generate_archive,
    generate_subgenre_archive,
    render_frames,
    write_trailer,
)


def _frames(path: str, n: int = 30) -> np.ndarray:
    with av.open(path) as c:
        out = [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0))]
    return np.stack(out)


def test_trailer_is_real_video_with_audio(tmp_path: Path) -> None:
    t = write_trailer(str(tmp_path / "a.mp4"), ("Horror",), seed=3)
    with av.open(t.path) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and c.streams.audio
        assert c.streams.audio[0].codec_context.name == "aac"
        n = sum(1 for _ in c.decode(video=0))
    assert n == t.n_frames and t.fps == 24
    assert list(t.cut_frames) == sorted(t.cut_frames) and t.cut_frames[-1] < t.n_frames
    silent = write_trailer(str(tmp_path / "b.mp4"), ("Drama",), seed=3, with_audio=False)
    with av.open(silent.path) as c:
        assert not c.streams.audio and not silent.has_audio


def test_deterministic(tmp_path: Path) -> None:
    a = write_trailer(str(tmp_path / "a.mp4"), ("Action",), seed=5)
    b = write_trailer(str(tmp_path / "b.mp4"), ("Action",), seed=5)
    c = write_trailer(str(tmp_path / "c.mp4"), ("Action",), seed=6)
    assert a.cut_frames == b.cut_frames
    np.testing.assert_array_equal(_frames(a.path), _frames(b.path))
    assert a.cut_frames != c.cut_frames or not np.array_equal(_frames(a.path), _frames(c.path))


def test_archive_labels_and_idempotence(tmp_path: Path) -> None:
    trailers = generate_archive(str(tmp_path), n=3, seed=1)
    rows = list(csv.DictReader((tmp_path / "labels.csv").open()))
    assert set(rows[0].keys()) == {"trailer_id", "genres"}
    for r in rows:
        assert all(g in GENRES for g in r["genres"].split("|") if g)
    assert any(r["genres"] == "" for r in rows)  # the unlabelled extra
    ids = {t.trailer_id for t in trailers}
    assert {f"trailer_000{i}" for i in range(3)} <= ids
    mtime = (tmp_path / "videos" / "trailer_0000.mp4").stat().st_mtime_ns
    again = generate_archive(str(tmp_path), n=3, seed=1)
    assert [t.trailer_id for t in again] == [t.trailer_id for t in trailers]
    assert (tmp_path / "videos" / "trailer_0000.mp4").stat().st_mtime_ns == mtime
    # the demo archive takes a sidecar too (genres only: it has no sub-genres)
    assert synth.write_metadata(tmp_path) == len(read_metadata(str(tmp_path)))


def test_default_output_is_pinned() -> None:
    """The demo archive and the tests depend on the default generator: its frames, audio and
    genre draws must not move when the sub-genre archive's cues change (an intended change
    bumps SYNTH_VERSION and this digest)."""
    frames, info = render_frames(("Action", "Romance"), seed=11, n_shots=10, width=96,
                                 height=54)
    digest = hashlib.sha256(frames.tobytes())
    video_ss, audio_ss = np.random.SeedSequence(11).spawn(2)
    plan = synth._plan_trailer(np.random.default_rng(video_ss), ("Action", "Romance"), 10, 96,
                               54, 24)
    audio = synth._render_audio(np.random.default_rng(audio_ss), plan, 24,
                                synth.AUDIO_SAMPLE_RATE)
    digest.update(audio.tobytes())
    genres = [synth._sample_genres(np.random.default_rng(synth._child_seed(0, 0, i)))
              for i in range(8)]
    digest.update(repr(genres).encode())
    assert info["cut_frames"] == (21, 52, 99, 159, 182, 225, 284)
    assert digest.hexdigest() == (
        "ec693030d7e64fba1052ad51e6b787e886e055781ac4526242e637744b2fffd9")
    assert synth.SYNTH_VERSION == 1


def test_twenty_genres_are_derived_and_confusable() -> None:
    assert len(GENRES_20) == 20 and GENRES_20[:6] == GENRES
    for g in GENRES_20:
        assert g in synth._PROFILES and g in synth._AUDIO_TRACKS
    assert {"Horror", "Action"} <= set(synth._related("Thriller"))
    # Thriller blends Horror's and Action's layouts; each derived track is a real signal.
    layouts = {name for name, _ in synth._PROFILES["Thriller"].layouts}
    assert {"vignette", "split"} <= layouts
    rng = np.random.default_rng(0)
    y = synth._AUDIO_TRACKS["Western"](rng, 8000, synth.AUDIO_SAMPLE_RATE)
    assert y.shape == (8000,) and np.isfinite(y).all() and y.std() > 0
    with pytest.raises(ValueError, match="unknown genres"):
        write_trailer("unused.mp4", ("Thriller",), seed=0)  # not in the default vocabulary


def test_observed_labels_are_noisy_but_valid() -> None:
    rng = np.random.default_rng(0)
    truth = ("Drama", "Horror", "Thriller")
    seen = [synth._observed_genres(rng, truth, 0.3, GENRES_20) for _ in range(2000)]
    changed = [s for s in seen if s != truth]
    assert 0.25 < len(changed) / len(seen) < 0.35
    for s in changed:
        assert s and list(s) == [g for g in GENRES_20 if g in s]  # canonical, never empty
        assert len(set(s) ^ set(truth)) <= 2  # one mistake: dropped, added or swapped


def test_subgenre_archive(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"n": 8, "seed": 3, "n_combos": 2, "styles_per_combo": 2,
                              "n_styles": 3, "unlabelled_share": 0.25, "label_noise": 0.5,
                              "width": 128, "height": 72}
    trailers = generate_subgenre_archive(tmp_path / "a", workers=1, **kwargs)
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert truth["genres"] == list(GENRES_20)
    subs = truth["subgenres"]
    assert len(subs) == 4 and sum(s["size"] for s in subs) == 8
    assert all(s["size"] >= 2 for s in subs)  # min_subgenre, n allows it
    assert len({s["style"] for s in subs}) >= 2  # each combination has distinct styles
    for s in subs:  # its own variant of its style, its own lean on its genres
        assert s["content"]["index"] == s["style"]
        assert len(s["lean"]["weights"]) == len(s["genres"]) and s["lean"]["pace"] > 0
        assert abs(sum(s["lean"]["weights"]) - 1) < 0.01
    assert {len(truth["styles"])} == {3}
    rows = {r["trailer_id"]: r["genres"]
            for r in csv.DictReader((tmp_path / "a" / "labels.csv").open())}
    assert set(rows) == set(truth["trailers"]) | {"teaser_0000", "broken_0000"}
    for tid, rec in truth["trailers"].items():
        sub = subs[rec["subgenre"]]
        assert rec["true_genres"] == sub["genres"] and rec["style"] == sub["style"]
        assert 1 <= len(rec["true_genres"]) <= 4
        given = [g for g in rows[tid].split("|") if g]
        assert given == rec["genres"] and given == [g for g in GENRES_20 if g in given]
    assert [t.trailer_id for t in trailers] == sorted(truth["trailers"])
    counts = np.bincount([r["subgenre"] for r in truth["trailers"].values()], minlength=4)
    assert counts.tolist() == [s["size"] for s in subs]

    # Deterministic, whatever the number of encoding processes; reused when current.
    generate_subgenre_archive(tmp_path / "b", workers=2, **kwargs)
    for name in ("labels.csv", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for t in trailers:
        a = (tmp_path / "a" / "videos" / f"{t.trailer_id}.mp4").read_bytes()
        assert a == (tmp_path / "b" / "videos" / f"{t.trailer_id}.mp4").read_bytes()
    mtime = (tmp_path / "a" / "truth.json").stat().st_mtime_ns
    generate_subgenre_archive(tmp_path / "a", workers=1, **kwargs)
    assert (tmp_path / "a" / "truth.json").stat().st_mtime_ns == mtime
    assert not (tmp_path / "a" / "metadata.csv").exists()  # opt-in

    # plan_subgenre_archive draws the same truth without rendering a frame
    plan = synth.plan_subgenre_archive(**{k: v for k, v in kwargs.items()
                                          if k not in ("width", "height")})
    keys = ("subgenre", "true_genres", "style")
    assert {t: {k: r[k] for k in keys} for t, r in truth["trailers"].items()} == {
        t: {k: r[k] for k in keys} for t, r in plan.rows.items()}
    specs = synth.metadata_specs(truth)  # the styles re-drawn from the recorded parameters
    assert [s.content for s in specs] == [plan.contents[int(r["subgenre"])]
                                          for r in plan.rows.values()]

    # The metadata sidecar, on the existing archive: truth and labels untouched, valid for
    # mmx.metadata, no poster taken for a trailer, the same with metadata=True from scratch.
    before = {n: (tmp_path / "a" / n).read_bytes() for n in ("labels.csv", "truth.json")}
    n_titles = synth.write_metadata(tmp_path / "a")
    assert before == {n: (tmp_path / "a" / n).read_bytes() for n in before}
    inputs = archive.list_inputs(str(tmp_path / "a"))
    assert {f.trailer_id for f in inputs} == set(rows)
    meta = read_metadata(str(tmp_path / "a"), ids=[f.trailer_id for f in inputs])
    assert meta is not None and len(meta) == n_titles and not meta.ignored
    for row in meta.table.to_pylist():
        if row["poster"]:
            img = cv2.imdecode(np.frombuffer(read_poster(str(tmp_path / "a"), row["poster"]),
                                             np.uint8), cv2.IMREAD_COLOR)
            assert img.shape == (240, 160, 3)
    posters = sorted(p.name for p in (tmp_path / "a" / "posters").iterdir())
    assert posters == sorted(Path(p).name for p in meta.table["poster"].to_pylist() if p)
    mtime = (tmp_path / "a" / "metadata.csv").stat().st_mtime_ns
    synth.write_metadata(tmp_path / "a")  # deterministic: nothing rewritten
    assert (tmp_path / "a" / "metadata.csv").stat().st_mtime_ns == mtime
    generate_subgenre_archive(tmp_path / "b", workers=1, metadata=True, **kwargs)  # reused
    for name in ("metadata.csv", "labels.csv", "truth.json", *(f"posters/{p}" for p in posters)):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def _plan_titles(n: int, seed: int) -> tuple[synth.SubgenrePlan, list[Any]]:
    """A sub-genre archive's plan and its titles' metadata rows, no video rendered."""
    plan = synth.plan_subgenre_archive(n, seed=seed)
    specs = [synth_metadata.TitleSpec(tid, tuple(r["true_genres"]),
                                      plan.contents[r["subgenre"]])
             for tid, r in plan.rows.items()]
    rows = [synth_metadata.draw_title(s, plan.vocab, seed, synth_metadata.MetadataCues())[0]
            for s in specs]
    return plan, rows


def test_synthetic_metadata_is_noisy_and_partial() -> None:
    plan, rows = _plan_titles(300, seed=1)
    present = [r for r in rows if r is not None]
    assert 0.04 < 1 - len(present) / len(rows) < 0.18  # titles absent from the sidecar
    for field, share in (("plot", 0.15), ("poster", 0.2), ("year", 0.15),
                         ("runtime_min", 0.1)):
        missing = sum(r[field] is None for r in present) / len(present)
        assert share / 2 < missing < share * 1.6, field
    assert {tuple(r) for r in present} == {synth_metadata.COLUMNS}  # no truth column
    names = {g.lower() for g in plan.vocab}
    for r in present:
        words = set(re.findall(r"[a-z-]+", f"{r['title']} {r['plot'] or ''}".lower()))
        assert not words & names, r  # a genre is never named
        if r["plot"]:
            assert 2 <= r["plot"].count(".") <= 4
        assert r["year"] is None or 1920 <= r["year"] <= 2025
    # years and runtimes depend on the genres but overlap
    cues = synth_metadata.MetadataCues(absent=0, no_year=0, no_runtime=0)
    facts = {g: np.array([[r["year"], r["runtime_min"]] for r in (
        synth_metadata.draw_title(synth_metadata.TitleSpec(f"t{i}", (g,)), plan.vocab, 0,
                                  cues)[0] for i in range(60))]) for g in ("Western", "Sci-Fi",
                                                                            "History")}
    assert facts["Sci-Fi"][:, 0].mean() - facts["Western"][:, 0].mean() > 25
    assert facts["Sci-Fi"][:, 0].min() < facts["Western"][:, 0].max()
    assert facts["History"][:, 1].mean() - facts["Sci-Fi"][:, 1].mean() > 10


def test_plots_carry_genre_signal_but_no_giveaway() -> None:
    """TF-IDF + logistic regression on ~100 synthetic plots (cross-validated) predicts the true
    genres clearly above the label prior, and far from perfectly (AU(PRC) micro)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.multiclass import OneVsRestClassifier

    plan, rows = _plan_titles(100, seed=0)
    titled = [(tid, r) for tid, r in zip(plan.rows, rows, strict=True) if r and r["plot"]]
    y = np.array([[g in plan.rows[tid]["true_genres"] for g in plan.vocab]
                  for tid, _ in titled])  # (N, G)
    y = y[:, y.sum(0) >= 2].astype(int)  # genres with at least two plots
    x = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(
        [r["plot"] for _, r in titled])
    scores = cross_val_predict(OneVsRestClassifier(LogisticRegression(C=10, max_iter=1000)),
                               x, y, cv=KFold(5, shuffle=True, random_state=0),
                               method="predict_proba")
    ap = average_precision_score(y, scores, average="micro")
    prior = average_precision_score(y, np.tile(y.mean(0), (len(y), 1)), average="micro")
    assert len(titled) > 70
    assert ap > prior + 0.1, (ap, prior)
    assert ap < 0.85, ap


def test_posters_follow_the_style_with_noise() -> None:
    """A poster's nearest poster (colour histogram) often shares its content style, well above
    chance, but far from always (off-genre colours, no setting shown, noise)."""
    plan = synth.plan_subgenre_archive(120, seed=0)
    looks = synth.genre_looks(plan.vocab)
    cues = synth_metadata.MetadataCues(absent=0, no_poster=0)
    feats, styles = [], []
    for tid, r in plan.rows.items():
        spec = synth_metadata.TitleSpec(tid, tuple(r["true_genres"]),
                                        plan.contents[r["subgenre"]])
        row, img = synth_metadata.draw_title(spec, plan.vocab, 0, cues, looks)
        assert row is not None and img is not None and img.shape == (240, 160, 3)
        hsv = cv2.cvtColor(cv2.resize(img, (40, 60)), cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 3, 3], [0, 180, 0, 256, 0, 256])
        feats.append(np.sqrt(hist.ravel() / hist.sum()))
        styles.append(r["style"])
    x = np.array(feats)  # (N, 72) Hellinger-embedded histograms
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -1)
    style = np.array(styles)
    same = (style[sim.argmax(1)] == style).mean()
    chance = np.mean([(style == s).sum() - 1 for s in style]) / (len(style) - 1)
    assert same > chance + 0.15 and same < 0.8, (same, chance)
