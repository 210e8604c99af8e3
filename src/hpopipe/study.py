"""The Optuna study: its identity, the objective, and the sweep that runs it to budget.

The study is the source of truth for trials; :mod:`hpopipe.exports` writes
the files that later stages read. Where it is stored is :mod:`hpopipe.storage`;
the loop each worker runs is :mod:`hpopipe.workers`.
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
from optuna.trial import TrialState
from sklearn.model_selection import train_test_split

from hpopipe import checkpoints, lifecycle, objectives, pareto, space
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
from hpopipe.storage import StorageSpec, budget_lock, open_storage
from hpopipe.strategies import make_pruner, make_sampler, pruning_steps
from hpopipe.tracking import NullTracker, git_commit
from hpopipe.train import FitResult, Task, TrainingInterrupted, fit, task_of
from hpopipe.workers import FINISHED, Budget, fail_stale, spawn_local, work

log = logging.getLogger(__name__)


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


def budget_of(params: Params) -> Budget:
    """What bounds each worker of this sweep."""
    hpo = params.hpo
    return Budget(hpo.n_trials, hpo.timeout, hpo.max_failures, hpo.grace_s, hpo.heartbeat_s, hpo.max_retry)


def sweep(
    params: Params,
    train: pd.DataFrame,
    schema: dict[str, Any],
    spec: StorageSpec,
    tracker: NullTracker,
    stop: Callable[[], bool] | None = None,
    params_path: str = "params.yaml",
) -> optuna.Study:
    """The whole hpo stage: open (or resume) the study for these settings and run it to budget.

    The stage is the sweep's coordinator: it creates the study, fails trials of
    dead workers, runs the workers (itself, N local processes, or Prefect
    deployment runs) and returns once the budget is spent. ``stop`` is polled
    between epochs and trials (see recovery.GracefulStop).
    """
    resolve_factory(params.model)  # a bad factory fails here, not as N failed trials
    objectives.check_objectives_fit(params, task_of(schema, params.hpo.metric))  # and a bad metric
    in_process = params.hpo.backend == "local" and params.hpo.n_workers == 1
    if not in_process:  # and a tracking store that several workers cannot share, before any run
        tracker.check_several_writers(f"hpo.n_workers is {params.hpo.n_workers}")
    fingerprint = data_fingerprint(train, schema)
    name = study_name(params, fingerprint)
    log.info("study %s in %s", name, spec.display)
    storage = open_storage(spec)
    if params.hpo.fresh:  # the folder is checked before the study is touched
        start_fresh(name, storage, checkpoints.study_folder(params.hpo.checkpoint_dir, name))
    study = open_study(params, name, storage)
    _begin(study, params)
    with budget_lock(spec, storage, name):
        fail_stale(study, params.hpo.grace_s, params.hpo.max_retry)
    _log_plan(study, params.hpo.n_trials)
    tags = {
        "study": name,
        "study_hash": name.rsplit("-", 1)[-1],
        "data_fingerprint": fingerprint,
        "storage": spec.display,
        "stage": "hpo",
        "git_commit": git_commit(),
    }
    hpo = params.hpo
    run_params = {"n_trials": hpo.n_trials, "metric": hpo.metric, "n_workers": hpo.n_workers}
    with tracker.run("hpo", params=run_params, tags=tags):
        if in_process:
            healthy = join(params, train, schema, study, spec, tracker, stop) != "failed"
        else:
            healthy = _fan_out(params, name, params_path, tracker, stop)
    _end(study, params, healthy)
    return study


def _begin(study: optuna.Study, params: Params) -> None:
    """Mark the sweep running with this budget; a canceled sweep stays canceled until resumed."""
    record = lifecycle.sweep_record(study)
    if record["state"] == "canceled":
        raise HpopipeError(
            f"sweep {study.study_name} is canceled: `hpopipe sweep resume {study.study_name}` to run it again"
        )
    n_trials = params.hpo.n_trials
    if record["state"] == "paused":
        log.warning("sweep %s is paused: waiting for `hpopipe sweep resume`", study.study_name)
        lifecycle.set_sweep_state(study, "paused", record.get("reason", ""), n_trials=n_trials)
    else:
        lifecycle.set_sweep_state(study, "running", n_trials=n_trials)


def _log_plan(study: optuna.Study, n_trials: int) -> None:
    """Say what this run will do: extend the study, or nothing (it already met the budget)."""
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if done >= n_trials and not queued:
        log.info("study %s already has %d finished trials: nothing to run", study.study_name, done)
    else:
        more = max(n_trials - done, queued)
        log.info("study %s: %d finished trials, running up to %d more", study.study_name, done, more)


def _fan_out(
    params: Params, name: str, params_path: str, tracker: NullTracker, stop: Callable[[], bool] | None
) -> bool:
    """Run the workers elsewhere: N local processes, or N runs of the Prefect worker deployment.

    Returns False when a worker crashed (the others may still have met the budget).
    """
    if params.hpo.backend == "prefect":
        from hpopipe import fanout  # Prefect is imported only for this backend

        parameters = {"project_dir": str(Path.cwd()), "params": params_path, "study": name}
        runs = fanout.run_workers(params.hpo.n_workers, parameters, require_all=False)
        failed = [r for r in runs if not r.ok]
        if failed:
            log.warning("worker runs that did not complete: %s", fanout.describe_failed(failed))
        return not failed
    never: Callable[[], bool] = lambda: False  # noqa: E731
    env = {"HPOPIPE_PARENT_RUN_ID": tracker.run_id() or ""}
    codes = spawn_local(params.hpo.n_workers, name, params_path, stop or never, env)
    bad = [c for c in codes if c != 0]
    if bad:  # the sweep may still be whole: the others took over a dead worker's trial
        log.warning("%d of %d workers exited with codes %s", len(bad), len(codes), bad)
    return not bad or bool(stop and stop())  # workers stopped by our signal are not broken


def _end(study: optuna.Study, params: Params, healthy: bool) -> None:
    """Record how the sweep ended; a failed or canceled sweep is an error for the stage.

    ``healthy`` is False when a worker crashed: short of the budget, that is an
    error too (a worker that stopped on a signal, a hook or the timeout is not).
    """
    record = lifecycle.sweep_record(study)
    if record["state"] == "failed":
        raise HpopipeError(str(record.get("reason", "the sweep failed")))
    if record["state"] == "canceled":
        raise HpopipeError(f"sweep {study.study_name} was canceled ({record.get('reason', '')})")
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done < params.hpo.n_trials and not healthy:
        raise HpopipeError(
            f"hpo: the workers stopped with {done} of {params.hpo.n_trials} trials finished (see their log)"
        )
    if done >= params.hpo.n_trials:
        lifecycle.set_sweep_state(study, "finished", n_trials=params.hpo.n_trials)


def join(
    params: Params,
    train: pd.DataFrame,
    schema: dict[str, Any],
    study: optuna.Study,
    spec: StorageSpec,
    tracker: NullTracker,
    stop: Callable[[], bool] | None = None,
    wid: str | None = None,
) -> str:
    """One worker's share of a sweep: the hpo stage itself, or ``hpopipe worker`` anywhere.

    Returns why the worker stopped (see :func:`hpopipe.workers.work`).
    """
    progress = ProgressReporter(params.hpo.n_trials)
    # a bad hook fails here; the progress bar is cleared first and drawn last
    hooks: list[Callback] = [progress.clear, *after_trial_hooks(params, spec.path, stop), progress]
    x, y = to_arrays(train)
    task = task_of(schema, params.hpo.metric)
    objectives.check_objectives_fit(params, task)
    data = split_validation(x, y, task, params.data.val_size, derive_seed(params.seed, "validation"))
    objective = Objective(params, data, study.study_name, tracker, stop)
    try:
        return work(study, spec, objective, budget_of(params), hooks, stop or (lambda: False), wid)
    finally:
        progress.close()


def data_fingerprint(train: pd.DataFrame, schema: dict[str, Any]) -> str:
    """Content hash of the prepared training rows and their schema."""
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(train, index=False).to_numpy().tobytes())
    return digest.hexdigest()
