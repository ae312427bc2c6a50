"""Per-title experts stage (issue 15): a partial sidecar's titles described by the real text,
poster and metadata experts in the Ray actor pool, cached by metadata fingerprint, attached to
features rows with the missing inputs masked; an edited plot describes only that title again;
no sidecar, no title experts (the trailer-only run, same cache key)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from mmx import metadata, schema, titles
from mmx.config import TITLE_EXPERTS, build_config
from mmx.model.network import MMXNetwork
from mmx.pipeline import ingest_key
from mmx.stages import ingest as ingest_stage
from mmx.stages import titles as titles_stage
from mmx.train.data import trailer_set_from_table

NAMES = ("text", "poster", "metadata")
SIDECAR = """trailer_id,title,plot,year,runtime_min,poster
a,Alpha,A heist crew robs a casino vault at night.,1999,121,posters/a.png
b,Beta,Two strangers fall in love at a wedding.,,95,
c,Gamma,,2015,,posters/c.png
d,Delta,,,,posters/missing.png
e.mp4,Epsilon,Space marines fight a swarm on a distant moon.,1986,,posters/bad.png
"""  # f has no row at all


def _archive(root: Path) -> Path:
    (root / "posters").mkdir(parents=True)
    for name, colour in (("a", (200, 40, 40)), ("c", (30, 30, 160))):
        image = np.zeros((96, 64, 3), np.uint8)
        image[:] = colour
        image[20:50, 10:40] = 255
        cv2.imwrite(str(root / "posters" / f"{name}.png"), image)
    (root / "posters" / "bad.png").write_bytes(b"not an image at all")
    (root / "metadata.csv").write_text(SIDECAR)
    return root


def _features(ids: list[str]) -> pa.Table:
    """Hand-made ok features rows (2 clips, scene only) for ``ids``."""
    rng = np.random.default_rng(0)
    rows = []
    for tid in ids:
        row = {f.name: None for f in schema.FEATURES}
        row.update(trailer_id=tid, uri=tid, fingerprint=tid, size_bytes=0, status="ok",
                   reason="", fps=24.0, n_frames=48, duration_s=2.0, has_audio=False,
                   n_shots=2, n_clips=2, clip_start=[0, 24], clip_end=[24, 48], decode_s=0.0,
                   audio_frames=[0, 0], scene=rng.normal(size=2 * 180).astype(np.float32))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema.FEATURES)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_partial_sidecar_is_described_cached_and_masked(ray_session, tmp_path: Path) -> None:
    arch = _archive(tmp_path / "arch")
    cfg = build_config("tiny", None, {"out": str(tmp_path / "out")})  # title experts on
    ids = ["a", "b", "c", "d", "e", "f"]
    sidecar = metadata.read_metadata(str(arch), ids)
    names = titles.active_title_experts(cfg, sidecar)
    assert names == NAMES  # named in experts.names, and there is a sidecar
    prints = metadata.fingerprints(sidecar, metadata.poster_versions(str(arch)))
    cache = titles_stage.cache_uri(cfg.out, titles.titles_key(cfg, names))
    todo = str(tmp_path / "todo.parquet")
    assert titles_stage.describe(sidecar, ids, prints, cfg, names, cache, todo) == 5
    assert titles_stage.describe(sidecar, ids, prints, cfg, names, cache, todo) == 0  # cached

    table = titles.attach(_features(ids), titles_stage.lookup(cache, names, ids, prints))
    got = {n: table[n].to_pylist() for n in NAMES}
    has = {n: [v is not None for v in got[n]] for n in NAMES}
    # a: everything; b: no poster; c: no plot; d: a poster file that is not there, nothing
    # else; e: a poster that is not an image, no runtime; f: not in the sidecar
    assert has["text"] == [True, True, False, False, True, False]
    assert has["poster"] == [True, False, True, False, False, False]
    assert has["metadata"] == [True, True, True, False, True, False]
    assert len(got["text"][0]) == 384 and len(got["poster"][0]) == 1280
    assert np.isclose(np.linalg.norm(got["text"][0]), 1.0, atol=1e-4)  # MiniLM, normalised
    assert not np.allclose(got["poster"][0], got["poster"][2])  # two different posters
    np.testing.assert_allclose(got["metadata"][0], [0.3, np.log(1.21) / 0.25, 1.0, 1.0],
                               atol=1e-5)

    # training data: each title expert on every clip of its trailer, masked where missing
    data = trailer_set_from_table(table, {}, ["Action"])
    batch = data.batch(np.arange(len(data)))
    names_in_model = list(data.expert_dims)
    assert set(NAMES) <= set(names_in_model)
    for n in NAMES:
        mask = batch["expert_mask"][..., names_in_model.index(n)]  # (B, C)
        assert mask.any(dim=1).tolist() == has[n], n
    model = MMXNetwork(data.expert_dims, data.audio_dim, 1, cfg.model).eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)["logits"]).all()

    # an edited plot: that title's fingerprint only, described again from its metadata alone
    (arch / "metadata.csv").write_text(SIDECAR.replace("fall in love", "fall out"))
    edited = metadata.read_metadata(str(arch), ids)
    now = metadata.fingerprints(edited, metadata.poster_versions(str(arch)))
    assert metadata.changed_titles(ids, prints, now) == ["b"]
    assert titles_stage.describe(edited, ids, now, cfg, names, cache, todo) == 1
    again = titles.attach(_features(ids), titles_stage.lookup(cache, names, ids, now))
    assert again["text"][1].as_py() != got["text"][1]
    assert again["text"][0].as_py() == got["text"][0]  # the others are the cached vectors
    assert again["poster"].to_pylist() == got["poster"]


def test_without_a_sidecar_the_run_is_the_trailer_only_run(tmp_path: Path) -> None:
    cfg = build_config("demo", None, {})
    assert titles.active_title_experts(cfg, None) == ()
    assert set(TITLE_EXPERTS) <= set(cfg.experts.names)  # on by default (see ExpertsConfig)
    off = build_config("demo", None, {"experts": {"names": [
        n for n in cfg.experts.names if n not in TITLE_EXPERTS]}})
    assert titles.active_title_experts(off, None) == ()
    assert ingest_key(off) == ingest_key(cfg)
    assert metadata.read_metadata(str(tmp_path)) is None
    assert ingest_key(cfg) == "eebd6f980134"  # the cache key of the built-in experts
    # the features table is the video experts' only: no title column, as before
    assert ingest_stage.features_schema(cfg) == schema.FEATURES
    # title-only settings change the title vectors' key, never the features cache's
    other = build_config("demo", None, {"experts": {"text_max_length": 64,
                                                    "names": ["appearance", "scene", "motion",
                                                              "audio"]}})
    assert ingest_key(other) == ingest_key(cfg)
    assert titles.titles_key(other, NAMES) != titles.titles_key(cfg, NAMES)
