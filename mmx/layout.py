"""Every path under a job's output root, in one place.

The job writes, ``mmx ablate``, ``mmx report`` and the query API read, and tests inspect the same
folders; they all ask :class:`OutputLayout` instead of joining strings, so a rename cannot drift
between a writer and its readers::

    <out>/LATEST                        name of the newest complete snapshot
    <out>/snapshots/<name>/             a published snapshot (tables, faiss/, metrics.json …)
    <out>/models/<name>/                the model trained by run <name> (checkpoints, result.json)
    <out>/work/PENDING                  name of the run in progress (a killed run resumes it)
    <out>/work/LEASE                    the running job's lease: one writer at a time (mmx.lease)
    <out>/work/<name>/features.parquet/ the features store of run <name> (Parquet parts): every
                                        distinct trailer when it trains, else the new/changed
    <out>/work/<name>/embeddings/       the embeddings of run <name> (Parquet parts)
    <out>/work/<name>/subgenres.parquet each embedded trailer's sub-genre
    <out>/cache/features-<key>/         per-content feature rows (reused across runs)
    <out>/runs/<name>.json              the run report
    <out>/ablation/                     ``mmx ablate``'s default output
"""

from __future__ import annotations

from dataclasses import dataclass

from mmx import storage


@dataclass(frozen=True)
class OutputLayout:
    """The folders and files of one output root ``out`` (local path or s3:// URI)."""

    out: str

    def snapshot(self, name: str) -> str:
        return storage.snapshot_uri(self.out, name)

    def latest(self) -> str | None:
        """URI of the snapshot LATEST names, or None before the first publish."""
        return storage.latest(self.out)

    @property
    def pending(self) -> str:
        return storage.join(self.out, "work", "PENDING")

    def work(self, name: str) -> str:
        return storage.join(self.out, "work", name)

    def features(self, name: str) -> str:
        """The features table run ``name`` trained on (ok trailers only)."""
        return storage.join(self.work(name), "features.parquet")

    def embeddings(self, name: str) -> str:
        """The run's embeddings folder (trailer_id, shard, embedding, genre scores, concepts)."""
        return storage.join(self.work(name), "embeddings")

    def assignments(self, name: str) -> str:
        """Each embedded trailer's sub-genre, as run ``name`` assigned it."""
        return storage.join(self.work(name), "subgenres.parquet")

    def model_dir(self, name: str) -> str:
        return storage.join(self.out, "models", name)

    def cache(self, key: str) -> str:
        return storage.join(self.out, "cache", f"features-{key}")

    def run_report(self, name: str) -> str:
        return storage.join(self.out, "runs", f"{name}.json")

    @property
    def ablation(self) -> str:
        return storage.join(self.out, "ablation")

    def runs_with_features(self) -> list[str]:
        """Names of the runs whose training features are still under ``work/``, oldest first."""
        fs, root = storage.filesystem(storage.join(self.out, "work"))
        found = fs.glob(f"{root}/*/features.parquet")
        return sorted(p.rstrip("/").split("/")[-2] for p in found)


def name_of(snapshot_uri: str) -> str:
    """The snapshot name of ``<out>/snapshots/<name>``."""
    return snapshot_uri.rstrip("/").rsplit("/", 1)[-1]
