"""Shot detection on the synthetic archive recovers the true hard cuts (F1 ≥ 0.95, ±2
frames), decoding with the same reader and detector settings as the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

from mmx.config import build_config
from mmx.shots import ShotDetector
from mmx.video.reader import iter_frames, probe


def _f1(found: list[int], truth: list[int], dissolves: list[list[int]], tol: int = 2) -> tuple:
    # cuts inside a dissolve's span are not hard cuts: neither counted nor penalised
    found = [c for c in found if not any(a - tol <= c <= b + tol for a, b in dissolves)]
    unmatched = list(truth)
    tp = 0
    for c in found:
        hit = next((t for t in unmatched if abs(t - c) <= tol), None)
        if hit is not None:
            unmatched.remove(hit)
            tp += 1
    return tp, len(found) - tp, len(unmatched)


def test_hard_cuts_recovered(synth_archive: Path) -> None:
    truth = json.loads((synth_archive / "truth.json").read_text())["trailers"]
    cfg = build_config("demo")
    tp = fp = fn = 0
    for tid in sorted(truth)[:8]:
        t = truth[tid]
        path = str(synth_archive / t["path"])
        det = ShotDetector(cfg.shots, probe(path).fps)
        for first, frames in iter_frames(
            path, width=cfg.video.width, height=cfg.video.height,
            chunk_frames=cfg.video.chunk_frames, backend=cfg.video.backend,
        ):
            det.push(first, frames)
        shots = det.finish()
        found = [start for start, _ in shots[1:]]
        a, b, c = _f1(found, t["cut_frames"], t["dissolves"])
        tp, fp, fn = tp + a, fp + b, fn + c
    f1 = 2 * tp / (2 * tp + fp + fn)
    print(f"hard cuts: tp={tp} fp={fp} fn={fn} F1={f1:.3f}")
    assert f1 >= 0.95
