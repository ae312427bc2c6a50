"""The hard shot-test generator: truth consistent with the frames, archive reuse, scoring."""

from __future__ import annotations

import numpy as np

from mmx.synth_shots import (
    ShotClip,
    Transition,
    Trap,
    generate_shot_archive,
    render_shot_clip,
    score_boundaries,
    summarise_scores,
)
from mmx.video import iter_frames


def test_truth_is_consistent():
    kinds = ["dissolve", "fade", "same_set_cut", "cut"]
    frames, transitions, traps = render_shot_clip(5, width=128, height=72, kinds=kinds,
                                                  min_len=30, max_len=40, p_flash=1.0,
                                                  p_whip=1.0)
    assert [t.kind for t in transitions] == kinds
    ends = [0]
    for t in transitions:
        assert t.start >= ends[-1] + 10  # a shot of at least min_len frames between
        ends.append(t.end)
        if t.kind == "dissolve":
            assert 8 <= t.end - t.start <= 12
        elif t.kind == "fade":
            assert 9 <= t.end - t.start <= 24
            dark = [f.mean() for f in frames[t.start : t.end]]
            assert min(dark) < 6  # through black
        else:
            assert t.start == t.end
    for trap in traps:  # traps stay clear of every transition
        assert not any(t.start - 3 < trap.end and trap.start < t.end + 3 for t in transitions)
    flashes = [t for t in traps if t.kind == "flash"]
    for f in flashes:
        assert frames[f.start].mean() > frames[f.start - 2].mean() + 30
    assert all(f.dtype == np.uint8 and f.shape == (72, 128, 3) for f in frames)


def test_archive_is_written_once(tmp_path):
    clips = generate_shot_archive(tmp_path, 2, seed=7, n_shots=4, width=128, height=72)
    assert [c.path.name for c in clips] == ["shots_000.mp4", "shots_001.mp4"]
    n = sum(len(f) for _, f in iter_frames(clips[0].path, width=128, height=72,
                                           chunk_frames=64, backend="pyav"))
    assert n == clips[0].n_frames
    mtime = clips[0].path.stat().st_mtime_ns
    again = generate_shot_archive(tmp_path, 2, seed=7, n_shots=4, width=128, height=72)
    assert again[0].path.stat().st_mtime_ns == mtime
    assert again[0].transitions == clips[0].transitions


def test_scoring_rules(tmp_path):
    clip = ShotClip(tmp_path / "x.mp4", 24.0, 200, 64, 36,
                    transitions=[Transition("cut", 50, 50), Transition("dissolve", 100, 110)],
                    traps=[Trap("flash", 150, 152)])
    # a cut 2 frames late, a dissolve hit inside its span, a false cut at the flash
    score = score_boundaries(clip, [52, 105, 151])
    assert (score["tp"], score["fp"], score["fn"]) == (2, 1, 0)
    assert score["per_trap"]["flash"] == [1, 1]
    # 3 frames late is a miss; one detection cannot match two transitions
    score = score_boundaries(clip, [53, 110, 111])
    assert score["per_kind"]["cut"] == [0, 1] and score["per_kind"]["dissolve"] == [1, 1]
    total = summarise_scores([score])
    assert total["recall_by_kind"]["dissolve"]["recall"] == 1.0 and total["fp"] == 2
