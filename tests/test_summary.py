"""mmx.summary: the run's one-screen summary groups failure reasons; the CLI's exit code 8."""

from __future__ import annotations

import pytest

from mmx import cli, pipeline
from mmx.summary import RunSummary, group_reasons

REASONS = {
    "a": "excluded: 6 shots < 10",
    "b": "excluded: 4 shots < 10",
    "c": "failed: not a video (moov atom not found)",
    "d": "excluded: 9 shots < 10",
    "e": "failed: transient: reading the file: OSError: [Errno 5] I/O error (not cached: "
         "retried on the next run)",
}


def test_reasons_are_grouped_by_wording_numbers_masked() -> None:
    groups = group_reasons(REASONS)
    assert groups[0] == ("excluded: # shots < #", ["a", "b", "d"])
    assert [len(ids) for _, ids in groups] == [3, 1, 1]


def _summary(counts: dict[str, int]) -> RunSummary:
    return RunSummary(out="/o", snapshot="/o/snapshots/s", counts=counts, timings_s={"x": 1.0},
                      reasons=REASONS)


def test_render_shows_groups_with_counts_and_examples() -> None:
    text = _summary({"ok": 5, "excluded": 3, "failed": 2}).render()
    assert "    3 × excluded: # shots < # (e.g. a and 2 more)" in text
    assert "    1 × failed: not a video (moov atom not found) (e.g. c)" in text
    assert "1 of the failures are transient" in text


@pytest.mark.parametrize(("fraction", "code"), [(None, 0), ("0.5", 0), ("0.1", 8)])
def test_max_failed_fraction_sets_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, fraction, code: int
) -> None:
    monkeypatch.setattr(pipeline, "run", lambda cfg, retrain=False: _summary(
        {"ok": 8, "excluded": 0, "failed": 2}))  # 20% failed
    argv = ["--archive", "/nowhere", "--out", "/nowhere/out", "--profile", "tiny"]
    if fraction is not None:
        argv += ["--max-failed-fraction", fraction]
    assert cli.run_job(argv) == code
    if code:
        assert "2 of 10 inputs failed" in capsys.readouterr().err
    assert code in cli.EXIT_CODES


def test_render_shows_subgenre_stability_and_index_recall() -> None:
    summary = _summary({"ok": 5})
    summary.metrics = {
        "subgenres": {"k": 3, "rule": "r", "stability": {
            "n": 40, "kept_share": 0.925, "ari": 0.81, "matched": 3, "new": 1, "retired": 0}},
        "index": {"kind": "ivf", "recall_at_10": 0.9123, "nprobe": 4, "nprobe_for_target": 8,
                  "recall_target": 0.95},
    }
    text = summary.render()
    assert "sub-genre ids: 92% of 40 trailers kept theirs (ARI 0.81; 3 matched, 1 new, " \
           "0 retired)" in text
    assert "index: recall@10 0.912 (ivf, nprobe 4; nprobe 8 reaches 0.95)" in text
    summary.metrics = {"index": {"kind": "flat", "recall_at_10": 1.0, "nprobe": None}}
    assert "index: recall@10 1.000 (flat)" in summary.render()
