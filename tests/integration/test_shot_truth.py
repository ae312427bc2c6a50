"""Shot detection on the synthetic archive, decoding with the same reader and detector
settings as the pipeline: the default detector recovers the true hard cuts (F1 ≥ 0.95, ±2
frames); TransNetV2 (the selectable learned detector) also finds the dissolves within their
span, which PySceneDetect's content-based detectors, built for hard cuts, mostly miss."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mmx.config import build_config
from mmx.shots import ShotDetector
from mmx.video.reader import iter_frames, probe

TOL = 2  # frames


def _f1(found: list[int], truth: list[int], dissolves: list[list[int]], tol: int = TOL) -> tuple:
    # cuts inside a dissolve's span are not hard cuts: neither counted nor penalised
    found = [c for c in found if not any(a - tol <= c <= b + tol for a, b in dissolves)]
    tp, unmatched = 0, list(truth)
    for c in found:
        hit = next((t for t in unmatched if abs(t - c) <= tol), None)
        if hit is not None:
            unmatched.remove(hit)
            tp += 1
    return tp, len(found) - tp, len(unmatched)


def _detect(synth_archive: Path, detector: str, n: int) -> dict[str, tuple[dict, list[int]]]:
    """Truth and found cuts of the first ``n`` trailers of the archive."""
    truth = json.loads((synth_archive / "truth.json").read_text())["trailers"]
    cfg = build_config("demo")
    shots_cfg = dataclasses.replace(cfg.shots, detector=detector)
    out = {}
    for tid in sorted(truth)[:n]:
        t = truth[tid]
        path = str(synth_archive / t["path"])
        det = ShotDetector(shots_cfg, probe(path).fps)
        for first, frames in iter_frames(
            path, width=cfg.video.width, height=cfg.video.height,
            chunk_frames=cfg.video.chunk_frames, backend=cfg.video.backend,
        ):
            det.push(first, frames)
        out[tid] = (t, [start for start, _ in det.finish()[1:]])
    return out


def _dissolves_found(found: dict[str, tuple[dict, list[int]]]) -> tuple[int, int]:
    hits = total = 0
    for t, cuts in found.values():
        for a, b in t["dissolves"]:
            total += 1
            hits += any(a - TOL <= c <= b + TOL for c in cuts)
    return hits, total


def test_hard_cuts_recovered(synth_archive: Path) -> None:
    tp = fp = fn = 0
    found = _detect(synth_archive, "adaptive", 8)
    for t, cuts in found.values():
        a, b, c = _f1(cuts, t["cut_frames"], t["dissolves"])
        tp, fp, fn = tp + a, fp + b, fn + c
    f1 = 2 * tp / (2 * tp + fp + fn)
    hits, total = _dissolves_found(found)
    print(f"adaptive: hard cuts tp={tp} fp={fp} fn={fn} F1={f1:.3f}; dissolves {hits}/{total}")
    assert f1 >= 0.95


def test_transnetv2_finds_dissolves_within_their_span(synth_archive: Path) -> None:
    found = _detect(synth_archive, "transnetv2", 4)  # ~100 frames/s on CPU: 4 trailers
    hits, total = _dissolves_found(found)
    tp = fp = fn = 0
    for t, cuts in found.values():
        a, b, c = _f1(cuts, t["cut_frames"], t["dissolves"])
        tp, fp, fn = tp + a, fp + b, fn + c
    print(f"transnetv2: dissolves {hits}/{total}; hard cuts tp={tp} fp={fp} fn={fn}")
    assert total >= 5
    assert hits / total >= 0.9
    assert 2 * tp / (2 * tp + fp + fn) >= 0.95


def test_hybrid_finds_cuts_and_dissolves(synth_archive: Path) -> None:
    """The default detector (``hybrid``) on mmx.synth's archive, which it was not tuned on
    (its thresholds come from mmx.synth_shots): hard cuts as the adaptive detector finds them,
    and most dissolves, each as one boundary inside its span.

    Measured on the first 8 trailers (demo profile): dissolves 15/23 (adaptive 2/23), hard
    cuts 118/118 with 3 false boundaries. mmx.synth's dissolves are short (6–10 frames) between
    shots with fast-moving shapes, so the middle frame of an 8-frame window is further from the
    mean of its ends than in a pure cross-fade; relaxing ``gradual_linearity`` to 0.25 finds
    18/23 here but makes 12 false boundaries (benchmarks/shots.py: ``hybrid_lin0.25``).
    """
    found = _detect(synth_archive, "hybrid", 8)
    hits, total = _dissolves_found(found)
    tp = fp = fn = 0
    for t, cuts in found.values():
        a, b, c = _f1(cuts, t["cut_frames"], t["dissolves"])
        tp, fp, fn = tp + a, fp + b, fn + c
    extra = sum(max(0, sum(a - TOL <= c <= b + TOL for c in cuts) - 1)
                for t, cuts in found.values() for a, b in t["dissolves"])
    print(f"hybrid: dissolves {hits}/{total}; hard cuts tp={tp} fp={fp} fn={fn}")
    assert total >= 5 and hits / total >= 0.5 and extra == 0
    assert 2 * tp / (2 * tp + fp + fn) >= 0.95
