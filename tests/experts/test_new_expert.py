"""Acceptance (issue 15): a per-shot expert registered here, in a test module, runs through the
real decode, the features table, coarse training and the ablation without touching any other
file: one class plus its name in ``experts.names``.

The expert is a frame-mean colour descriptor (8-d); appearance stays off so that no CNN is
loaded (the pool path has its own test below with a second, pool-run test expert).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from mmx import ablate, schema, storage
from mmx.config import build_config
from mmx.experts.registry import EXPERTS, Expert, plan, register_expert
from mmx.features import clip_experts, pooled, to_arrays, with_title_expert
from mmx.ingest import analyse_trailer
from mmx.model.network import MMXNetwork
from mmx.pipeline import ingest_key
from mmx.stages import ingest as ingest_stage
from mmx.synth import write_trailer
from mmx.train import loop
from mmx.train.data import trailer_set_from_table

GENRES = ["Action", "Comedy"]


@register_expert
class FrameMeanExpert(Expert):
    """Per frame: mean and std of R, G, B and the mean luma of the top and bottom halves (8)."""

    name = "framemean"
    dim = 8
    kind = "frames"

    def frame_stride(self) -> int:
        return 3

    def frame_features(self, frames: np.ndarray) -> np.ndarray:
        x = frames.astype(np.float32) / 255.0  # (T, h, w, 3)
        h = x.shape[1] // 2
        luma = x.mean(axis=3)  # (T, h, w)
        return np.concatenate([
            x.mean(axis=(1, 2)), x.std(axis=(1, 2)),  # (T, 3) each
            luma[:, :h].mean(axis=(1, 2))[:, None], luma[:, h:].mean(axis=(1, 2))[:, None],
        ], axis=1).astype(np.float32)  # (T, 8)


@register_expert
class TinyPoolExpert(Expert):
    """An image expert that runs in the actor pool: per sampled frame, its mean RGB (3)."""

    name = "tinypool"
    dim = 3
    kind = "image"
    runs = "pool"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, np.float32).mean(axis=(1, 2)) / 255.0  # (N, h, w, 3) → (N, 3)


@register_expert
class TinyInlineExpert(TinyPoolExpert):
    """The same image expert run inline, in the decode task."""

    name = "tinyinline"
    runs = "inline"


@register_expert
class TinyTitleExpert(Expert):
    """A per-title expert over a plot: a 4-d bag of letters (enough to carry a signal)."""

    name = "tinytitle"
    dim = 4
    kind = "title"
    needs = ("plot",)

    def __call__(self, batch: list[str]) -> np.ndarray:
        return np.asarray([[text.count(c) for c in "aeio"] for text in batch], np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(names, tmp):
    return build_config("tiny", None, {
        "experts": {"names": list(names)},
        "train": {"coarse_epochs": 2, "patience": 2},
        "video": {"width": 96, "height": 54},
        "shots": {"min_shots": 4},
        "out": str(tmp),
    })


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """Six small synthetic trailers (two genres) through the decode stage's row builder and
    the pool actor, as a features table written to a store; plus their labels and config."""
    tmp = tmp_path_factory.mktemp("newexpert")
    cfg = _cfg(["audio", "framemean", "tinypool", "tinyinline"], tmp)
    rows, labels = [], {}
    for i in range(6):
        genre = GENRES[i % 2]
        path = tmp / f"t{i}.mp4"
        write_trailer(path, [genre], seed=100 + i, n_shots=6, width=96, height=54)
        tid = f"t{i}"
        labels[tid] = [genre]
        row = {"trailer_id": tid, "uri": str(path), "size_bytes": path.stat().st_size,
               "fingerprint": f"fp{i}"}
        rows.append(ingest_stage._analyse(row, cfg, str(tmp / "cache"), "run"))
    decoded = pa.Table.from_pylist(rows, schema=ingest_stage._with_frames(
        ingest_stage.features_schema(cfg)))
    table = ingest_stage.ImageExpertsActor(cfg)(decoded)  # the pool step, without Ray
    store = str(tmp / "features.parquet")
    storage.write_table(table, store)
    return cfg, table, store, labels


def test_plan_and_schema_come_from_the_declaration() -> None:
    run = plan(["appearance", "scene", "motion", "audio", "framemean", "tinypool"])
    assert run.frames == ("scene", "motion", "framemean")
    assert run.pool_image == ("appearance", "tinypool") and run.audio == "audio"
    table_schema = schema.features_schema(run.shot)
    # the built-in columns are untouched; the new experts get generic list<float32> columns
    assert table_schema.names[: len(schema.FEATURES)] == schema.FEATURES.names
    assert table_schema.field("framemean").type == pa.list_(pa.float32())
    assert clip_experts(table_schema) == ("appearance", "scene", "motion", "framemean",
                                          "tinypool")
    with pytest.raises(KeyError, match="unknown expert 'nosuch'"):
        plan(["scene", "nosuch"])


def test_the_cache_key_follows_the_experts(tmp_path) -> None:
    base = ingest_key(build_config("demo", None, {}))
    assert base == "eebd6f980134"  # the built-in experts' key, pinned: existing caches stay valid
    assert ingest_key(_cfg(["scene", "framemean"], tmp_path)) != base


def test_a_new_expert_runs_through_decode_training_and_ablation(decoded) -> None:
    cfg, table, store, labels = decoded
    assert table["status"].to_pylist() == ["ok"] * 6
    n_clips = np.asarray(table["n_clips"].to_pylist())
    # its column holds C × 8 floats per trailer, the mean of its rows of the clip's frames
    lengths = np.asarray([len(v) for v in table["framemean"].to_pylist()])
    np.testing.assert_array_equal(lengths, n_clips * 8)
    assert np.asarray([len(v) for v in table["tinypool"].to_pylist()]).tolist() == \
        (n_clips * 3).tolist()
    # an image expert gives the same vectors inline (decode task) as in the pool (actor)
    np.testing.assert_allclose(np.concatenate(table["tinyinline"].to_pylist()),
                               np.concatenate(table["tinypool"].to_pylist()), rtol=1e-6)
    means = pooled(table)["framemean"]  # (N, 16): mean and std over clips
    assert np.all((means[:, :3] > 0) & (means[:, :3] < 1)) and means[:, 3:6].std() > 0

    # the decode of one trailer gives the same vectors as its row (nothing lost on the way)
    tf = analyse_trailer(table["uri"][0].as_py(), cfg.video, cfg.shots, cfg.experts)
    np.testing.assert_array_equal(tf.features["framemean"].ravel(),
                                  np.asarray(table["framemean"][0].as_py(), np.float32))
    assert tf.timings_s["framemean"] >= 0.0

    # training: the model has a branch for it, the batch a column of the availability mask
    data = ablate.load_trailers(store, labels)
    assert list(data.expert_dims) == ["framemean", "tinypool", "tinyinline"]
    assert data.expert_dims["framemean"] == 8
    model = MMXNetwork(data.expert_dims, data.audio_dim, len(data.genres), cfg.model)
    batch = data.batch(np.arange(len(data)))
    assert batch["experts"]["framemean"].shape[-1] == 8
    assert batch["expert_mask"][..., model.expert_names.index("framemean")].any()
    fit = loop.fit_coarse(model, data, data, cfg.train)
    assert fit.best_epoch is not None

    # ablation: a row of its own, trained and evaluated
    tcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                split_fractions=(0.5, 0.2, 0.3)))
    rows = [v for v in ablate.variants(ablate.available_experts(data), pairs=False)
            if v.name in ("framemean", "gated (all)")]
    result = ablate.run_ablation(data, tcfg, rows=rows)
    by_name = {r["variant"]: r for r in result.to_pylist()}
    assert by_name["framemean"]["experts"] == ["framemean"]
    assert math.isfinite(by_name["framemean"]["au_prc_weighted"])
    assert "framemean" in by_name["gated (all)"]["experts"]
    assert "| framemean |" in ablate.to_markdown(result)


def test_a_title_expert_is_broadcast_to_every_clip_and_masked_when_missing(decoded) -> None:
    cfg, table, _, labels = decoded
    cfg = dataclasses.replace(cfg, experts=dataclasses.replace(
        cfg.experts, names=(*cfg.experts.names, "tinytitle")))
    run = plan(cfg.experts.names)
    assert run.title == ("tinytitle",) and "tinytitle" not in run.shot
    # a per-title expert is not computed from the video: adding one keeps the cached features
    assert ingest_key(cfg) == ingest_key(_cfg(["audio", "framemean", "tinypool", "tinyinline"],
                                              cfg.out))

    ids = table["trailer_id"].to_pylist()
    plots = {t: ("a heist in a casino" if labels[t] == ["Action"] else "a wedding, a loo")
             for t in ids}
    known = ids[:4]  # the last two titles have no plot: their expert is missing
    vectors = TinyTitleExpert()([plots[t] for t in known])  # (4, 4)
    with_title = with_title_expert(table, "tinytitle", known, vectors)
    assert with_title["tinytitle"].null_count == 2

    rows = to_arrays(with_title)
    first = rows[0]["features"]["tinytitle"]  # (C, 4): the title's vector on every clip
    assert first.shape == (len(rows[0]["features"]["framemean"]), 4)
    np.testing.assert_array_equal(first, np.broadcast_to(vectors[0], first.shape))
    assert "tinytitle" not in rows[5]["features"]

    data = trailer_set_from_table(with_title, labels, GENRES)
    assert data.expert_dims["tinytitle"] == 4
    batch = data.batch(np.arange(len(data)))
    e = list(data.expert_dims).index("tinytitle")
    mask = batch["expert_mask"][..., e]  # (B, C)
    assert mask[:4].sum() == batch["clip_mask"][:4].sum() and not mask[4:].any()
    model = MMXNetwork(data.expert_dims, data.audio_dim, len(GENRES), cfg.model).eval()
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out["logits"]).all()

    # and the ablation has a row for it
    tcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                split_fractions=(0.5, 0.2, 0.3)))
    assert "tinytitle" in ablate.available_experts(data)
    result = ablate.run_ablation(data, tcfg, rows=[ablate.Variant("tinytitle", ("tinytitle",),
                                                                  True)])
    assert result["variant"].to_pylist() == ["label frequency", "tinytitle"]


def test_a_declaration_is_checked_when_registered() -> None:
    def declare(**attrs):
        return register_expert(type("Bad", (Expert,), {"name": "bad", "dim": 2, **attrs}))

    with pytest.raises(ValueError, match="kind must be one of"):
        declare(kind="video")
    with pytest.raises(ValueError, match="only image and title experts run in a pool"):
        declare(kind="frames", runs="pool")
    with pytest.raises(ValueError, match="is a column of the features table"):
        declare(name="fps")
    with pytest.raises(ValueError, match="already registered"):
        declare(name="scene", kind="frames")
    declare(name="audio2", kind="audio")
    try:
        with pytest.raises(ValueError, match="2 audio experts"):
            plan(["audio", "audio2"])
    finally:
        EXPERTS.pop("audio2")
