"""The Optuna study: its identity, storage, sampler and pruner, the sweep, and its exports.

The study is the source of truth for trials; ``trials.csv`` and
``best_trials.json`` are exports of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from sklearn.model_selection import train_test_split

from hpopipe import checkpoints, objectives, pareto, space
from hpopipe.artifacts import sqlite_url
from hpopipe.config import Params
from hpopipe.data import to_arrays
from hpopipe.errors import HpopipeError
from hpopipe.hooks import Callback, after_trial_hooks
from hpopipe.models import resolve_factory
from hpopipe.recovery import (
    INTERRUPTED,
    mark_interrupted,
    sampler_position,
    start_fresh,
)
from hpopipe.status import ProgressReporter
from hpopipe.strategies import make_pruner, make_sampler, pruning_steps
from hpopipe.tracking import NullTracker, git_commit
from hpopipe.train import FitResult, Task, TrainingInterrupted, fit, task_of

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed for a sub-task (a trial, a CV fold) of a seeded run."""
    blob = json.dumps([seed, *parts], default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def study_name(params: Params, data_fingerprint: str) -> str:
    """``<model>-<8 hex>`` over everything that determines the trials.

    ``n_trials`` and ``timeout`` are left out on purpose: raising the budget
    extends the same study instead of starting a new one.
    """
    identity = {
        "data": data_fingerprint,
        "model": params.model.model_dump(mode="json"),
        "space": {k: v.model_dump(mode="json") for k, v in params.search_space.items()},
        "sampler": params.hpo.sampler.model_dump(mode="json"),
        "pruner": params.hpo.pruner.model_dump(mode="json"),
        "metric": params.hpo.metric,
        "train": params.train.model_dump(mode="json", exclude={"device"}),
        "val_size": params.data.val_size,
        "seed": params.seed,
    }
    if params.hpo.metrics is not None:  # only then: single-objective study names stay as they were
        identity["metrics"] = list(params.hpo.metrics)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{checkpoints.safe_name(params.model.label)}-{digest}"


def sqlite_storage(path: Path) -> optuna.storages.RDBStorage:
    """SQLite in WAL mode with normal syncing: about 10x cheaper commits per reported epoch.

    WAL survives a killed process (what crash recovery is about); it can lose
    the last commits only if the operating system itself crashes.
    """
    storage = optuna.storages.RDBStorage(sqlite_url(path))

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # reconnect so the pragmas apply to every connection
    return storage


def open_study(params: Params, name: str, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it when a run with the same identity exists."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(params),
        pruner=make_pruner(params),
        load_if_exists=True,
        **pareto.directions_kwarg(params),
    )
    pareto.name_objectives(study, params)
    return study


def reconcile(study: optuna.Study) -> int:
    """Fail trials left RUNNING by a killed process and queue their params again.

    With one worker, a RUNNING trial at start-up can only be a leftover of a
    crash; re-enqueuing the same parameters lets the retry resume from the
    dead trial's checkpoint.
    """
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        mark_interrupted(study, trial, "interrupted (the process died)")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        log.warning("trial %d was left RUNNING by a dead process: failed it and queued a retry", trial.number)
    return len(stale)


@dataclass
class SweepData:
    """The training split of the sweep, divided once into fit and validation rows."""

    fit: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    task: Task


def split_validation(x: np.ndarray, y: np.ndarray, task: Task, val_size: float, seed: int) -> SweepData:
    """Hold out a (stratified) validation slice of the train split for the objective."""
    stratify = y if task.kind == "classification" else None
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=val_size, random_state=seed, stratify=stratify
    )
    return SweepData((x_fit, y_fit), (x_val, y_val), task)


