"""The retrain policy of incremental runs (mmx.policy): a pure decision, and its config."""

from __future__ import annotations

import pytest

from mmx.config import ConfigError, build_config, parse_overrides
from mmx.policy import DAY_S, ModelInfo, decide_retrain, run_time

NOW = 1_800_000_000.0
MODEL = ModelInfo("s3://b/out/models/r1", "r1", trained_at=NOW - 3 * DAY_S, n_ok=100)


def decide(**kw):
    args = {"mode": "incremental", "forced": False, "model": MODEL, "n_ok": 110, "now": NOW,
            "every_days": None, "growth": None, **kw}
    return decide_retrain(**args)


def test_full_forced_and_first_runs_always_train() -> None:
    assert decide(mode="full").retrain
    forced = decide(forced=True)
    assert forced.retrain and "--retrain" in forced.reason
    first = decide(model=None)
    assert first.retrain and "no previous snapshot" in first.reason


def test_no_policy_reuses_the_model() -> None:
    d = decide()
    assert not d.retrain
    assert "r1" in d.reason and "no retrain policy" in d.reason


def test_age_rule() -> None:
    assert not decide(every_days=7).retrain
    d = decide(every_days=3)  # exactly 3 days old: due
    assert d.retrain and "3.0 days old" in d.reason and "retrain_every_days=3" in d.reason
    assert decide(every_days=2.5).retrain
    keep = decide(every_days=7)
    assert "3.0 days old < 7" in keep.reason


def test_growth_rule() -> None:
    assert not decide(growth=0.2, n_ok=119).retrain
    d = decide(growth=0.2, n_ok=120)
    assert d.retrain and "100 → 120" in d.reason and "+20%" in d.reason
    assert not decide(growth=0.1, n_ok=90).retrain  # shrinking never triggers


def test_either_rule_triggers() -> None:
    assert decide(every_days=2, growth=0.5).retrain  # old enough, little growth
    assert decide(every_days=30, growth=0.05).retrain  # young, grew enough
    d = decide(every_days=30, growth=0.5)
    assert not d.retrain and "days old" in d.reason and "+10%" in d.reason


def test_unknown_model_facts_do_not_trigger() -> None:
    legacy = ModelInfo("out/models/x")
    d = decide(model=legacy, every_days=1, growth=0.1)
    assert not d.retrain
    assert "age unknown" in d.reason and "size unknown" in d.reason


def test_model_info_round_trip_and_legacy_model_json() -> None:
    assert ModelInfo.from_dict(MODEL.to_dict()) == MODEL
    legacy = ModelInfo.from_dict({"model_dir": "s3://b/out/models/20260101T000000Z-abc123"})
    assert legacy.trained_run == "20260101T000000Z-abc123"
    assert legacy.trained_at == run_time("20260101T000000Z-abc123") == 1767225600.0
    assert legacy.n_ok is None
    assert run_time("not-a-run") is None


def test_config_fields() -> None:
    cfg = build_config("tiny")
    assert cfg.train.retrain_every_days is None and cfg.train.retrain_growth is None
    cfg = build_config("tiny", None, parse_overrides(
        ["train.retrain_every_days=7", "train.retrain_growth=0.25"]))
    assert cfg.train.retrain_every_days == 7.0 and cfg.train.retrain_growth == 0.25
    with pytest.raises(ConfigError):
        build_config("tiny", None, parse_overrides(["train.retrain_growth=-1"]))
    with pytest.raises(ConfigError):
        build_config("tiny", None, parse_overrides(["train.retrain_every_days=soon"]))
