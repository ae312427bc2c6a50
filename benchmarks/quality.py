"""Quality benchmark: is what mmx publishes better than simple baselines on the same features?

    python benchmarks/quality.py                       # 3 seeds × 240 trailers, ~25 min each
    python benchmarks/quality.py --seeds 0 --n 120     # a quicker look

For every seed it (1) writes a synthetic archive with **hidden fine-grained truth**
(``mmx synth --subgenres``: each trailer is a genre combination × one of several content styles
— setting, recurring object, grading, music — that its labels do not tell; noisy labels,
neutral shots, per-trailer nuisance, some trailers unlabelled, plus a teaser and a corrupt
file), (2) withholds the labels of a share (default 30%) of the labelled trailers, (3) runs the
real job (``jobs/index_archive.py`` in a subprocess, default profile unless ``--profile``) on
it, and (4) scores what the job published against the truth it never read, side by side with
baselines built from the same run's features (DESIGN §6):

* genres, on the withheld trailers (scored against their true genres): AU(PRC) micro / macro /
  weighted and F1w at the job's threshold for the published ``genre_scores``, the label
  frequency prior, a logistic-regression probe on mean+std-pooled expert features (C chosen by
  3-fold CV on the job's labelled trailers) and the late fusion (mean) of one such probe per
  expert;
* sub-genres: ARI and AMI of the published ``subgenre`` vs the hidden sub-genre, and of PCA +
  Ward on the pooled features at the same k (and at the true k, for reference);
* retrieval: P@5 same hidden sub-genre (with its ceiling) and P@5 sharing a true genre, by
  cosine, for the published fine embedding, the coarse model's embedding, the pooled features
  and their PCA.

Writes ``benchmarks/results/quality.json``: per seed, mean ± std over seeds, the targets of
issue 10 and whether each is met. Every figure states its ``n``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmx import storage
from mmx.experts.registry import expert_class, kind_of
from mmx.features import pooled
from mmx.stages import cache as features_cache
from mmx.train.metrics import genre_metrics

K = 5  # neighbours scored per trailer
TARGETS = {
    "genre_margin_over_probe": 0.05,  # published AU(PRC) micro − probe's
    "subgenre_ari": 0.6,
    "p5_genre": 0.9,
}


# ------------------------------------------------------------------------------ baselines
def probe_scores(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int = 0
) -> np.ndarray:
    """Logistic-regression probe: standardise, one binary LR per genre, C from {0.001 … 1}
    by 3-fold CV (AU(PRC) micro) on the training rows. Returns scores (n_test, G) float64."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler

    def fit_predict(xa: np.ndarray, ya: np.ndarray, xb: np.ndarray, c: float) -> np.ndarray:
        scaler = StandardScaler().fit(xa)
        xa, xb = scaler.transform(xa), scaler.transform(xb)
        out = np.zeros((len(xb), ya.shape[1]))
        for g in range(ya.shape[1]):
            if ya[:, g].min() == ya[:, g].max():  # one class only: predict its frequency
                out[:, g] = ya[:, g].mean()
                continue
            lr = LogisticRegression(C=c, max_iter=3000)
            out[:, g] = lr.fit(xa, ya[:, g]).predict_proba(xb)[:, 1]
        return out

    grid = (0.001, 0.01, 0.1, 1.0)
    folds = KFold(3, shuffle=True, random_state=seed).split(x_train)
    folds = list(folds)
    best_c, best = grid[0], -1.0
    for c in grid:
        scores = np.zeros_like(y_train, dtype=np.float64)
        for tr, va in folds:
            scores[va] = fit_predict(x_train[tr], y_train[tr], x_train[va], c)
        micro = genre_metrics(y_train, scores)["au_prc_micro"]
        if micro > best:
            best_c, best = c, micro
    return fit_predict(x_train, y_train, x_test, best_c)


def cosine_neighbours(x: np.ndarray, k: int = K) -> np.ndarray:
    """Indices (N, k) of each row's k most cosine-similar other rows."""
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")[:, :k]


def retrieval(x: np.ndarray, groups: np.ndarray, genres: np.ndarray, k: int = K) -> dict:
    """P@k same group and P@k sharing a genre (multi-hot ``genres`` (N, G)) by cosine."""
    nn = cosine_neighbours(x, k)
    same = (groups[nn] == groups[:, None]).mean()
    share = ((genres[nn] * genres[:, None, :]).sum(-1) > 0).mean()
    return {"p5_subgenre": float(same), "p5_genre": float(share), "n": len(x)}


