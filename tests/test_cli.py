"""The job's command line (mmx.cli): ``--lease-wait`` and the lease settings of the config, and
the exit codes that tell a scheduler "another run is on it" apart from a broken run. The
pipeline is replaced by a stub: these need no Ray (the real runs are in
tests/integration/test_single_writer.py)."""

from __future__ import annotations

import time

import pytest

from mmx import cli, pipeline
from mmx.config import ConfigError, RunConfig, build_config
from mmx.lease import LeaseError, LeaseHeld, LeaseInfo, LeaseLost
from mmx.storage import LatestMoved, SnapshotSealed


def test_lease_and_grace_settings_have_defaults_and_are_checked() -> None:
    cfg = RunConfig()
    assert (cfg.lease_ttl_s, cfg.lease_wait_s, cfg.snapshot_grace_days) == (600.0, 0.0, 7.0)
    cfg = build_config("tiny", overrides={"lease_ttl_s": "30", "lease_wait_s": 5,
                                          "snapshot_grace_days": 0})
    assert (cfg.lease_ttl_s, cfg.lease_wait_s, cfg.snapshot_grace_days) == (30.0, 5.0, 0.0)
    for bad in ({"lease_ttl_s": 0}, {"lease_wait_s": -1}, {"snapshot_grace_days": -0.5},
                {"lease_ttl_s": "soon"}, {"lease_wait_s": True}):
        with pytest.raises(ConfigError):
            build_config("tiny", overrides=bad)


class FakeRun:
    """Stands in for pipeline.run: records each config and raises ``error``."""

    def __init__(self) -> None:
        self.configs: list[RunConfig] = []
        self.error: Exception = RuntimeError("unset")

    def __call__(self, cfg: RunConfig, retrain: bool = False) -> None:
        self.configs.append(cfg)
        raise self.error


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    fake = FakeRun()
    monkeypatch.setattr(pipeline, "run", fake)
    return fake


ARGV = ["--archive", "/nowhere", "--labels", "", "--out", "/nowhere/out", "--profile", "tiny"]
HOLDER = LeaseInfo(run="20260101T000000Z-abcdef", host="elsewhere", pid=42, acquired=0.0,
                   heartbeat=time.time(), ttl_s=600.0)


@pytest.mark.parametrize(("error", "code"), [
    (LeaseHeld(HOLDER.describe("/nowhere/out"), HOLDER), 3),
    (LeaseLost("lease /nowhere/out/work/LEASE of run r was taken over by run s"), 4),
    (LatestMoved("/nowhere/out/LATEST names b, not a as when this run started",
                 expected="a", current="b"), 5),
    (SnapshotSealed("snapshot /nowhere/out/snapshots/a is complete"), 6),
    (LeaseError("no lease for memory://x: only local paths and s3://"), 2),
])
def test_writer_conflicts_exit_with_their_code_and_one_line(
    ran, capsys: pytest.CaptureFixture, error: Exception, code: int
) -> None:
    ran.error = error
    assert cli.run_job(ARGV) == code
    err = capsys.readouterr().err
    assert err == f"index_archive.py: {error}\n"  # one line, no traceback
    assert code in cli.EXIT_CODES


def test_the_holder_is_named_in_the_refusal(ran, capsys: pytest.CaptureFixture) -> None:
    ran.error = LeaseHeld(HOLDER.describe("/nowhere/out"), HOLDER)
    assert cli.run_job(ARGV) == cli.EXIT_LEASE_HELD
    err = capsys.readouterr().err
    assert err.startswith("index_archive.py: another run 20260101T000000Z-abcdef on elsewhere "
                          "(pid 42) holds /nowhere/out since 1970-01-01 00:00:00Z")


def test_lease_wait_flag_sets_the_config(ran) -> None:
    ran.error = LeaseHeld("held", HOLDER)
    cli.run_job(ARGV)
    assert ran.configs[-1].lease_wait_s == 0.0
    cli.run_job([*ARGV, "--lease-wait", "90"])
    assert ran.configs[-1].lease_wait_s == 90.0
    with pytest.raises(SystemExit) as exit_:
        cli.run_job([*ARGV, "--lease-wait", "-1"])
    assert exit_.value.code == 2


