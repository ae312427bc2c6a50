"""What a run tells its operator: the one-screen summary and ``<out>/runs/<name>.json``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mmx import schema, storage
from mmx.config import RunConfig
from mmx.errors import TRANSIENT
from mmx.layout import OutputLayout


@dataclass
class RunSummary:
    """What a run did: where the snapshot is, counts per status, timings, headline metric."""

    out: str
    snapshot: str
    counts: dict[str, int]
    timings_s: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    published: bool = True
    model: str = ""  # trained anew or reused, and why (mmx.policy)
    relabelled: int = 0  # trailers whose labels changed since the latest snapshot

    def render(self) -> str:
        """A one-screen, human-readable summary."""
        if not self.published:
            return f"nothing changed: LATEST still names {self.snapshot}"
        lines = [f"snapshot: {self.snapshot}"]
        total = sum(self.counts.values())
        counts = ", ".join(f"{k} {self.counts.get(k, 0)}" for k in schema.STATUSES)
        lines.append(f"trailers: {total} ({counts})")
        groups = group_reasons(self.reasons)
        for reason, ids in groups[:8]:
            example = ids[0] + (f" and {len(ids) - 1} more" if len(ids) > 1 else "")
            lines.append(f"  {len(ids):>5} × {reason} (e.g. {example})")
        if len(groups) > 8:
            rest = sum(len(ids) for _, ids in groups[8:])
            lines.append(f"  … {rest} more in {len(groups) - 8} other groups (see the trailers "
                         "table)")
        if n_transient := len(transient_ids(self.reasons)):
            lines.append(f"  {n_transient} of the failures are transient (storage, memory): "
                         "not cached, the next run decodes them again")
        test = self.metrics.get("test", {})
        genre_model = self.metrics.get("genre_model", {})
        if genre_model and not genre_model.get("trained", True):
            lines.append(f"genre model: none ({genre_model.get('reason', '')}); genre columns "
                         "are empty, embeddings are self-supervised")
        if test:
            ci = test.get("ci95", {}).get("au_prc_micro")
            lines.append(
                "test split ({} trailers): AU(PRC) micro {:.3f}{} (label-frequency baseline "
                "{:.3f}), weighted {:.3f}, F1w {:.3f}, Pw {:.3f}, Rw {:.3f}".format(
                    test.get("n", 0),
                    test.get("au_prc_micro", float("nan")),
                    f" [95% CI {ci[0]:.2f}–{ci[1]:.2f}]" if ci else "",
                    self.metrics.get("baseline", {}).get("au_prc_micro", float("nan")),
                    test.get("au_prc_weighted", float("nan")),
                    test.get("f1_weighted", float("nan")),
                    test.get("precision_weighted", float("nan")),
                    test.get("recall_weighted", float("nan")),
                )
            )
        sub = self.metrics.get("subgenres") or {}
        if sub:
            sizes = sub.get("sizes", {})
            lines.append(f"sub-genres: {sub.get('k')} ({sub.get('rule')})"
                         + (f"; sizes {sizes['min']}–{sizes['max']}, median {sizes['median']:g}"
                            if sizes else ""))
            st = sub.get("stability") or {}
            if st.get("n"):
                lines.append(f"sub-genre ids: {st['kept_share']:.0%} of {st['n']} trailers kept "
                             f"theirs (ARI {st['ari']:.2f}; {st['matched']} matched, {st['new']} "
                             f"new, {st['retired']} retired)")
        idx = self.metrics.get("index") or {}
        if idx:
            lines.append(f"index: recall@10 {idx['recall_at_10']:.3f} ({idx['kind']}"
                         + (f", nprobe {idx['nprobe']}; "
                            + (f"nprobe {idx['nprobe_for_target']}" if idx["nprobe_for_target"]
                               else "no nprobe") + f" reaches {idx['recall_target']}"
                            if idx.get("nprobe") else "")
                         + ")")
        sil = self.metrics.get("silhouette") or []
        if sil:
            lines.append(f"genre silhouette: coarse {sil[0]:.3f} → fine {sil[-1]:.3f}")
        if self.model:
            lines.append(f"model: {self.model}")
        if self.relabelled:
            lines.append(f"labels: changed for {self.relabelled} trailers since the latest "
                         "snapshot (their genres, split and suggested genres republished)")
        lines.append("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings_s.items()))
        lines.append(f"total: {sum(self.timings_s.values()):.1f} s")
        return "\n".join(lines)


def write_report(
    cfg: RunConfig, name: str, summary: RunSummary, changes: dict[str, list[str]],
    decoded: list[str], published: bool, retrain: dict[str, Any] | None = None,
    fingerprints: dict[str, int] | None = None, labels: dict[str, Any] | None = None,
) -> None:
    """``<out>/runs/<name>.json``: what changed (files and labels), what was decoded, counts,
    timings."""
    ingest_s = summary.timings_s.get("ingest", 0.0)
    report = {
        "run": name,
        "mode": cfg.mode,
        "published": published,
        "snapshot": summary.snapshot,
        "counts": summary.counts,
        "changes": {k: len(v) for k, v in changes.items()},
        # files whose bytes were read to hash them / whose fingerprint was reused because
        # their location, size and version tag were unchanged
        "fingerprints": fingerprints,
        "changed_ids": {k: v for k, v in changes.items() if k != "unchanged"},
        "decoded": decoded,
        "n_decoded": len(decoded),
        "timings_s": summary.timings_s,
        "throughput_trailers_per_s": round(len(decoded) / ingest_s, 3) if ingest_s else None,
        "reasons": summary.reasons,
        # the same, grouped by wording (numbers masked): [{"reason", "count", "ids"}]
        "reason_groups": [{"reason": r, "count": len(ids), "ids": ids}
                          for r, ids in group_reasons(summary.reasons)],
        # failed for a transient reason (storage, credentials, memory): not cached, so the next
        # run decodes them again
        "transient_failures": {"count": len(transient := transient_ids(summary.reasons)),
                               "ids": transient},
        "retrain": retrain,  # {"retrain": bool, "reason": str}; None when nothing was published
        # the labels' digest and the latest snapshot's, the trailers whose labels changed since
        # it, genres the reused model did not know
        "labels": labels,
    }
    storage.write_json(OutputLayout(cfg.out).run_report(name), report)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def group_reasons(reasons: dict[str, str]) -> list[tuple[str, list[str]]]:
    """Group ``reasons`` (id → "status: reason") by their wording, numbers masked as ``#``
    ("excluded: 6 shots < 10" and "excluded: 4 shots < 10" are one group): [(reason, ids)],
    largest group first, ids sorted."""
    groups: dict[str, list[str]] = {}
    for tid, reason in sorted(reasons.items()):
        groups.setdefault(_NUMBER.sub("#", reason), []).append(tid)
    return sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def transient_ids(reasons: dict[str, str]) -> list[str]:
    """The trailers of ``reasons`` (id → "status: reason") that failed for a transient reason."""
    return sorted(t for t, r in reasons.items() if r.startswith("failed: " + TRANSIENT))


def counts(status: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Trailers per status (every status named, zeros included)."""
    found = {r["values"]: r["counts"] for r in pc.value_counts(status).to_pylist()}
    return {s: int(found.get(s, 0)) for s in schema.STATUSES}
