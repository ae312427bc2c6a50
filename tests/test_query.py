"""mmx.query and the mmx commands against real snapshots of the synthetic archive: query by
example on held-out videos, refusal of a tampered index, every command in table and JSON form.

The commands and integrity checks use the session ``run`` (tiny profile, 4 coarse epochs: the
contract, not a useful model). Query by example needs a model that generalises to unseen
videos, so this module publishes one more snapshot of the same archive trained for 30 coarse
epochs; it reuses the session run's per-fingerprint feature cache, so nothing is decoded again
and only training, embedding and indexing run (~1 min here).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from mmx.cli import main as mmx_main
from mmx.cli import run_job
from mmx.index.shards import IndexIntegrityError
from mmx.query import (
    Snapshot,
    SnapshotError,
    SnapshotIntegrityError,
    VideoQueryError,
    query_of,
    similar_to_video,
)
from mmx.synth import write_trailer

K = 5
N_HELD_OUT = 4  # held-out videos, one per most common genre combination of the archive
SQL = "SELECT subgenre, count(*) AS n FROM trailers WHERE status = 'ok' GROUP BY 1 ORDER BY 1"


@pytest.fixture(scope="module")
def snapshot(
    run: Path, synth_archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> Snapshot:
    """A snapshot of the session archive whose model was trained to generalise (30 epochs)."""
    out = tmp_path_factory.mktemp("out_trained")
    if (run / "cache").is_dir():  # the session run's decoded features: skip the ingest
        shutil.copytree(run / "cache", out / "cache")
    code = run_job(
        ["--archive", str(synth_archive), "--out", str(out), "--profile", "tiny",
         "--train.coarse_epochs=30", "--train.patience=10"]
    )
    assert code == 0
    return Snapshot.open(str(out))


@pytest.fixture(scope="module")
def labelled(snapshot: Snapshot) -> dict[str, tuple[str, ...]]:
    """Genre combination of every indexed (ok) labelled trailer."""
    t = snapshot.table("trailers")
    ok = t.filter(pc.equal(t["status"], "ok")).to_pylist()
    return {r["trailer_id"]: tuple(sorted(r["genres"])) for r in ok if r["genres"]}


@pytest.fixture(scope="module")
def held_out(
    labelled: dict[str, tuple[str, ...]], tmp_path_factory: pytest.TempPathFactory
) -> list[tuple[Path, tuple[str, ...]]]:
    """Videos that are not in the archive, carrying the archive's commonest genre combos."""
    root = tmp_path_factory.mktemp("held_out")
    combos = [c for c, _ in Counter(labelled.values()).most_common(N_HELD_OUT)]
    videos = []
    for i, combo in enumerate(combos):
        path = root / f"held out {i}.mp4"  # a space in the name, as real files have
        write_trailer(path, combo, seed=90_000 + i, n_shots=14)
        videos.append((path, combo))
    return videos


def _auc(relevant: list[bool]) -> float:
    """Probability that a relevant item is ranked above an irrelevant one (0.5 = chance)."""
    rel = np.asarray(relevant, bool)
    below = np.cumsum(~rel[::-1])[::-1]  # (n,) irrelevant items at or after each position
    return float(below[rel].sum() / max(rel.sum() * (~rel).sum(), 1))


def test_similar_to_video_returns_its_genre_combination_first(
    snapshot: Snapshot,
    labelled: dict[str, tuple[str, ...]],
    held_out: list[tuple[Path, tuple[str, ...]]],
) -> None:
    freq = Counter(labelled.values())
    n_index = snapshot.index().ntotal
    hits, chance, aucs = 0, 0.0, []
    for path, combo in held_out:
        table = snapshot.similar_to_video(str(path), k=n_index)  # the whole archive, ranked
        rows = table.to_pylist()
        assert [r["rank"] for r in rows] == list(range(1, n_index + 1))
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0 + 1e-5
        assert path.stem not in {r["trailer_id"] for r in rows}  # it is not in the archive
        query = query_of(table)
        assert query["n_clips"] >= 10 and set(query["predicted_genres"]) <= set(snapshot.genres())
        same = [labelled[r["trailer_id"]] == combo for r in rows if r["trailer_id"] in labelled]
        hits += sum(same[:K])
        chance += K * freq[combo] / len(labelled)  # expected hits among K random trailers
        aucs.append(_auc(same))
    assert hits > chance, f"{hits} of the top {K} share the query's genres; chance {chance:.2f}"
    assert np.mean(aucs) > 0.6, f"same-genre trailers ranked first with AUC {aucs}"