def test_top_level_settings_and_retry_failed_on_the_command_line(ran) -> None:
    ran.error = LeaseHeld("held", HOLDER)
    cli.run_job([*ARGV, "--lease_ttl_s=60", "--keep_snapshots=3", "--retry-failed",
                 "--video.max_bytes=1000"])
    cfg = ran.configs[-1]
    assert (cfg.lease_ttl_s, cfg.keep_snapshots, cfg.retry_failed) == (60.0, 3, True)
    assert cfg.video.max_bytes == 1000
    for bad in ("--no_such_setting=1", "--video=1"):
        with pytest.raises(SystemExit) as exit_:
            cli.run_job([*ARGV, bad])
        assert exit_.value.code == 2


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        cli.run_job(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lease-wait SECONDS" in text
    for code in cli.EXIT_CODES:
        assert f"{code} = " in text


def test_dry_run_lists_the_inputs_and_writes_nothing(tmp_path, capsys) -> None:
    videos = tmp_path / "arch" / "videos"
    videos.mkdir(parents=True)
    for name in ("b.mp4", "a.mp4", "big.mp4"):
        (videos / name).write_bytes(b"x" * (4096 if name == "big.mp4" else 10))
    (videos / "sub").mkdir()
    (videos / "sub" / "a.mov").write_bytes(b"y")  # a second file named a: excluded
    out = tmp_path / "out"
    argv = ["--archive", str(tmp_path / "arch"), "--out", str(out), "--video.max_bytes=1000",
            "--dry-run"]
    assert cli.run_job(argv) == 0
    text = capsys.readouterr().out
    assert "4 input files" in text and "nothing written" in text
    assert "big: 4096 bytes > video.max_bytes (1000)" in text
    assert not out.exists()  # not even the output root
    assert cli.run_job([*argv, "--json"]) == 0
    plan = __import__("json").loads(capsys.readouterr().out)
    assert plan["to_hash"] == ["a", "b"] and plan["latest"] is None
    assert sorted(plan["excluded"]) == ["big", "videos/sub/a.mov"]
    assert plan["model"]["train"] is True

    (tmp_path / "empty").mkdir()
    for archive, says in (("none", "does not exist"), ("empty", "no input files under")):
        with pytest.raises(SystemExit) as stop:  # nothing to index: a clear error, code 2
            cli.run_job(["--archive", str(tmp_path / archive), "--out", str(out), "--dry-run"])
        assert stop.value.code == 2
        assert says in capsys.readouterr().err


def test_a_bad_metadata_sidecar_stops_the_run_and_the_dry_run(tmp_path, capsys) -> None:
    arch = tmp_path / "arch"
    (arch / "videos").mkdir(parents=True)
    (arch / "videos" / "a.mp4").write_bytes(b"x" * 10)
    (arch / "metadata.csv").write_text("trailer_id,plot,year\na,A heist.,1999\nb,,nineteen\n")
    out = tmp_path / "out"
    argv = ["--archive", str(arch), "--out", str(out)]
    for extra in (["--dry-run"], []):  # the run stops before Ray starts or anything is written
        with pytest.raises(SystemExit) as stop:
            cli.run_job([*argv, *extra])
        assert stop.value.code == 2
        assert "metadata.csv: line 3: year 'nineteen' is not a number" in capsys.readouterr().err
        assert not out.exists()
    (arch / "metadata.csv").write_text("trailer_id,plot,year\na,A heist.,1999\nzz,,\n")
    titled = "--experts.names=[appearance,scene,motion,audio,text,poster,metadata]"
    assert cli.run_job([*argv, "--dry-run", "--json", titled]) == 0
    found = __import__("json").loads(capsys.readouterr().out)["metadata"]
    assert found["n_titles"] == 1 and found["ignored_ids"] == 1  # zz is no trailer here
    assert found["experts"] == ["text", "poster", "metadata"]
    assert found["changed_titles"] == ["a"]  # no snapshot yet: every title is new