def p5_ceiling(groups: np.ndarray, k: int = K) -> float:
    """The best P@k same group any ranking can reach (a group of m has m − 1 others)."""
    sizes = np.bincount(groups)[groups]
    return float(np.mean(np.minimum(sizes - 1, k) / k))


def standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)


def pca(x: np.ndarray, dims: int = 64, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, len(x) - 1, x.shape[1])
    return PCA(dims, random_state=seed).fit_transform(standardise(x))


def ward(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    return AgglomerativeClustering(n_clusters=max(1, min(k, len(x))), linkage="ward").fit_predict(x)


def cluster_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    return {"ari": float(adjusted_rand_score(truth, pred)),
            "ami": float(adjusted_mutual_info_score(truth, pred)),
            "k": len(np.unique(pred)), "n": len(pred)}


def genre_block(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    m = genre_metrics(y, scores, threshold)
    keep = ("au_prc_micro", "au_prc_macro", "au_prc_weighted", "au_prc_samples", "f1_weighted")
    return {**{k: float(m[k]) for k in keep}, "n": len(y)}


# ------------------------------------------------------------------------------- scoring
def evaluate(
    *,
    ids: list[str],
    pooled_features: dict[str, np.ndarray],
    truth: dict[str, dict],
    given: dict[str, list[str]],
    withheld: set[str],
    vocab: list[str],
    genre_scores: np.ndarray | None,
    subgenres: np.ndarray,
    fine: np.ndarray,
    coarse: np.ndarray | None,
    threshold: float = 0.3,
    seed: int = 0,
    train_ids: set[str] | None = None,
    titles: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Every figure of the benchmark for one run; rows of the arrays follow ``ids`` (the ok
    trailers of the run that have hidden truth). ``train_ids``: the trailers the job's genre
    head learned from (its train split); the probe is then also fitted on those alone.
    ``titles``: the run's per-title expert vectors (name → (N, D + 1), :func:`title_matrix`);
    when given, the baselines over them are added (:func:`title_baselines`)."""
    col = {g: i for i, g in enumerate(vocab)}
    true_y = np.zeros((len(ids), len(vocab)))
    given_y = np.zeros((len(ids), len(vocab)))
    for i, t in enumerate(ids):
        true_y[i, [col[g] for g in truth[t]["true_genres"] if g in col]] = 1
        given_y[i, [col[g] for g in given.get(t, []) if g in col]] = 1
    groups = np.array([truth[t]["subgenre"] for t in ids])
    _, groups = np.unique(groups, return_inverse=True)
    labelled = np.array([bool(given.get(t)) for t in ids])
    test = np.array([t in withheld for t in ids])
    all_pooled = np.concatenate(list(pooled_features.values()), axis=1)
    out: dict[str, Any] = {}

    # genres on the withheld labels
    yt = true_y[test]
    prior = np.broadcast_to(given_y[labelled].mean(0), yt.shape)
    genres = {"prior": genre_block(yt, prior, threshold)}
    if genre_scores is not None:
        genres["published"] = genre_block(yt, genre_scores[test], threshold)
    genres["probe"] = genre_block(
        yt, probe_scores(all_pooled[labelled], given_y[labelled], all_pooled[test], seed),
        threshold)
    if train_ids:  # the same data the network learned from (the probe above sees every label)
        own = np.array([t in train_ids for t in ids]) & labelled
        genres["probe_train_split"] = genre_block(
            yt, probe_scores(all_pooled[own], given_y[own], all_pooled[test], seed), threshold)
        genres["probe_train_split"]["n_train"] = int(own.sum())
    per_expert = {
        name: probe_scores(x[labelled], given_y[labelled], x[test], seed)
        for name, x in pooled_features.items()
    }
    for name, s in per_expert.items():
        genres[f"probe_{name}"] = genre_block(yt, s, threshold)
    genres["late_fusion"] = genre_block(yt, np.mean(list(per_expert.values()), axis=0), threshold)
    out["genres_withheld"] = genres

    # sub-genres
    k = len(np.unique(subgenres))
    k_true = len(np.unique(groups))
    reduced = pca(all_pooled, seed=seed)
    out["subgenres"] = {
        "published": cluster_scores(subgenres, groups),
        "pca_ward_same_k": cluster_scores(ward(reduced, k), groups),
        "pca_ward_true_k": cluster_scores(ward(reduced, k_true), groups),
        "fine_ward_true_k": cluster_scores(ward(fine, k_true), groups),
        "k_true": k_true,
    }

    # retrieval
    ret = {"ceiling_p5_subgenre": p5_ceiling(groups),
           "fine": retrieval(fine, groups, true_y)}
    if coarse is not None:
        ret["coarse"] = retrieval(coarse, groups, true_y)
    ret["pooled"] = retrieval(standardise(all_pooled), groups, true_y)
    ret["pooled_pca"] = retrieval(reduced, groups, true_y)
    out["retrieval"] = ret
    out["n"] = {"ok_with_truth": len(ids), "labelled_given": int(labelled.sum()),
                "withheld": int(test.sum()), "unlabelled": int((~labelled & ~test).sum())}
    if titles:
        title_baselines(out, titles=titles, video=pooled_features, per_expert=per_expert,
                        given_y=given_y, true_y=true_y, labelled=labelled, test=test,
                        groups=groups, k=k, threshold=threshold, seed=seed)
    return out


def title_baselines(
    out: dict[str, Any], *, titles: dict[str, np.ndarray], video: dict[str, np.ndarray],
    per_expert: dict[str, np.ndarray], given_y: np.ndarray, true_y: np.ndarray,
    labelled: np.ndarray, test: np.ndarray, groups: np.ndarray, k: int, threshold: float,
    seed: int,
) -> None:
    """Add to ``out`` the baselines on the run's inputs with the title experts: a probe on the
    title vectors alone, one on each title expert, one on pooled video features + title vectors
    concatenated (the learned model's own inputs), the late fusion of every expert's probe
    (video and title); PCA + Ward and P@5 on pooled video + title vectors."""
    genres = out["genres_withheld"]
    yt = true_y[test]
    title_x = np.concatenate(list(titles.values()), axis=1)
    both = np.concatenate([*video.values(), title_x], axis=1)

    def probe(x: np.ndarray) -> np.ndarray:
        return probe_scores(x[labelled], given_y[labelled], x[test], seed)

    genres["probe_titles"] = genre_block(yt, probe(title_x), threshold)
    title_scores = {name: probe(x) for name, x in titles.items()}
    for name, s in title_scores.items():
        genres[f"probe_{name}"] = genre_block(yt, s, threshold)
    genres["probe_video_titles"] = genre_block(yt, probe(both), threshold)
    fused = np.mean([*per_expert.values(), *title_scores.values()], axis=0)
    genres["late_fusion_video_titles"] = genre_block(yt, fused, threshold)
    reduced = pca(both, seed=seed)
    out["subgenres"]["pca_ward_video_titles_same_k"] = cluster_scores(ward(reduced, k), groups)
    out["subgenres"]["pca_ward_video_titles_true_k"] = cluster_scores(
        ward(reduced, out["subgenres"]["k_true"]), groups)
    out["retrieval"]["pooled_video_titles"] = retrieval(standardise(both), groups, true_y)
    out["retrieval"]["pooled_video_titles_pca"] = retrieval(reduced, groups, true_y)
    out["n"]["with_title"] = {name: int((x[:, -1] > 0).sum()) for name, x in titles.items()}


# --------------------------------------------------------------------------------- a run
def withhold(archive: Path, share: float, seed: int, dest: Path) -> set[str]:
    """Write the labels the job gets (``share`` of the labelled trailers blanked) to ``dest``;
    return the withheld ids."""
    with open(archive / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    labelled = sorted(r["trailer_id"] for r in rows if r["genres"] and
                      r["trailer_id"].startswith("trailer_"))
    rng = np.random.default_rng([seed, 0x77])
    withheld = set(rng.choice(labelled, size=round(share * len(labelled)), replace=False))
    with open(dest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["trailer_id", "genres"])
        for r in rows:
            writer.writerow([r["trailer_id"], "" if r["trailer_id"] in withheld else r["genres"]])
    return withheld


def read_run(out: str) -> dict[str, Any]:
    """What the job published under ``out`` and the features it computed, for scoring."""
    snap = storage.latest(out)
    if snap is None:
        raise RuntimeError(f"{out}: no published snapshot")
    trailers = storage.read_table(storage.join(snap, "trailers.parquet"))
    ok = trailers.filter(pc.equal(trailers["status"], "ok"))
    vocab = storage.read_json(storage.join(snap, "genres.json"))
    fps = ok["fingerprint"].to_pylist()
    where: dict[str, str] = {}  # fingerprint → cache file (a compacted part or a loose row)
    for c in sorted(Path(out, "cache").glob("features-*")):
        where |= features_cache.locate(str(c))
    cached = pa.concat_tables([storage.read_table(f) for f in sorted({where[fp] for fp in fps})])
    features = cached.take(pc.index_in(ok["fingerprint"], value_set=cached["fingerprint"]))
    features = features.set_column(0, "trailer_id", ok["trailer_id"])
    model = storage.read_json(storage.join(snap, "model.json"))
    return {"snapshot": snap, "ok": ok, "vocab": vocab, "features": features,
            "model_dir": model["model_dir"],
            "metrics": storage.read_json(storage.join(snap, "metrics.json"))}


def coarse_embeddings(model_dir: str, features: pa.Table, vocab: list[str]) -> np.ndarray | None:
    """The coarse model's bottleneck embeddings of ``features`` rows (None: no coarse model)."""
    from mmx.train.data import trailer_set_from_table
    from mmx.train.loop import load_model, predict

    uri = storage.join(model_dir, "coarse")
    if not storage.exists(storage.join(uri, "meta.json")):
        return None
    model, _ = load_model(uri)
    return predict(model, trailer_set_from_table(features, {}, vocab), 64).embeddings


def _vectors(column: pa.ChunkedArray) -> np.ndarray:
    n = len(column)
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return flat.reshape(n, -1).astype(np.float32) if n else np.zeros((0, 0), np.float32)


def title_matrix(store: pa.Table, ids: list[str], name: str) -> np.ndarray:
    """The title expert ``name``'s vectors of ``ids`` from a features store: (N, D + 1) float32,
    the vector (zeros where the title lacks the expert's input: masked) and a last column 1
    where it has it, 0 where not."""
    at = pc.index_in(pa.array(ids, pa.string()), value_set=store["trailer_id"])
    column = store[name].take(at)
    present = column.is_valid().to_numpy(zero_copy_only=False)
    dim = expert_class(name).dim
    out = np.zeros((len(ids), dim + 1), np.float32)
    if present.any():
        out[present, :dim] = _vectors(column.filter(pa.array(present)))
        out[present, dim] = 1
    return out


def read_store(out: str, snapshot: str) -> pa.Table:
    """The features store (``work/<run>/features.parquet``) of the run that published
    ``snapshot``: the video experts' features and the title experts' vectors the job trained
    on."""
    name = snapshot.rstrip("/").rsplit("/", 1)[-1]
    store = storage.join(out, "work", name, "features.parquet")
    if not storage.exists(store):
        raise RuntimeError(f"{store}: the features store of run {name} is gone")
    return storage.read_table(store)


def title_experts(store: pa.Table) -> list[str]:
    """The per-title expert columns of a features store (none without a sidecar)."""
    return [c for c in store.column_names if kind_of(c) == "title"]


def with_titles(features: pa.Table, store: pa.Table, names: list[str]) -> pa.Table:
    """``features`` (video experts' rows) with the store's title columns ``names`` joined on
    trailer_id (what the model was trained on)."""
    at = pc.index_in(features["trailer_id"], value_set=store["trailer_id"])
    for name in names:
        features = features.append_column(store.schema.field(name), store[name].take(at))
    return features


def clean_out(out: Path, keep_cache: bool) -> None:
    """Remove the job's output ``out``; with ``keep_cache`` keep its caches (ingest, title
    vectors) and drop everything published."""
    if out.exists() and not keep_cache:
        shutil.rmtree(out)
    elif out.exists():
        for sub in ("snapshots", "models", "work", "runs", "LATEST"):
            p = out / sub
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def run_job(args: argparse.Namespace, archive: Path, labels: Path, out: Path,
            extra: tuple[str, ...] = ()) -> float:
    """Run the real job on ``archive`` with ``labels`` into ``out`` (``extra``: more job
    arguments); return its seconds."""
    cmd = [sys.executable, str(ROOT / "jobs" / "index_archive.py"), "--archive", str(archive),
           "--labels", str(labels), "--out", str(out), *extra, *args.job_args]
    if args.profile:
        cmd += ["--profile", args.profile]
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def score_run(out: Path, archive: Path, labels: Path, withheld: set[str], seed: int,
              titles: bool = False) -> dict[str, Any]:
    """Score what the job published under ``out`` against ``archive``'s hidden truth.
    ``titles``: also read the title experts' vectors the job trained on and add the baselines
    over them."""
    from mmx.train.ray_trainer import read_splits

    run = read_run(str(out))
    truth = json.loads((archive / "truth.json").read_text())["trailers"]
    given = {}
    with open(labels, newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            given[r["trailer_id"]] = [g for g in r["genres"].split("|") if g]
    ok = run["ok"]
    keep = [i for i, t in enumerate(ok["trailer_id"].to_pylist()) if t in truth]
    ok = ok.take(keep)
    features = run["features"].take(keep)
    ids = ok["trailer_id"].to_pylist()
    has_scores = ok["genre_scores"].null_count < len(ids)
    title_x, model_features = None, features
    if titles:
        store = read_store(str(out), run["snapshot"])
        names = title_experts(store)
        title_x = {name: title_matrix(store, ids, name) for name in names}
        model_features = with_titles(features, store, names)
    result = evaluate(
        ids=ids,
        pooled_features=pooled(features),
        truth=truth,
        given=given,
        withheld=withheld,
        vocab=run["vocab"],
        genre_scores=_vectors(ok["genre_scores"]) if has_scores else None,
        subgenres=np.asarray(ok["subgenre"].to_numpy(zero_copy_only=False)),
        fine=_vectors(ok["embedding"]),
        coarse=coarse_embeddings(run["model_dir"], model_features, run["vocab"]),
        threshold=0.3,
        seed=seed,
        train_ids={t for t, split in read_splits(run["model_dir"]).items() if split == "train"},
        titles=title_x,
    )
    metrics = run["metrics"]
    result["job"] = {
        "counts": metrics.get("counts"), "timings_s": metrics.get("timings_s"),
        "test_split": {k: metrics.get("test", {}).get(k) for k in ("au_prc_micro", "n")},
    }
    if titles:
        result["job"]["metadata"] = metrics.get("metadata")
    return result


def run_seed(args: argparse.Namespace, seed: int) -> tuple[dict[str, Any], dict | None]:
    """The trailer-only run of ``seed`` scored, and with ``--with-metadata`` the run on the same
    archive with its sidecar scored (else None)."""
    from mmx.synth import generate_subgenre_archive

    work = Path(args.workdir)
    archive = work / f"archive-n{args.n}-s{seed}"
    t0 = time.perf_counter()
    generate_subgenre_archive(archive, n=args.n, seed=seed, workers=args.workers, **args.synth)
    synth_s = time.perf_counter() - t0
    labels = work / f"labels-n{args.n}-s{seed}.csv"
    withheld = withhold(archive, args.withheld, seed, labels)
    out = work / f"out-n{args.n}-s{seed}-{args.profile or 'default'}"
    clean_out(out, args.keep_cache)
    job_s = run_job(args, archive, labels, out)
    result = score_run(out, archive, labels, withheld, seed)
    result["job"] = {"seconds": round(job_s, 1), "synth_seconds": round(synth_s, 1),
                     **result["job"]}
    if not args.with_metadata:
        return result, None
    return result, run_seed_with_metadata(args, seed, archive, labels, withheld, out)


# ----------------------------------------------------------------------- with metadata
def archive_with_metadata(args: argparse.Namespace, seed: int, archive: Path) -> Path:
    """A copy of ``archive`` with the synthetic sidecar (``metadata.csv``, ``posters/``) added
    (:func:`mmx.synth.write_metadata`); its videos, labels and truth are the original's,
    byte for byte (checked), so the job's features of the trailers are the same."""
    from mmx.synth import generate_subgenre_archive

    dest = archive.with_name(archive.name + "-meta")
    same = [f for f in ("truth.json", "labels.csv")
            if (dest / f).exists() and (dest / f).read_bytes() == (archive / f).read_bytes()]
    if len(same) < 2:  # missing, or a copy of another archive: copy anew
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(archive, dest, ignore=shutil.ignore_patterns("metadata.*", "posters"))
    t0 = time.perf_counter()
    generate_subgenre_archive(dest, n=args.n, seed=seed, workers=args.workers, metadata=True,
                              **args.synth)
    print(f"sidecar written in {time.perf_counter() - t0:.1f} s: {dest / 'metadata.csv'}",
          flush=True)
    for f in ("truth.json", "labels.csv"):
        if (dest / f).read_bytes() != (archive / f).read_bytes():
            raise RuntimeError(f"{dest / f} differs from {archive / f}: the sidecar changed it")
    return dest


def seed_feature_cache(src: Path, dest: Path) -> list[str]:
    """Copy the video feature caches (``cache/features-<key>``) of the trailer-only run ``src``
    into ``dest``'s, where ``dest`` has none under that key: the same trailers' bytes and the same
    settings give the same key and fingerprints, so the run with the sidecar decodes nothing
    (its title vectors are computed by the job). Returns the caches copied."""
    copied = []
    for cache in sorted((src / "cache").glob("features-*")):
        target = dest / "cache" / cache.name
        if not target.exists():
            shutil.copytree(cache, target)
            copied.append(cache.name)
    return copied


def run_seed_with_metadata(args: argparse.Namespace, seed: int, archive: Path, labels: Path,
                           withheld: set[str], trailer_only_out: Path) -> dict[str, Any]:
    """The job on ``archive`` + its synthetic sidecar, same labels withheld, scored with the
    same functions plus the baselines over the title experts' vectors; then the same once per
    ``--meta-variant`` (more job arguments), under ``result["variants"][name]``."""
    meta_archive = archive_with_metadata(args, seed, archive)
    result = _meta_run(args, seed, meta_archive, labels, withheld, trailer_only_out, "-meta", ())
    if args.meta_variant:
        result["variants"] = {
            name: _meta_run(args, seed, meta_archive, labels, withheld, trailer_only_out,
                            f"-meta-{name}", job_args)
            for name, job_args in args.meta_variant.items()}
    return result


def _meta_run(args: argparse.Namespace, seed: int, meta_archive: Path, labels: Path,
              withheld: set[str], trailer_only_out: Path, suffix: str,
              job_args: tuple[str, ...]) -> dict[str, Any]:
    out = trailer_only_out.with_name(trailer_only_out.name + suffix)
    clean_out(out, args.keep_cache)
    copied = seed_feature_cache(trailer_only_out, out)
    print(f"feature cache for {out.name}: {copied or 'already there'}", flush=True)
    job_s = run_job(args, meta_archive, labels, out, extra=(with_title_experts(), *job_args))
    result = score_run(out, meta_archive, labels, withheld, seed, titles=True)
    result["job"] = {"seconds": round(job_s, 1), "feature_cache_copied": copied,
                     "job_args": list(job_args), **result["job"]}
    return result


def with_title_experts() -> str:
    """The job argument that lists the title experts beside the video ones: they are on by
    default, named anyway so the run with metadata means the same whatever the defaults."""
    from mmx.config import TITLE_EXPERTS, ExpertsConfig

    video = [n for n in ExpertsConfig().names if n not in TITLE_EXPERTS]
    return f"--experts.names=[{','.join((*video, *TITLE_EXPERTS))}]"


SIDE_BY_SIDE = {  # figure → where it is in a seed's result
    **{f"withheld_au_prc_{a}": ("genres_withheld", "published", f"au_prc_{a}")
       for a in ("micro", "macro", "weighted", "samples")},
    "withheld_f1_weighted": ("genres_withheld", "published", "f1_weighted"),
    "subgenre_ari": ("subgenres", "published", "ari"),
    "subgenre_ami": ("subgenres", "published", "ami"),
    "p5_subgenre_fine": ("retrieval", "fine", "p5_subgenre"),
    "p5_genre_fine": ("retrieval", "fine", "p5_genre"),
}


def _at(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def side_by_side(trailer_only: dict[str, Any], with_metadata: dict[str, Any]) -> dict:
    """Each headline figure, trailer-only vs trailer + metadata, with its n and the difference."""
    out = {}
    for figure, path in SIDE_BY_SIDE.items():
        a, b = _at(trailer_only, path), _at(with_metadata, path)
        if a is None or b is None:
            continue
        out[figure] = {"trailer_only": a, "with_metadata": b, "delta": b - a,
                       "n": _at(with_metadata, (*path[:-1], "n"))}
    return out


REPRODUCED = ("genres_withheld", "subgenres", "retrieval", "n")  # blocks compared
TOLERANCE = 1e-6


def _leaves(tree: Any, prefix: str = "") -> dict[str, float]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, f"{prefix}.{key}").items()}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix.lstrip("."): float(tree)}
    return {}


def reproduces(reference: Path, per_seed: dict[str, dict], n: int) -> dict[str, Any]:
    """Whether this code's trailer-only figures equal those of ``reference`` (a quality.json of
    an earlier run on the same archives) for every seed both have: every number of the blocks
    :data:`REPRODUCED` both hold, to :data:`TOLERANCE`."""
    ref = json.loads(reference.read_text())
    if ref.get("archive", {}).get("n") != n:
        return {"reference": str(reference), "met": False,
                "why": f"reference archive n={ref.get('archive', {}).get('n')}, this run n={n}"}
    seeds = sorted(set(per_seed) & set(ref.get("per_seed", {})))
    compared, worst, differ = 0, 0.0, []
    for seed in seeds:
        for block in REPRODUCED:
            mine = _leaves(per_seed[seed].get(block, {}), block)
            theirs = _leaves(ref["per_seed"][seed].get(block, {}), block)
            for key in sorted(set(mine) & set(theirs)):
                compared += 1
                diff = abs(mine[key] - theirs[key])
                worst = max(worst, diff)
                if diff > TOLERANCE:
                    differ.append({"seed": seed, "figure": key, "now": mine[key],
                                   "reference": theirs[key]})
    headline = {seed: {fig: {"now": _at(per_seed[seed], path),
                             "reference": _at(ref["per_seed"][seed], path)}
                       for fig, path in SIDE_BY_SIDE.items()
                       if _at(ref["per_seed"][seed], path) is not None}
                for seed in seeds}
    return {"reference": str(reference), "reference_command": ref.get("command"),
            "seeds": seeds, "figures_compared": compared, "tolerance": TOLERANCE,
            "max_abs_diff": worst, "differ": differ[:20], "headline": headline,
            "met": bool(seeds) and compared > 0 and not differ}


def _metadata_targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Issue 15's targets on the summary of the side-by-side figures (means over seeds), and
    whether the learned model with metadata beats the linear probes on its own inputs."""
    sbs = summary["side_by_side"]
    out = {}
    for figure in ("withheld_au_prc_micro", "subgenre_ari"):
        a = sbs[figure]["trailer_only"]["mean"]
        b = sbs[figure]["with_metadata"]["mean"]
        out[f"metadata_beats_trailer_only_{figure}"] = {
            "trailer_only": a, "with_metadata": b, "met": b > a}
    g = summary["with_metadata"]["genres_withheld"]
    pub = g["published"]["au_prc_micro"]["mean"]
    for probe in ("probe_video_titles", "probe_titles", "late_fusion_video_titles"):
        if probe in g:
            other = g[probe]["au_prc_micro"]["mean"]
            out[f"published_beats_{probe}_au_prc_micro"] = {
                "published": pub, probe: other, "met": pub > other}
    return out


def with_metadata_block(args: argparse.Namespace, seeds: list[int], argv: list[str],
                        per_seed: dict[str, dict], meta: dict[str, dict]) -> dict[str, Any]:
    """The ``with_metadata`` block of quality.json: per seed, the trailer-only and the
    trailer + metadata figures side by side and the run with metadata in full; their summary
    over seeds; issue 15's targets; the trailer-only reproduction check."""
    variants = {s: meta[s].pop("variants", {}) for s in meta}
    rows = {s: {"side_by_side": side_by_side(per_seed[s], meta[s]),
                "with_metadata": meta[s]} for s in meta}
    summary = _summary(list(rows.values()))
    block: dict[str, Any] = {
        "command": "python benchmarks/quality.py " + " ".join(argv),
        "seeds": seeds,
        "archive": {"n": args.n, "withheld_share": args.withheld,
                    "generator": "mmx synth --subgenres, then mmx.synth.write_metadata on a copy",
                    "synth": args.synth},
        "targets": _metadata_targets(summary),
    }
    if args.reference:
        check = reproduces(Path(args.reference), per_seed, args.n)
        block["targets"]["trailer_only_unchanged_without_sidecar"] = check
    block["summary"] = summary
    block["per_seed"] = rows
    if args.meta_variant:
        block["variants"] = {name: _variant_block(name, list(job_args), meta, variants)
                             for name, job_args in args.meta_variant.items()}
    return block


def _variant_block(name: str, job_args: list[str], meta: dict[str, dict],
                   variants: dict[str, dict]) -> dict[str, Any]:
    """A ``--meta-variant``'s figures beside the default run with metadata, per seed and
    summarised: same archives, same withheld labels, same feature cache."""
    rows = {s: {"side_by_side": _renamed(side_by_side(meta[s], variants[s][name]), name),
                "run": variants[s][name]} for s in meta if name in variants[s]}
    summary = _summary([{"side_by_side": r["side_by_side"]} for r in rows.values()])
    better = {figure: {"default": v["with_metadata"]["mean"], name: v[name]["mean"],
                       "better_on_seeds": sum(rows[s]["side_by_side"][figure]["delta"] > 0
                                              for s in rows),
                       "seeds": len(rows)}
              for figure, v in summary["side_by_side"].items()}
    return {"job_args": job_args, "vs_default": better, "summary": summary, "per_seed": rows}


def _renamed(sbs: dict[str, Any], name: str) -> dict[str, Any]:
    """side_by_side(default, variant) with its columns named for what they are."""
    return {figure: {"with_metadata": v["trailer_only"], name: v["with_metadata"],
                     "delta": v["delta"], "n": v["n"]} for figure, v in sbs.items()}


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every number in the per-seed results (same structure)."""
    def walk(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {k: walk([v[k] for v in values if k in v]) for k in first}
        if isinstance(first, (int, float)) and not isinstance(first, bool):
            arr = np.asarray(values, dtype=np.float64)
            return {"mean": round(float(arr.mean()), 4), "std": round(float(arr.std()), 4)}
        return first
    return walk(per_seed)


def _targets(summary: dict[str, Any]) -> dict[str, Any]:
    g = summary["genres_withheld"]
    r = summary["retrieval"]
    s = summary["subgenres"]
    out: dict[str, Any] = {}
    if "published" in g:
        pub = g["published"]["au_prc_micro"]["mean"]
        out["genres_beat_probe_by_0.05"] = {
            "published": pub, "probe": g["probe"]["au_prc_micro"]["mean"],
            "met": pub >= g["probe"]["au_prc_micro"]["mean"] + TARGETS["genre_margin_over_probe"]}
        out["genres_at_least_late_fusion"] = {
            "published": pub, "late_fusion": g["late_fusion"]["au_prc_micro"]["mean"],
            "met": pub >= g["late_fusion"]["au_prc_micro"]["mean"]}
    fine = r["fine"]["p5_subgenre"]["mean"]
    others = {k: r[k]["p5_subgenre"]["mean"] for k in ("coarse", "pooled", "pooled_pca") if k in r}
    out["fine_beats_coarse_and_pooled_p5_subgenre"] = {
        "fine": fine, **others, "met": all(fine > v for v in others.values())}
    ari = s["published"]["ari"]["mean"]
    out["subgenre_ari_0.6"] = {"published": ari, "met": ari >= TARGETS["subgenre_ari"]}
    p5g = r["fine"]["p5_genre"]["mean"]
    out["p5_genre_0.9"] = {"fine": p5g, "met": p5g >= TARGETS["p5_genre"]}
    return out


def _knob(text: str) -> tuple[str, Any]:
    """``key=value`` of ``--synth``: the value parsed as JSON (numbers, booleans), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--synth expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _variant(text: str) -> tuple[str, tuple[str, ...]]:
    """``name=--a=1 --b=2`` of ``--meta-variant``: its name and job arguments."""
    name, sep, rest = text.partition("=")
    if not sep or not name.isidentifier() or not rest.split():
        raise SystemExit(f"--meta-variant expects NAME=JOB_ARG [JOB_ARG ...], got {text!r}")
    return name, tuple(rest.split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="archive seeds, comma-separated")
    p.add_argument("--n", type=int, default=240, help="trailers per archive")
    p.add_argument("--withheld", type=float, default=0.3, help="share of labels withheld")
    p.add_argument("--profile", default="", help="job profile (default: the job's default)")
    p.add_argument("--workdir", default=str(ROOT / ".mmx" / "bench" / "quality"))
    p.add_argument("--workers", type=int, default=2, help="processes writing the archive")
    p.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE",
                   help="a generate_subgenre_archive knob, e.g. --synth label_noise=0.3 "
                   "(repeatable; values parsed as JSON, else kept as text)")
    p.add_argument("--keep-cache", action="store_true",
                   help="reuse the job's feature cache from an earlier run (skip decoding)")
    p.add_argument("--with-metadata", action="store_true",
                   help="also run the job on a copy of each archive with its synthetic metadata "
                   "sidecar and write a with_metadata block (trailer-only vs trailer + metadata)")
    p.add_argument("--meta-variant", action="append", default=[], metavar="NAME=JOB_ARG[ JOB_ARG]",
                   help="with --with-metadata: one more run with metadata per seed with these "
                   "job arguments, scored beside the default one, e.g. "
                   "--meta-variant 'xm=--train.contrastive_title_weight=1' (repeatable)")
    p.add_argument("--reference", default="", metavar="QUALITY_JSON",
                   help="an earlier quality.json whose trailer-only figures this run must "
                   "reproduce (the check is in the with_metadata block's targets)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    args, job_args = p.parse_known_args(argv)
    args.job_args = job_args  # anything else goes to the job, e.g. --train.seed=1
    args.synth = dict(_knob(kv) for kv in args.synth)
    args.meta_variant = dict(_variant(v) for v in args.meta_variant)
    if args.meta_variant and not args.with_metadata:
        raise SystemExit("--meta-variant needs --with-metadata")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    per_seed, meta = {}, {}
    for seed in seeds:
        per_seed[str(seed)], with_meta = run_seed(args, seed)
        print(json.dumps(per_seed[str(seed)], indent=1), flush=True)
        if with_meta is not None:
            meta[str(seed)] = with_meta
            print(json.dumps(with_meta, indent=1), flush=True)
    summary = _summary(list(per_seed.values()))
    result = {
        "command": "python benchmarks/quality.py " + " ".join(argv or sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "archive": {"n": args.n, "withheld_share": args.withheld,
                    "generator": "mmx synth --subgenres", "synth": args.synth},
        "seeds": seeds,
        "targets": _targets(summary),
        "summary": summary,
        "per_seed": per_seed,
    }
    if args.with_metadata:
        argv_used = argv if argv is not None else sys.argv[1:]
        result["with_metadata"] = with_metadata_block(args, seeds, argv_used, per_seed, meta)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["targets"], indent=1))
    if args.with_metadata:
        print(json.dumps(result["with_metadata"]["targets"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