def test_embed_video_matches_the_index_space(
    snapshot: Snapshot, held_out: list[tuple[Path, tuple[str, ...]]]
) -> None:
    video = snapshot.embed_video(str(held_out[0][0]))
    assert video.embedding.shape == (snapshot.index().dim,)
    assert video.embedding.dtype == np.float32 and np.isfinite(video.embedding).all()
    assert video.genre_scores.shape == (len(snapshot.genres()),)
    assert ((video.genre_scores >= 0) & (video.genre_scores <= 1)).all()
    # the search through the module-level helper gives the same neighbours
    again = similar_to_video(str(held_out[0][0]), k=K, out=snapshot.out)
    first = snapshot.similar_to_embedding(video.embedding, K)
    assert again["trailer_id"].to_pylist() == first["trailer_id"].to_pylist()


def test_similar_to_video_refuses_unusable_inputs(snapshot: Snapshot, tmp_path: Path) -> None:
    with pytest.raises(VideoQueryError, match="no such file"):
        snapshot.similar_to_video(str(tmp_path / "missing.mp4"))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(VideoQueryError, match="failed"):
        snapshot.similar_to_video(str(text))
    short = tmp_path / "teaser.mp4"
    write_trailer(short, ["Drama"], seed=3, n_shots=4)
    with pytest.raises(VideoQueryError, match="excluded: .*shots"):
        snapshot.similar_to_video(str(short))


def _copy_snapshot(run: Path, dest: Path) -> Path:
    """A private copy of the latest snapshot (tables + index) under a new output root."""
    name = (run / "LATEST").read_text().strip()
    shutil.copytree(run / "snapshots" / name, dest / "snapshots" / name)
    (dest / "LATEST").write_text(name + "\n")
    return dest / "snapshots" / name


