"""How a sweep is going: the ``hpopipe status`` table.

It reads only the Optuna storage, which a running sweep keeps up to date (SQLite
in WAL mode lets a reader in while the sweep writes). The sweep's own progress
line is :mod:`hpopipe.sweep.progress`: no stage imports this module, so editing
the table never marks a stage stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from hpopipe.artifacts import sqlite_url
from hpopipe.errors import HpopipeError
from hpopipe.sweep import lifecycle
from hpopipe.sweep.budget import budget_met, count_finished_states, own
from hpopipe.sweep.journal_file import is_journal
from hpopipe.sweep.progress import best_trial, format_duration, format_value
from hpopipe.sweep.storage import check_study_file, journal_spec, open_storage

log = logging.getLogger(__name__)

_BACKUP_MARK = "_backup-"


@dataclass(frozen=True)
class SweepStatus:
    """A snapshot of one study: trials by state, the best so far, and how fast trials finish."""

    study: str
    direction: str
    counts: dict[str, int]
    best_value: float | None
    best_trial: int | None
    busy_s: float
    n_trials: int | None = None
    state: str = "running"
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    front_size: int | None = None  # multi-objective studies: trials on the Pareto front

    @property
    def finished(self) -> int:
        """Trials that count toward the budget (COMPLETE and PRUNED)."""
        return count_finished_states(self.counts)

    @property
    def rate_per_min(self) -> float | None:
        """Finished trials per minute of time when at least one trial was running."""
        return self.finished / (self.busy_s / 60.0) if self.busy_s > 0 and self.finished else None

    @property
    def eta_s(self) -> float | None:
        """Seconds until ``n_trials`` have finished at the current rate (None when unknown)."""
        rate = self.rate_per_min
        if self.n_trials is None or rate is None:
            return None
        return max(self.n_trials - self.finished, 0) / rate * 60.0


def read_status(
    path: Path | str | optuna.storages.BaseStorage,
    study: str | None = None,
    n_trials: int | None = None,
    now: datetime | None = None,
) -> SweepStatus:
    """Snapshot a study (in a journal or SQLite file, or any storage); without a name, the latest.

    ``now`` (naive local time, as Optuna stores it) closes the interval of a
    trial still running; it defaults to the current time.
    """
    storage = _storage(Path(path)) if isinstance(path, str | Path) else path
    where = str(path) if isinstance(path, str | Path) else "the storage"
    name = study if study is not None else latest_study(storage, where)
    try:
        loaded = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise HpopipeError(f"--study: no study named {name!r} in {where}") from None
    trials = own(loaded.get_trials(deepcopy=False))  # warm-started trials are not this sweep's
    best = best_trial(loaded)
    sweep = lifecycle.sweep_record(loaded)
    state = "pending" if not trials and sweep["state"] == "running" else str(sweep["state"])
    if n_trials is None and isinstance(sweep.get("n_trials"), int):
        n_trials = sweep["n_trials"]
    multi = len(loaded.directions) > 1
    return SweepStatus(
        study=name,
        direction=", ".join(d.name.lower() for d in loaded.directions),
        counts={s.name: sum(t.state == s for t in trials) for s in TrialState},
        best_value=None if best is None else best.value,
        best_trial=None if best is None else best.number,
        busy_s=busy_seconds(trials, now or datetime.now()),
        n_trials=n_trials,
        state=state,
        workers=lifecycle.workers(loaded),
        front_size=len(loaded.best_trials) if multi else None,
    )


def _storage(path: Path) -> optuna.storages.BaseStorage:
    # Checked first: Optuna would create an empty storage file where none exists.
    if not path.is_file():
        raise HpopipeError(f"--storage: {path}: file not found (no sweep has run here yet: dvc repro)")
    if is_journal(path):
        return open_storage(journal_spec(path))
    check_study_file(path)
    try:
        return optuna.storages.RDBStorage(sqlite_url(path))
    except sqlalchemy.exc.DatabaseError as err:
        raise HpopipeError(f"--storage: {path}: not an Optuna SQLite file ({err.orig})") from None


def latest_study(storage: optuna.storages.BaseStorage, path: Path | str) -> str:
    """The study whose trials started last; backups (``<name>_backup-<n>``) only when alone."""
    summaries = optuna.study.get_all_study_summaries(storage)
    if not summaries:
        raise HpopipeError(f"--storage: {path}: holds no study yet")
    originals = [s for s in summaries if _BACKUP_MARK not in s.study_name] or summaries

    def last_start(name: str) -> datetime:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        return max((t.datetime_start for t in trials if t.datetime_start), default=datetime.min)

    # Ties (e.g. no trial started yet) go to the study created last.
    order = {s.study_name: i for i, s in enumerate(summaries)}
    return max(originals, key=lambda s: (last_start(s.study_name), order[s.study_name])).study_name


def busy_seconds(trials: Sequence[FrozenTrial], now: datetime) -> float:
    """Seconds during which at least one trial was running.

    The union of the trials' intervals: a study resumed a week later does not
    count the week, and parallel workers do not count the same second twice.
    """
    spans = sorted(
        (t.datetime_start, t.datetime_complete or now)
        for t in trials
        if t.datetime_start is not None and (t.datetime_complete is not None or t.state == TrialState.RUNNING)
    )
    total, end = 0.0, datetime.min
    for start, stop in spans:
        if stop <= end:
            continue
        total += (stop - max(start, end)).total_seconds()
        end = stop
    return total


def format_status(status: SweepStatus) -> str:
    """The ``hpopipe status`` table: one row per trial state, then best, elapsed, rate and ETA."""
    rows = [("study", f"{status.study} ({status.direction})"), ("state", status.state)]
    rows += [(s.name.lower(), str(status.counts.get(s.name, 0))) for s in TrialState]
    budget = f" of {status.n_trials}" if status.n_trials is not None else ""
    rows.append(("finished", f"{status.finished}{budget} (complete + pruned)"))
    best = format_value(status.best_value)
    if status.front_size is not None:
        rows.append(("pareto front", f"{status.front_size} trials"))
    else:
        rows.append(
            ("best so far", best if status.best_trial is None else f"{best} (trial {status.best_trial})")
        )
    rows.append(("elapsed", f"{format_duration(status.busy_s)} (while trials ran)"))
    rate = status.rate_per_min
    rows.append(("rate", "-" if rate is None else f"{rate:.2f} trials/min"))
    if status.n_trials is not None:
        pending = status.counts.get("RUNNING", 0) + status.counts.get("WAITING", 0)
        done = budget_met(status.finished, status.n_trials) and not pending
        rows.append(("eta", "done" if done else format_duration(status.eta_s)))
    rows += [(f"worker {wid}", _worker_line(rec)) for wid, rec in sorted(status.workers.items())]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def _worker_line(record: dict[str, Any], now: float | None = None) -> str:
    """``last heartbeat 4s ago, trial 7`` (or ``exited``) for one worker."""
    age = format_duration(max((now or time.time()) - float(record.get("heartbeat", 0.0)), 0.0))
    if record.get("state") == "exited":
        return f"exited ({age} ago)"
    trial = record.get("trial")
    return f"last heartbeat {age} ago" + ("" if trial is None else f", trial {trial}")


def list_studies(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """Every study in a storage, with its trial counts and best value (``hpopipe studies``)."""
    rows = []
    for s in optuna.study.get_all_study_summaries(storage, include_best_trial=True):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        best = s.best_trial.value if s.best_trial is not None else None
        rows.append({"name": s.study_name, "trials": s.n_trials, "complete": complete, "best": best})
    return rows
