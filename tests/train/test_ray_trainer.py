"""The training worker body without Ray: resume after a kill, skipping finished work."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from mmx import schema, storage
from mmx.config import build_config
from mmx.train import loop, ray_trainer

DIMS = {"appearance": 16, "scene": 8, "motion": 4}
VOCAB = ["Action", "Comedy", "Drama", "Horror"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP spinning on a busy 2-core box costs 40x
    yield
    torch.set_num_threads(before)


def features_table(n: int, seed: int) -> tuple[pa.Table, dict[str, list[str]]]:
    """A ``features`` table (all ok) whose genres shift every expert along a planted direction."""
    rng = np.random.default_rng(seed)
    dirs = {k: rng.normal(size=(len(VOCAB), d)) for k, d in {**DIMS, "audio": 128}.items()}
    rows, labels = [], {}
    for i in range(n):
        tid = f"t{i:03d}"
        y = np.zeros(len(VOCAB))
        y[rng.choice(len(VOCAB), size=int(rng.integers(1, 3)), replace=False)] = 1.0
        labels[tid] = [VOCAB[g] for g in np.flatnonzero(y)]
        c = int(rng.integers(6, 11))
        row = {f.name: None for f in schema.FEATURES}
        row.update(trailer_id=tid, uri=tid, fingerprint=tid, size_bytes=0, status="ok",
                   reason="", fps=24.0, n_frames=c * 24, duration_s=c * 1.0, has_audio=True,
                   n_shots=c, n_clips=c, clip_start=list(range(0, 24 * c, 24)),
                   clip_end=list(range(24, 24 * c + 1, 24)), decode_s=0.0,
                   audio_frames=[2] * c)
        for k, d in DIMS.items():
            row[k] = (y @ dirs[k] + rng.normal(size=(c, d))).astype(np.float32).ravel()
        row["audio"] = (y @ dirs["audio"] + rng.normal(size=(c, 2, 128))).astype(np.float32).ravel()
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema.FEATURES), labels


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    table, labels = features_table(40, seed=0)
    features = str(root / "features.parquet")
    storage.write_table(table, features)
    cfg = build_config(
        "tiny",
        overrides={"train": {"coarse_epochs": 4, "contrastive_epochs": 2, "patience": 10,
                             "batch_size": 8}},
    )
    config = {"cfg": cfg.to_dict(), "features": features, "labels": labels, "vocab": VOCAB}
    full = root / "full"
    ray_trainer.train_phases({**config, "model_dir": str(full)}, report=REPORTS.append)
    return root, config, cfg, full


REPORTS: list[dict] = []  # what the job fixture's training reported (ray.train.report's place)


def test_every_epoch_is_reported_with_its_numbers(job):
    assert [(r["phase"], r["epoch"]) for r in REPORTS] == [
        ("coarse", e) for e in range(4)] + [("contrastive", e) for e in range(2)]
    assert all(isinstance(v, float) for r in REPORTS for k, v in r.items()
               if k not in ("phase", "epoch"))
    assert all("seconds" in r for r in REPORTS)


class Killed(Exception):
    """Stands in for the process dying right after a checkpoint."""


@pytest.mark.parametrize("kill_at", [("coarse", 1), ("contrastive", 0)])
def test_resume_after_kill_matches_uninterrupted_run(job, monkeypatch, kill_at):
    root, config, cfg, full = job
    part = root / f"part-{kill_at[0]}"
    save = ray_trainer._save_epoch

    def save_then_die(model_dir, phase, epoch, *args):
        save(model_dir, phase, epoch, *args)
        if (phase, epoch) == kill_at:
            raise Killed

    monkeypatch.setattr(ray_trainer, "_save_epoch", save_then_die)
    with pytest.raises(Killed):
        ray_trainer.train_phases({**config, "model_dir": str(part)})
    monkeypatch.undo()
    # a half-written next epoch (no meta.json) must be ignored
    torn = part / f"{kill_at[0]}-epoch-{kill_at[1] + 1:04d}"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"torn")

    ray_trainer.train_phases({**config, "model_dir": str(part)})

    last = [f"{ph}-epoch-{n - 1:04d}" for ph, n in
            (("coarse", cfg.train.coarse_epochs), ("contrastive", cfg.train.contrastive_epochs))]
    for name in ("coarse", "fine", *last):
        want = loop.load_checkpoint(str(full / name)).model_state
        got = loop.load_checkpoint(str(part / name)).model_state
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)
    want, got = (storage.read_json(str(d / "result.json")) for d in (full, part))
    assert got["silhouette"] == pytest.approx(want["silhouette"])
    assert got["test"]["au_prc_weighted"] == pytest.approx(want["test"]["au_prc_weighted"])
    assert got["coarse_best_epoch"] == want["coarse_best_epoch"]
    # the resumed attempt ran only the epochs after the kill
    phase, epoch = kill_at
    timings = got["train_timings"]
    if phase == "coarse":
        assert len(timings["coarse_epoch_s"]) == cfg.train.coarse_epochs - epoch - 1
        assert len(timings["contrastive_epoch_s"]) == cfg.train.contrastive_epochs
    else:
        assert timings["coarse_epoch_s"] == []
        assert len(timings["contrastive_epoch_s"]) == cfg.train.contrastive_epochs - epoch - 1
    # only the newest complete epoch checkpoints are kept
    kept = [e for e, _ in ray_trainer.epoch_checkpoints(str(part), "coarse")]
    assert kept == list(range(cfg.train.coarse_epochs))[-ray_trainer.KEEP_EPOCH_CHECKPOINTS:]


def test_finished_training_is_reused_without_ray(job, monkeypatch):
    _, config, cfg, full = job
    monkeypatch.setitem(sys.modules, "ray.train", None)  # importing Ray Train would fail
    result = ray_trainer.train_model(config["features"], config["labels"], VOCAB, cfg, str(full))
    assert result.metrics == storage.read_json(str(full / "result.json"))
    assert result.fine == str(full / "fine")


def test_refuses_checkpoints_of_another_vocabulary(job):
    _, config, _, full = job
    with pytest.raises(ValueError, match="different model or genre vocabulary"):
        ray_trainer.train_phases({**config, "vocab": VOCAB + ["Western"], "model_dir": str(full)})


def test_two_ray_workers_each_load_their_half_of_the_store(ray_session, tmp_path):
    """Through Ray Train with 2 workers, each worker reads the features of only its half of
    the trailers of a store of several parts, and the job still scores the whole test split."""
    table, labels = features_table(40, seed=1)
    store = tmp_path / "features.parquet"
    store.mkdir()
    order = np.random.default_rng(2).permutation(table.num_rows)  # parts in no particular order
    for k, part in enumerate(np.array_split(order, 3)):
        storage.write_table(table.take(part), str(store / f"part-{k:02d}.parquet"))
    cfg = build_config(
        "tiny",
        overrides={"train": {"num_workers": 2, "coarse_epochs": 2, "contrastive_epochs": 1,
                             "batch_size": 8}},
    )
    result = ray_trainer.train_model(str(store), labels, VOCAB, cfg, str(tmp_path / "model"))
    timings = result.metrics["train_timings"]
    assert timings["world_size"] == 2 and timings["n_trailers"] == 40
    assert timings["rows_loaded"] == [20, 20]
    assert len(timings["data_load_s_per_worker"]) == 2
    n_test = result.metrics["n_test"]
    assert n_test >= 8 and result.metrics["test"]["n"] == n_test
    assert 0.0 <= result.metrics["test"]["au_prc_weighted"] <= 1.0
    assert len(result.metrics["silhouette"]) == 2
    assert (tmp_path / "model" / "fine" / "meta.json").exists()


def test_checkpoints_of_other_inputs_are_discarded(tmp_path):
    """A model directory resumed by a run whose inputs changed (labels edited, a genre added,
    trailers or settings changed since the killed run) starts afresh instead of resuming, or
    failing on, the stale checkpoints; the same inputs resume."""
    model_dir = tmp_path / "model"
    (model_dir / "fine").mkdir(parents=True)  # no stamp (trained before stamps): adopted
    ray_trainer._discard_stale(str(model_dir), "a" * 64)
    assert (model_dir / "fine").exists()
    (model_dir / "coarse-epoch-0000").mkdir()
    (model_dir / "coarse-epoch-0000" / "meta.json").write_text("{}")
    ray_trainer._discard_stale(str(model_dir), "a" * 64)  # same inputs: resumed
    assert (model_dir / "coarse-epoch-0000").exists()
    ray_trainer._discard_stale(str(model_dir), "b" * 64)  # other inputs: discarded
    assert sorted(p.name for p in model_dir.iterdir()) == [ray_trainer.INPUTS_FILE]
    assert storage.read_json(str(model_dir / ray_trainer.INPUTS_FILE))["digest"] == "b" * 64


def test_inputs_digest_follows_labels_and_trailers(tmp_path):
    store = tmp_path / "features.parquet"
    storage.write_table(pa.table({"trailer_id": ["a", "b", "c"], "fingerprint": ["1", "2", "3"],
                                  "status": ["ok", "ok", "failed"]}), str(store))
    cfg = build_config("tiny")
    base = ray_trainer.inputs_digest(str(store), {"a": ["X"]}, ["X"], cfg)
    assert base == ray_trainer.inputs_digest(str(store), {"a": ["X"], "c": ["Y"]}, ["X"], cfg)
    assert base != ray_trainer.inputs_digest(str(store), {"a": ["X"], "b": ["X"]}, ["X"], cfg)
    assert base != ray_trainer.inputs_digest(str(store), {"a": ["X"]}, ["X", "Y"], cfg)
    more = build_config("tiny", overrides={"train": {"num_workers": 2}})
    assert base == ray_trainer.inputs_digest(str(store), {"a": ["X"]}, ["X"], more)
