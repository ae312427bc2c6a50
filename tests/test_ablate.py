"""`mmx ablate` on a small synthetic features table (tiny profile, two epochs per variant)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmx import ablate, schema, storage
from mmx.cli import main as mmx_main
from mmx.config import build_config

DIMS = {"appearance": 12, "scene": 6, "motion": 4}
VOCAB = ["Action", "Comedy", "Drama"]
VARIANTS = [
    "appearance", "scene", "motion", "audio",
    "appearance+scene", "appearance+motion", "appearance+audio", "scene+motion", "scene+audio",
    "motion+audio", "concat (no gating)", "gated (all)",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: OpenMP spinning on a busy 2-core box costs 40x
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """A features table (plus one failed row) with a genre signal in appearance and audio."""
    rng = np.random.default_rng(0)
    dirs = {k: rng.normal(size=(len(VOCAB), d)) for k, d in {**DIMS, "audio": 128}.items()}
    rows, labels = [], {}
    for i in range(48):
        tid = f"t{i:03d}"
        y = np.zeros(len(VOCAB))
        y[rng.choice(len(VOCAB), size=int(rng.integers(1, 3)), replace=False)] = 1.0
        labels[tid] = [VOCAB[g] for g in np.flatnonzero(y)]
        c = int(rng.integers(5, 9))
        row = {f.name: None for f in schema.FEATURES}
        row.update(trailer_id=tid, uri=tid, fingerprint=tid, size_bytes=0, status="ok",
                   reason="", fps=24.0, n_frames=24 * c, duration_s=float(c), has_audio=True,
                   n_shots=c, n_clips=c, clip_start=list(range(0, 24 * c, 24)),
                   clip_end=list(range(24, 24 * c + 1, 24)), decode_s=0.0, audio_frames=[2] * c)
        for k, d in DIMS.items():
            signal = y @ dirs[k] if k == "appearance" else 0.0
            row[k] = (signal + rng.normal(size=(c, d))).astype(np.float32).ravel()
        row["audio"] = (y @ dirs["audio"] + rng.normal(size=(c, 2, 128))).astype(np.float32).ravel()
        rows.append(row)
    bad = {f.name: None for f in schema.FEATURES}
    bad.update(trailer_id="broken", status="failed", reason="corrupt", n_clips=0)
    rows.append(bad)
    root = tmp_path_factory.mktemp("ablate")
    uri = str(root / "features.parquet")
    storage.write_table(pa.Table.from_pylist(rows, schema=schema.FEATURES), uri)
    csv = root / "labels.csv"
    csv.write_text("trailer_id,genres\n" + "".join(f"{t},{'|'.join(g)}\n" for t, g in labels.items()))
    return uri, labels, csv


def test_restrict_drops_the_other_experts(features):
    uri, labels, _ = features
    data = ablate.load_trailers(uri, labels)
    assert ablate.available_experts(data) == ("appearance", "scene", "motion", "audio")
    batch = ablate.restrict(data, ["scene"]).batch([0, 1])
    assert set(batch["experts"]) == {"scene"} and "audio" not in batch
    assert batch["expert_mask"].shape[-1] == 1
    batch = ablate.restrict(data, ["motion", "audio"]).batch([0, 1])
    assert set(batch["experts"]) == {"motion"} and batch["expert_mask"].shape[-1] == 2


def test_ablation_table_rows_and_columns(features, tmp_path):
    uri, _, csv = features
    out = tmp_path / "out"
    argv = ["ablate", "--features", uri, "--labels", str(csv), "--out", str(out),
            "--profile", "tiny", "--train.coarse_epochs=2"]
    assert mmx_main(argv) == 0

    table = pq.read_table(out / "ablation.parquet")
    assert table.column("variant").to_pylist() == [ablate.BASELINE, *VARIANTS]
    ap_cols = [f"ap_{g}" for g in VOCAB]
    assert table.column_names == [
        "variant", "experts", "gating", *ap_cols, "f1_weighted", "au_prc_weighted",
        "precision_weighted", "recall_weighted", "au_prc_micro", "au_prc_macro",
        "au_prc_samples", "au_prc_weighted_std", "best_epoch",
        "n_train", "n_eval", "seeds", "train_s",
    ]
    rows = {r["variant"]: r for r in table.to_pylist()}
    assert rows["concat (no gating)"]["gating"] is False and rows["gated (all)"]["gating"] is True
    assert rows["gated (all)"]["experts"] == ["appearance", "scene", "motion", "audio"]
    assert rows["scene+audio"]["experts"] == ["scene", "audio"]
    for row in rows.values():
        for col in [*ap_cols, *ablate.SUMMARY]:
            assert 0.0 <= row[col] <= 1.0, (row["variant"], col)
        assert row["n_eval"] > 0 and row["n_train"] > row["n_eval"]
    assert rows["gated (all)"]["seeds"] == 1 and rows[ablate.BASELINE]["seeds"] == 0

    markdown = (out / "ablation.md").read_text().splitlines()
    assert markdown[0] == ("| Model | " + " | ".join(VOCAB) + " | F1w | AU(PRC)w | Pw | Rw"
                           " | AU(PRC)micro | AU(PRC)macro | AU(PRC)samples |")
    body = [line for line in markdown[2:] if line.startswith("| ")]
    assert [line.split(" | ")[0][2:] for line in body] == [ablate.BASELINE, *VARIANTS]
    assert all(len(line.split(" | ")) == 1 + len(VOCAB) + 7 for line in body)


def test_seeds_and_variant_selection(features):
    uri, labels, _ = features
    data = ablate.load_trailers(uri, labels)
    cfg = build_config("tiny", overrides={"train": {"coarse_epochs": 1}})
    rows = [v for v in ablate.variants(["appearance", "scene"]) if v.name != "scene"]
    assert [v.name for v in rows] == ["appearance", "concat (no gating)", "gated (all)"]
    table = ablate.run_ablation(data, cfg, seeds=2, eval_split="test", rows=rows)
    assert table.num_rows == 4 and set(table.column("seeds").to_pylist()) == {0, 2}
    with pytest.raises(ValueError, match="eval_split"):
        ablate.run_ablation(data, cfg, eval_split="train")


def test_metadata_variants_beside_the_trailer_experts():
    # each modality alone, the trailer alone, the metadata alone, all (issue 15)
    rows = ablate.variants(["appearance", "scene", "audio", "text", "poster", "metadata"],
                           pairs=False)
    named = {v.name: v.experts for v in rows}
    assert [v.name for v in rows][:6] == ["appearance", "scene", "audio", "text", "poster",
                                          "metadata"]
    assert named[ablate.TRAILER_ONLY] == ("appearance", "scene", "audio")
    assert named[ablate.METADATA_ONLY] == ("text", "poster", "metadata")
    assert named["gated (all)"] == ("appearance", "scene", "audio", "text", "poster",
                                    "metadata")
    # a trailer-only run has no such rows (its table is as before)
    assert ablate.TRAILER_ONLY not in {v.name for v in ablate.variants(["appearance", "scene"])}