def test_tampered_shard_is_refused(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    snap_dir = _copy_snapshot(run, tmp_path)
    shard = snap_dir / "faiss" / "shard_00000.faiss"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the vectors
    shard.write_bytes(bytes(data))

    snap = Snapshot.open(str(tmp_path))
    dim = json.loads((snap_dir / "faiss" / "manifest.json").read_text())["dim"]
    query = np.ones((1, dim), np.float32)
    with pytest.raises(SnapshotIntegrityError, match=r"shard_00000\.faiss fails its sha256") as e:
        snap.search(query, 3)
    assert isinstance(e.value, IndexIntegrityError) and isinstance(e.value, SnapshotError)

    # the command says so in one line and exits 2, no traceback
    assert mmx_main(["similar", "trailer_0000", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refusing its FAISS index" in err and "shard_00000.faiss" in err


def test_missing_manifest_is_refused(run: Path, tmp_path: Path) -> None:
    snap_dir = _copy_snapshot(run, tmp_path)
    (snap_dir / "faiss" / "manifest.json").unlink()
    with pytest.raises(SnapshotIntegrityError, match="manifest.*missing"):
        Snapshot.open(str(tmp_path)).similar("trailer_0000")


def _table_lines(text: str) -> list[str]:
    """The aligned table printed by a command: header, dashes, rows (all the same width)."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if set(line) <= {"-", " "}) - 1
    table = lines[start:]
    assert len({len(line) for line in table}) == 1, "columns are not aligned"
    return table


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize("command", ["similar", "similar-video", "sql", "subgenres"])
def test_every_query_command(
    command: str,
    as_json: bool,
    run: Path,
    held_out: list[tuple[Path, tuple[str, ...]]],
    capsys: pytest.CaptureFixture,
) -> None:
    args = {
        "similar": ["similar", "trailer_0000", "--k", "3"],
        "similar-video": ["similar-video", str(held_out[0][0]), "--k", "3"],
        "sql": ["sql", SQL],
        "subgenres": ["subgenres"],
    }[command]
    assert mmx_main([*args, "--out", str(run), *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr().out
    if as_json:
        value = json.loads(out)
        rows = value["neighbours"] if command == "similar-video" else value
        if command == "similar-video":
            assert value["query"]["n_clips"] >= 10
    else:
        rows = _table_lines(out)[2:]
        if command == "similar-video":
            assert out.startswith(f"query: {held_out[0][0]}")
    assert rows
    if command.startswith("similar"):
        assert len(rows) == 3


def test_synth_run_and_ablate_commands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert mmx_main(["synth", "--n", "1", "--out", str(tmp_path / "a"), "--seed", "5"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "a" / "labels.csv").exists()
    with pytest.raises(SystemExit) as e:  # `mmx run` is the job (run by the `run` fixture)
        mmx_main(["run", "--help"])
    assert e.value.code == 0 and "--archive" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # `mmx ablate` trains models: tests/test_ablate.py
        mmx_main(["ablate", "--help"])
    assert e.value.code == 0 and "ablat" in capsys.readouterr().out


def test_unknown_snapshot_and_trailer(run: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SnapshotError, match="no complete snapshot"):
        Snapshot.open(str(run), "19700101T000000Z-nope")
    assert mmx_main(["similar-video", "/no/such/video.mp4", "--out", str(run)]) == 2
    assert "no such file" in capsys.readouterr().err


def _readme_recipes() -> dict[int, str]:
    """The SQL blocks of the README's "DuckDB recipes" section, by their number."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### DuckDB recipes", 1)[1].split("\n## ", 1)[0]
    recipes, title = {}, None
    for part in section.split("```"):
        if part.startswith("sql\n") and title is not None:
            recipes[title] = part.removeprefix("sql\n")
        else:
            numbered = re.findall(r"^(\d+)\. ", part, flags=re.MULTILINE)
            title = int(numbered[-1]) if numbered else None
    return recipes


def test_readme_duckdb_recipes_run_on_a_snapshot(run: Path) -> None:
    recipes = _readme_recipes()
    assert sorted(recipes) == list(range(1, len(recipes) + 1)) and len(recipes) >= 5
    snap = Snapshot.open(str(run))
    tables = {n: snap.sql(sql.replace(".mmx/out", str(run))) for n, sql in recipes.items()}
    assert all(t.num_columns >= 2 for t in tables.values())
    subgenres = snap.table("subgenres")
    sizes = tables[4]  # one row per sub-genre, sizes adding up to the ok trailers
    assert sizes.num_rows == subgenres.num_rows
    assert sum(sizes["size"].to_pylist()) == sum(subgenres["size"].to_pylist())
    assert abs(sum(sizes["pct_of_archive"].to_pylist()) - 100) < 0.5
    labelled = snap.sql("SELECT count(*) AS n FROM trailers WHERE status = 'ok' AND len(genres) > 0")
    per_genre = tables[5].to_pydict()  # every labelled genre once, counts within the archive
    assert len(set(per_genre["genre"])) == len(per_genre["genre"])
    assert max(per_genre["labelled"]) <= labelled["n"][0].as_py()
    nightly = tables[6].to_pydict()  # the latest snapshot's sub-genres among every retained one
    latest = [s for s, n in zip(nightly["snapshot"], nightly["subgenre"]) if s == snap.name]
    assert len(latest) == subgenres.num_rows


def test_subgenres_are_named_by_imagenet_concepts(run: Path) -> None:
    from mmx.experts.concepts import imagenet_names

    sub = Snapshot.open(str(run)).subgenres().to_pylist()
    named = [c for r in sub for c in r["top_concepts"]]
    assert named, "no sub-genre of the synthetic archive is named by a concept"
    assert set(named) <= set(imagenet_names())


def test_sql_reads_the_snapshot_and_nothing_else(run: Path, tmp_path: Path) -> None:
    snap = Snapshot.open(str(run))
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    own = snap.sql(f"SELECT count(*) AS n FROM read_parquet('{run}/snapshots/*/trailers.parquet')")
    assert own["n"][0].as_py() >= snap.table("trailers").num_rows  # the output root: readable
    for query in (
        f"SELECT * FROM read_csv('{outside}')",  # any other file
        f"SELECT * FROM read_csv('{run}{'/..' * (len(run.resolve().parts) - 1)}{outside}')",
        f"COPY trailers TO '{tmp_path / 'copy.parquet'}'",
        "SET enable_external_access = true",  # nor can a query turn it back on
        "INSTALL httpfs",
    ):
        with pytest.raises(SnapshotError):
            snap.sql(query)
    assert not (tmp_path / "copy.parquet").exists()


def test_published_vectors_have_a_fixed_size(run: Path) -> None:
    """trailers.embedding / subgenres.centroid are float32[D], genre_scores float32[G]; the
    FAISS index has the same D; mmx sql sees FLOAT[D]."""
    snap = Snapshot.open(str(run))
    trailers, subgenres = snap.table_schema("trailers"), snap.table_schema("subgenres")
    emb, centroid = trailers.field("embedding").type, subgenres.field("centroid").type
    assert pa.types.is_fixed_size_list(emb) and emb.value_type == pa.float32()
    assert centroid == emb and emb.list_size == snap.index().manifest["dim"]
    assert trailers.field("genre_scores").type == pa.list_(pa.float32(), len(snap.genres()))
    kind = snap.sql("SELECT DISTINCT typeof(embedding) AS t FROM trailers "
                    "WHERE embedding IS NOT NULL")["t"].to_pylist()
    assert kind == [f"FLOAT[{emb.list_size}]"]
    failed = snap.table("trailers", ["embedding"], pc.field("status") != "ok")
    assert failed.num_rows and failed["embedding"].null_count == failed.num_rows
