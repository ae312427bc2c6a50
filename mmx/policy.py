"""When an incremental run trains a new model (and re-clusters) instead of reusing the last one.

A pure decision over what the previous snapshot says about its model (when it was trained, on
how many ok trailers, which genres its head scores) and the configured policy
(``train.retrain_every_days``, ``train.retrain_growth``, ``train.retrain_on_new_genres``). The
pipeline records the decision and its reason in the run report.

Labels that name a genre the reused model does not know (a new genre, a renamed one, a typo)
cannot be published with that model: its scores have no column for it. Such a night trains
anew, whatever the age and growth rules say; with ``train.retrain_on_new_genres`` off it stops
before decoding (:func:`check_genres` raises :class:`UnknownGenres`). Genres the model knows
but the labels no longer name are fine: the model still scores them.
"""

from __future__ import annotations

import calendar
import posixpath
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DAY_S = 86400.0


@dataclass(frozen=True)
class ModelInfo:
    """The model a snapshot uses: where it is, which run trained it, when, on how much, the
    genres its head scores (in score order) and the digest of the labels it was trained on."""

    model_dir: str
    trained_run: str = ""
    trained_at: float | None = None  # unix seconds
    n_ok: int | None = None  # ok trailers of the run that trained it
    genres: tuple[str, ...] | None = None  # () = no genre head; None = not recorded
    labels_digest: str = ""  # mmx.archive.labels_digest of its training labels ("" = unknown)

    def to_dict(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir, "trained_run": self.trained_run,
                "trained_at": self.trained_at, "n_ok": self.n_ok,
                "genres": None if self.genres is None else list(self.genres),
                "labels_digest": self.labels_digest}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelInfo:
        """From a snapshot's ``model.json``; older ones hold only ``model_dir`` (its last part
        is the training run's name, whose timestamp stands in for ``trained_at``), or lack the
        genres and labels digest (None and "": the pipeline reads the genres from the model)."""
        model_dir = str(values["model_dir"])
        run = str(values.get("trained_run") or posixpath.basename(model_dir.rstrip("/\\")))
        at = values.get("trained_at")
        n_ok = values.get("n_ok")
        genres = values.get("genres")
        return cls(model_dir, run, float(at) if at is not None else run_time(run),
                   int(n_ok) if n_ok is not None else None,
                   tuple(str(g) for g in genres) if genres is not None else None,
                   str(values.get("labels_digest") or ""))


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"retrain": self.retrain, "reason": self.reason}


class UnknownGenres(ValueError):
    """The labels name genres the reused model does not know and retraining for them is off:
    the run stops before decoding, having written nothing."""

    def __init__(self, genres: Sequence[str], model_run: str) -> None:
        self.genres = list(genres)
        super().__init__(
            f"the labels name genres the model of run {model_run} does not know: "
            f"{self.genres} (new or renamed), and train.retrain_on_new_genres is off; "
            "run with --retrain (or --train.retrain_on_new_genres=true) to train a model that "
            "knows them, or fix the labels (a typo?) to use only the model's genres"
        )


def unknown_genres(vocab: Sequence[str], model_genres: Sequence[str]) -> list[str]:
    """The genres of the labels' vocabulary ``vocab`` that the model's genre head
    (``model_genres``) does not score, sorted. A model without a genre head (``[]``) scores
    none, so it mis-scores none either: [] (its genre columns stay empty)."""
    if not model_genres:
        return []
    return sorted(set(vocab) - set(model_genres))


def check_genres(unknown: Sequence[str], *, forced: bool, allowed: bool,
                 model_run: str) -> None:
    """Raise :class:`UnknownGenres` when an incremental run reusing the model of
    ``model_run`` meets the ``unknown`` genres and may not retrain for them (not ``forced``
    by ``--retrain``, not ``allowed`` by ``train.retrain_on_new_genres``)."""
    if unknown and not forced and not allowed:
        raise UnknownGenres(unknown, model_run)


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
    unknown: Sequence[str] = (),
) -> RetrainDecision:
    """Train anew, or embed with the previous snapshot's ``model``?

    ``n_ok``: ok trailers of this run. A full run, ``--retrain`` and a first run always train;
    so does an incremental run whose labels name genres the model does not know (``unknown``,
    from :func:`unknown_genres`; :func:`check_genres` has refused the run before when that is
    not allowed). Otherwise an incremental run trains when the model is at least
    ``every_days`` old or the ok trailers grew by at least ``growth`` (a fraction: 0.2 = 20 %)
    since the run that trained it. Rules whose setting is None are off; a rule missing what it
    needs says so in the reason.
    """
    if mode != "incremental":
        return RetrainDecision(True, "full run")
    if forced:
        return RetrainDecision(True, "--retrain given")
    if model is None:
        return RetrainDecision(True, "no previous snapshot")
    if unknown:
        return RetrainDecision(
            True, f"labels name genres the model does not know: {sorted(unknown)} "
            "(new or renamed); training anew"
        )
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