class _FailureGuard:
    """Stops the sweep after ``limit`` failures in a row, remembering the first reason."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.first_reason = limit, 0, ""

    @property
    def tripped(self) -> bool:
        return self.streak >= self.limit

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL or trial.user_attrs.get(INTERRUPTED):
            self.streak = 0
            return
        self.streak += 1
        if self.streak == 1:
            self.first_reason = str(trial.user_attrs.get("fail_reason", "unknown"))
        if self.streak >= self.limit:
            study.stop()


class Objective:
    """Train one trial on the fit rows and return its best validation score."""

    def __init__(
        self,
        params: Params,
        data: SweepData,
        study: str,
        tracker: NullTracker,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.params, self.data, self.study = params, data, study
        self.tracker, self.stop = tracker, stop

    def stopped(self) -> bool:
        """True once a graceful stop was requested."""
        return self.stop is not None and self.stop()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        sampled = space.suggest(trial, self.params.search_space)
        # Seeded by the trial's place in an uninterrupted run, not its number: a retry
        # inherits its origin's place, and later trials keep theirs despite the extra attempt.
        position = trial.user_attrs.get("position", sampler_position(trial.study, trial.number))
        trial.set_user_attr("position", position)
        seed = derive_seed(self.params.seed, "trial", position)
        phash = checkpoints.params_hash(sampled, seed)
        trial.set_user_attr("checkpoint", phash)
        state, started = "FAIL", time.perf_counter()
        pruned: optuna.TrialPruned | None = None
        with self.tracker.run(f"trial-{trial.number}", params=sampled, nested=True):
            try:
                result = self._fit(trial, sampled, seed, phash)
                state = "COMPLETE"
                self.tracker.log_history(result.history)
            except optuna.TrialPruned as err:
                state, pruned = "PRUNED", err  # re-raised below: a pruned run finished, it did not fail
            except TrainingInterrupted as err:
                state = INTERRUPTED
                self.tracker.end_as_killed()
                mark_interrupted(trial.study, trial, f"{INTERRUPTED}: {err}")
                trial.study.stop()
            except Exception as err:
                trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:500])
                raise
            finally:
                self.tracker.set_tags({"state": state, "trial": str(trial.number)})
                self.tracker.log_metrics({"duration_s": time.perf_counter() - started})
        if pruned is not None:
            raise pruned
        if state == INTERRUPTED:
            return objectives.interrupted_values(self.params)  # NaN: FAIL, without a traceback
        trial.set_user_attr("best_epoch", result.best_epoch)
        return objectives.trial_values(
            self.params, self.data.task, result.model, self.data.val, result.y_scale, result.best_score
        )

    def _fit(self, trial: optuna.Trial, sampled: dict[str, Any], seed: int, phash: str) -> FitResult:
        return fit(
            self.params.model,
            sampled,
            self.params.train,
            self.data.task,
            self.data.fit,
            self.data.val,
            seed=seed,
            # Optuna refuses intermediate values of a multi-objective trial (it cannot prune one).
            reporter=None
            if pareto.is_multi_objective(self.params)
            else _pruning_reporter(trial, pruning_steps(self.params)),
            checkpoint=checkpoints.trial_checkpoint(self.params.hpo.checkpoint_dir, self.study, phash),
            resume="retry_of" in trial.user_attrs,
            should_stop=self.stop,
            on_resume=lambda epoch: trial.set_user_attr("resumed_from_epoch", epoch),
        )


def _pruning_reporter(trial: optuna.Trial, steps: set[int] | None) -> Callable[[int, float], None]:
    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        if (steps is None or epoch in steps) and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    return report


def count_finished(study: optuna.Study) -> int:
    """Trials that count toward ``n_trials``: COMPLETE and PRUNED."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_sweep(
    study: optuna.Study, params: Params, objective: Objective, after_trial: list[Callback] | None = None
) -> None:
    """Run trials until ``n_trials`` have finished (existing ones count) or the timeout hits.

    Queued retries run first, even when the budget is already reached: they
    replace trials that a crash or a signal cut short.
    """
    done = count_finished(study)
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if done >= params.hpo.n_trials and not waiting:
        log.info("study %s already has %d finished trials: nothing to run", study.study_name, done)
        return
    log.info(
        "study %s: %d finished trials, running up to %d more",
        study.study_name,
        done,
        max(params.hpo.n_trials - done, waiting),
    )
    guard = _FailureGuard(params.hpo.max_failures)
    callbacks: list[Callback] = [guard, *(after_trial or [])]
    if waiting:
        study.optimize(objective, n_trials=waiting, catch=(Exception,), callbacks=callbacks)
    if count_finished(study) < params.hpo.n_trials and not guard.tripped and not objective.stopped():
        budget = optuna.study.MaxTrialsCallback(params.hpo.n_trials, states=FINISHED)
        study.optimize(
            objective, timeout=params.hpo.timeout, catch=(Exception,), callbacks=[budget, *callbacks]
        )
    if guard.tripped:
        raise HpopipeError(
            f"hpo.max_failures: {guard.streak} trials failed in a row; "
            f"the first failure was: {guard.first_reason}"
        )


def sweep(
    params: Params,
    train: pd.DataFrame,
    schema: dict[str, Any],
    storage_path: Path,
    tracker: NullTracker,
    stop: Callable[[], bool] | None = None,
) -> optuna.Study:
    """The whole hpo stage: open (or resume) the study for these settings and run it to budget.

    ``stop`` is polled between epochs and trials (see recovery.GracefulStop).
    """
    resolve_factory(params.model)  # a bad factory fails here, not as N failed trials
    progress = ProgressReporter(params.hpo.n_trials)
    # and so does a bad hook; the progress bar is cleared first and drawn last
    hooks: list[Callback] = [progress.clear, *after_trial_hooks(params, storage_path, stop), progress]
    x, y = to_arrays(train)
    task = task_of(schema, params.hpo.metric)
    objectives.check_objectives_fit(params, task)
    fingerprint = data_fingerprint(train, schema)
    name = study_name(params, fingerprint)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    if params.hpo.fresh:
        start_fresh(name, sqlite_url(storage_path), params.hpo.checkpoint_dir / checkpoints.safe_name(name))
    study = open_study(params, name, sqlite_storage(storage_path))
    reconcile(study)
    data = split_validation(x, y, task, params.data.val_size, derive_seed(params.seed, "validation"))
    objective = Objective(params, data, name, tracker, stop)
    tags = {
        "study": name,
        "study_hash": name.rsplit("-", 1)[-1],
        "data_fingerprint": fingerprint,
        "stage": "hpo",
        "git_commit": git_commit(),
    }
    with tracker.run("hpo", params={"n_trials": params.hpo.n_trials, "metric": params.hpo.metric}, tags=tags):
        try:
            run_sweep(study, params, objective, hooks)
        finally:
            progress.close()
    return study


def data_fingerprint(train: pd.DataFrame, schema: dict[str, Any]) -> str:
    """Content hash of the prepared training rows and their schema."""
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(train, index=False).to_numpy().tobytes())
    return digest.hexdigest()
