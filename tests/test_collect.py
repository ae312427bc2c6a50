"""mmx.collect: after a publish, what no complete snapshot references is deleted, nothing else."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from mmx import collect, schema, storage
from mmx.config import build_config
from mmx.layout import OutputLayout
from mmx.pipeline import ingest_key
from mmx.stages import cache as features_cache


def _row(fp: str) -> pa.Table:
    row = {f.name: None for f in schema.FEATURES} | {
        "trailer_id": fp, "uri": f"{fp}.mp4", "fingerprint": fp, "status": "ok", "reason": ""}
    return pa.Table.from_pylist([row], schema=schema.FEATURES)


def test_collect_deletes_only_what_nothing_references(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    cfg = build_config("tiny")
    key = ingest_key(cfg)
    snap = layout.snapshot("A")
    storage.write_json(storage.join(snap, "model.json"), {"model_dir": layout.model_dir("A")})
    storage.write_json(storage.join(snap, "config.json"), cfg.to_dict())
    storage.write_table(pa.table({"fingerprint": ["fp0", "fp1"]}),
                        storage.join(snap, "trailers.parquet"))
    storage.publish(out, "A", expected=None)
    for name in ("A", "B"):  # B: a model no snapshot uses (its snapshots were pruned)
        storage.write_json(storage.join(layout.model_dir(name), "result.json"), {})
        storage.write_json(storage.join(layout.features(name), "part-0.json"), {})
    storage.write_json(storage.join(layout.work("C"), "x.json"), {})  # the run in progress
    storage.write_text(layout.pending, "C\n")
    storage.write_text(storage.join(out, "work", "LEASE"), "{}")
    cache = layout.cache(key)
    for fp in ("fp0", "fp1", "fp2", "fp3"):
        storage.write_table(_row(fp), features_cache.cached_path(cache, fp))
    storage.write_json(storage.join(cache, "_attempts", "fp2", "m.json"), {"run": "old"})
    other = layout.cache("0123456789ab")  # features of settings no snapshot was made with
    storage.write_table(_row("fp9"), features_cache.cached_path(other, "fp9"))

    done = collect.collect(out, "D", key, inputs=["fp2"])

    assert done == {"models": 1, "work": 1, "caches": 1, "cache_rows": 1}
    root = Path(out)
    assert sorted(p.name for p in (root / "models").iterdir()) == ["A"]
    assert sorted(p.name for p in (root / "work").iterdir()) == ["A", "C", "LEASE", "PENDING"]
    assert sorted(features_cache.locate(cache)) == ["fp0", "fp1", "fp2"]  # fp3: nobody's
    assert not (root / "cache" / "features-0123456789ab").exists()
    assert not (Path(cache) / "_attempts").exists()
    assert collect.collect(out, "D", key, inputs=["fp2"]) == {
        "models": 0, "work": 0, "caches": 0, "cache_rows": 0}


def test_collect_keeps_the_title_caches_of_retained_settings_only(tmp_path: Path) -> None:
    """``cache/titles-<key>/``: the run's own and those of a snapshot whose settings list title
    experts stay; a cache of title settings no snapshot has (an old text length…) goes."""
    from mmx.titles import titles_key

    out = str(tmp_path / "out")
    layout = OutputLayout(out)
    names = ["appearance", "scene", "motion", "audio", "text", "poster", "metadata"]
    with_titles = build_config("tiny", overrides={"experts": {"names": names}})
    snap = layout.snapshot("A")
    storage.write_json(storage.join(snap, "model.json"), {"model_dir": layout.model_dir("A")})
    storage.write_json(storage.join(snap, "config.json"), with_titles.to_dict())
    storage.write_table(pa.table({"fingerprint": ["fp0"]}), storage.join(snap, "trailers.parquet"))
    storage.publish(out, "A", expected=None)
    kept = titles_key(with_titles, ["text", "poster", "metadata"])
    mine = titles_key(with_titles, ["text"])  # this run: only the text expert
    for key in (kept, mine, "0123456789ab"):
        storage.write_json(storage.join(out, "cache", f"titles-{key}", "part-0.json"), {})

    done = collect.collect(out, "B", ingest_key(with_titles), inputs=["fp0"], titles_key=mine)

    assert done["caches"] == 1
    left = sorted(p.name for p in (Path(out) / "cache").iterdir())
    assert left == sorted([f"titles-{kept}", f"titles-{mine}"])
    done = collect.collect(out, "B", ingest_key(with_titles), inputs=["fp0"])
    assert done["caches"] == 1  # without title experts now, only the snapshot's cache stays
    assert [p.name for p in (Path(out) / "cache").iterdir()] == [f"titles-{kept}"]
