"""When an incremental run trains a new model (and re-clusters) instead of reusing the last one.

A pure decision over what the previous snapshot says about its model (when it was trained and
on how many ok trailers) and the configured policy (``train.retrain_every_days``,
``train.retrain_growth``). The pipeline records the decision and its reason in the run report.
"""

from __future__ import annotations

import calendar
import posixpath
import time
from dataclasses import dataclass
from typing import Any

DAY_S = 86400.0


@dataclass(frozen=True)
class ModelInfo:
    """The model a snapshot uses: where it is, which run trained it, when, on how much."""

    model_dir: str
    trained_run: str = ""
    trained_at: float | None = None  # unix seconds
    n_ok: int | None = None  # ok trailers of the run that trained it

    def to_dict(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "trained_run": self.trained_run,
                "trained_at": self.trained_at, "n_ok": self.n_ok}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelInfo:
        """From a snapshot's ``model.json``; older ones hold only ``model_dir`` (its last part
        is the training run's name, whose timestamp stands in for ``trained_at``)."""
        model_dir = str(values["model_dir"])
        run = str(values.get("trained_run") or posixpath.basename(model_dir.rstrip("/\\")))
        at = values.get("trained_at")
        n_ok = values.get("n_ok")
        return cls(model_dir, run, float(at) if at is not None else run_time(run),
                   int(n_ok) if n_ok is not None else None)


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"retrain": self.retrain, "reason": self.reason}


def run_time(name: str) -> float | None:
    """Unix time of a run/snapshot name like ``20261122T031500Z-1a2b3c``, else None."""
    try:
        return float(calendar.timegm(time.strptime(name.split("-", 1)[0], "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def decide_retrain(
    *,
    mode: str,
    forced: bool,
    model: ModelInfo | None,
    n_ok: int,
    now: float,
    every_days: float | None,
    growth: float | None,
) -> RetrainDecision:
    """Train anew, or embed with the previous snapshot's ``model``?

    ``n_ok``: ok trailers of this run. A full run, ``--retrain`` and a first run always train;
    an incremental run trains when the model is at least ``every_days`` old or the ok trailers
    grew by at least ``growth`` (a fraction: 0.2 = 20 %) since the run that trained it.
    Rules whose setting is None are off; a rule missing what it needs says so in the reason.
    """
    if mode != "incremental":
        return RetrainDecision(True, "full run")
    if forced:
        return RetrainDecision(True, "--retrain given")
    if model is None:
        return RetrainDecision(True, "no previous snapshot")
    notes = []
    if every_days is not None:
        if model.trained_at is None:
            notes.append("model age unknown")
        else:
            age = (now - model.trained_at) / DAY_S
            if age >= every_days:
                return RetrainDecision(
                    True, f"model is {age:.1f} days old (train.retrain_every_days={every_days:g})"
                )
            notes.append(f"model {age:.1f} days old < {every_days:g}")
    if growth is not None:
        if not model.n_ok:
            notes.append("training set size unknown")
        else:
            grew = (n_ok - model.n_ok) / model.n_ok
            if grew >= growth:
                return RetrainDecision(
                    True, f"ok trailers grew {model.n_ok} → {n_ok} (+{grew:.0%}, "
                    f"train.retrain_growth={growth:g})"
                )
            notes.append(f"ok trailers {model.n_ok} → {n_ok} (+{grew:.0%}) < +{growth:.0%}")
    detail = "; ".join(notes) if notes else "no retrain policy configured"
    return RetrainDecision(False, f"reusing the model of run {model.trained_run} ({detail})")
