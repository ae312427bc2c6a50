"""The retrain policy of incremental runs (mmx.policy): a pure decision, and its config; the
genre check of a reused model against the labels."""

from __future__ import annotations

import pytest

from mmx.config import ConfigError, build_config, parse_overrides
from mmx.policy import (
    DAY_S,
    ModelInfo,
    UnknownGenres,
    check_genres,
    decide_retrain,
    run_time,
    unknown_genres,
)

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


def test_unknown_genres_are_those_the_head_does_not_score() -> None:
    model = ["Action", "Comedy", "Horror"]
    assert unknown_genres(["Action", "Horror"], model) == []  # a genre left the labels: fine
    assert unknown_genres(["Action", "Comedy", "Horor"], model) == ["Horor"]  # typo / rename
    assert unknown_genres(["War", "Action", "Drama"], model) == ["Drama", "War"]
    assert unknown_genres(["Action"], []) == []  # no genre head: nothing to mis-score


def test_unknown_genres_retrain_whatever_the_policy() -> None:
    d = decide(unknown=["Horor"], every_days=30, growth=0.5)
    assert d.retrain
    assert d.reason == ("labels name genres the model does not know: ['Horor'] "
                        "(new or renamed); training anew")
    assert not decide(unknown=[]).retrain
    # --retrain, a full run and a first run keep their own reason
    assert "--retrain" in decide(unknown=["Horor"], forced=True).reason
    assert decide(unknown=["Horor"], mode="full").reason == "full run"


def test_unknown_genres_without_retraining_stop_the_run() -> None:
    check_genres([], forced=False, allowed=False, model_run="r1")  # nothing unknown
    check_genres(["Horor"], forced=False, allowed=True, model_run="r1")  # it will retrain
    check_genres(["Horor"], forced=True, allowed=False, model_run="r1")  # --retrain
    with pytest.raises(UnknownGenres) as err:
        check_genres(["Horor", "Sci-fi"], forced=False, allowed=False, model_run="r1")
    assert err.value.genres == ["Horor", "Sci-fi"]
    text = str(err.value)
    assert "['Horor', 'Sci-fi']" in text and "model of run r1" in text
    assert "--retrain" in text and "fix the labels" in text
    assert "train.retrain_on_new_genres" in text


def test_model_info_records_genres_and_labels_digest() -> None:
    info = ModelInfo("out/models/r2", "r2", NOW, 50, genres=("Horror", "Action"),
                     labels_digest="ab" * 32)
    values = info.to_dict()
    assert values["genres"] == ["Horror", "Action"] and values["labels_digest"] == "ab" * 32
    assert ModelInfo.from_dict(values) == info
    headless = ModelInfo.from_dict({**values, "genres": []})
    assert headless.genres == ()
    legacy = ModelInfo.from_dict({"model_dir": "out/models/r2"})
    assert legacy.genres is None and legacy.labels_digest == ""


def test_config_fields() -> None:
    cfg = build_config("tiny")
    assert cfg.train.retrain_every_days is None and cfg.train.retrain_growth is None
    assert cfg.train.retrain_on_new_genres
    assert not build_config("tiny", None, parse_overrides(
        ["train.retrain_on_new_genres=false"])).train.retrain_on_new_genres
    cfg = build_config("tiny", None, parse_overrides(
        ["train.retrain_every_days=7", "train.retrain_growth=0.25"]))
    assert cfg.train.retrain_every_days == 7.0 and cfg.train.retrain_growth == 0.25
    with pytest.raises(ConfigError):
        build_config("tiny", None, parse_overrides(["train.retrain_growth=-1"]))
    with pytest.raises(ConfigError):
        build_config("tiny", None, parse_overrides(["train.retrain_every_days=soon"]))
