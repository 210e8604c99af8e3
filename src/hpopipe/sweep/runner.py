"""The sweep: open (or resume) the study, run its workers to budget, record how it ended.

The hpo stage calls :func:`sweep`; ``hpopipe worker`` calls :func:`join`. The loop each
worker runs is :mod:`hpopipe.sweep.workers`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from hpopipe.config import Params
from hpopipe.consumption import check_factory_names
from hpopipe.data import to_arrays
from hpopipe.entry import EXIT_USER_ERROR
from hpopipe.errors import HpopipeError
from hpopipe.seeding import derive_seed
from hpopipe.sweep import lifecycle, objectives
from hpopipe.sweep.budget import budget_met, finished_in
from hpopipe.sweep.exports import summary, within_budget
from hpopipe.sweep.hooks import Callback, after_trial_hooks, sweep_end_hooks
from hpopipe.sweep.local import LocalWorkers, start_local, wait_forwarding_stop
from hpopipe.sweep.objective import Objective
from hpopipe.sweep.progress import ProgressReporter
from hpopipe.sweep.recovery import start_fresh
from hpopipe.sweep.storage import StorageSpec, open_storage, sweep_lock, under_budget_lock
from hpopipe.sweep.study import data_fingerprint, open_study, study_name
from hpopipe.sweep.warm_start import Reuse, warm_start
from hpopipe.sweep.workers import budget_of, fail_stale, work
from hpopipe.tracking import NullTracker, git_commit
from hpopipe.training import checkpoints
from hpopipe.training.loop import task_of
from hpopipe.training.models import resolve_factory
from hpopipe.training.split import split_validation

log = logging.getLogger(__name__)


def sweep(
    params: Params,
    train: pd.DataFrame,
    schema: dict[str, Any],
    spec: StorageSpec,
    tracker: NullTracker,
    stop: Callable[[], bool] | None = None,
    params_path: str = "params.yaml",
    children: LocalWorkers | None = None,
) -> optuna.Study:
    """The whole hpo stage: open (or resume) the study for these settings and run it to budget.

    The stage is the sweep's coordinator: it creates the study, fails trials of
    dead workers, runs the workers (itself; itself and N-1 local processes; or
    Prefect deployment runs) and returns once the budget is spent. ``stop`` is polled
    between epochs and trials (see signals.GracefulStop). ``children`` are the N-1 local
    processes when the stage started them early (:func:`hpopipe.sweep.local.early_workers`);
    they wait for the go this sweep gives them once it is ready.
    """
    params = params.for_task(schema["task"])  # hpo.metric: auto follows the prepared data
    # A bad factory, or a tuned name it declares it does not read, fails here, not as N trials.
    check_factory_names(params, resolve_factory(params.model), params_path)
    objectives.check_objectives_fit(params, task_of(schema, params.hpo.metric))  # and a bad metric
    in_process = params.hpo.backend == "local" and params.hpo.n_workers == 1
    if not in_process:  # and a tracking store that several workers cannot share, before any run
        tracker.check_several_writers(f"hpo.n_workers is {params.hpo.n_workers}")
        if params.hpo.n_workers > 1:  # the one setting under which a rerun is not the same sweep
            log.info(
                "%d workers: trials are proposed in the order results arrive, so a rerun (or a resume) "
                "runs different trials; one worker reproduces a sweep exactly (docs/resume.md)",
                params.hpo.n_workers,
            )
    at_end = sweep_end_hooks(params)
    fingerprint = data_fingerprint(train, schema)
    name = study_name(params, fingerprint)
    storage = open_storage(spec, params.hpo.storage_retry_s)  # a damaged study file is refused first
    log.info("study %s in %s", name, spec.display)
    if params.hpo.fresh:  # the folder is checked before the study is touched
        start_fresh(name, storage, checkpoints.study_folder(params.hpo.checkpoint_dir, name))
    study = open_study(params, name, storage)
    _begin(study, params)

    def prepare() -> None:
        warm_start(study, params, fingerprint)  # a new study only, before any worker asks
        fail_stale(study, params.hpo.grace_s, params.hpo.max_retry)

    under_budget_lock(spec, storage, name, prepare)
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
    with tracker.run(f"hpo {name}", params=run_params, tags=tags):
        parent = tracker.run_id()
        if parent:  # external code that joins this study (hpopipe.connect) nests under this run
            study.set_user_attr(lifecycle.PARENT_RUN, parent)
        if in_process:
            healthy = join(params, train, schema, study, spec, tracker, stop) != "failed"
        elif hpo.backend == "local":
            healthy = _join_beside_local(
                params, train, schema, study, spec, tracker, stop, params_path, children
            )
        else:
            healthy = _fan_out(params, name, params_path, stop)
        tracker.log_metrics(outcome_metrics(within_budget(study, params.hpo.n_trials)))
    _end(study, params, healthy)
    for hook in at_end:  # once, by the coordinator: budget met, or stopped (a signal, a hook, the timeout)
        hook(study)
    return study


@contextmanager
def locked_sweep(
    params: Params,
    train: pd.DataFrame,
    schema: dict[str, Any],
    spec: StorageSpec,
    tracker: NullTracker,
    stop: Callable[[], bool] | None = None,
    children: LocalWorkers | None = None,
) -> Iterator[optuna.Study]:
    """:func:`sweep` holding the study's sweep lock until the block ends: the hpo stage's way in.

    The block writes the exports, so no other run (another DVC experiment) grows or prunes the
    study between the sweep and what is exported of it (see :func:`hpopipe.sweep.storage.sweep_lock`).
    """
    name = study_name(params, data_fingerprint(train, schema))
    with sweep_lock(spec, name, stop):
        yield sweep(params, train, schema, spec, tracker, stop, children=children)


def outcome_metrics(study: optuna.Study) -> dict[str, float]:
    """The hpo run's metrics at the end of the sweep: counts by state and the best trial.

    The same numbers as ``metrics/hpo.json`` (the exports' view, within the budget); a
    multi-objective study has no single best value and logs its Pareto front's size instead.
    """
    found = summary(study)
    out = {f"n_{key}": float(found[key]) for key in ("complete", "pruned", "fail")}
    if found["best_trial"] is not None and "front_size" not in found:
        out |= {"best_value": float(found["best_value"]), "best_trial": float(found["best_trial"])}
    if "front_size" in found:
        out["front_size"] = float(found["front_size"])
    return out


def _begin(study: optuna.Study, params: Params) -> None:
    """Mark the sweep running with this budget; a canceled sweep stays canceled until resumed."""
    state = lifecycle.begin(study, params.hpo.n_trials)
    if state == "canceled":
        raise HpopipeError(
            f"sweep {study.study_name} is canceled: `hpopipe sweep resume {study.study_name}` to run it again"
        )
    if state == "paused":
        log.warning("sweep %s is paused: waiting for `hpopipe sweep resume`", study.study_name)


def _log_plan(study: optuna.Study, n_trials: int) -> None:
    """Say what this run will do: extend the study, or nothing (it already met the budget)."""
    done = finished_in(study)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    if budget_met(done, n_trials) and not queued:
        log.info("study %s already has %d finished trials: nothing to run", study.study_name, done)
    else:
        more = max(n_trials - done, queued)
        log.info("study %s: %d finished trials, running up to %d more", study.study_name, done, more)


def _join_beside_local(
    params: Params,
    train: pd.DataFrame,
    schema: dict[str, Any],
    study: optuna.Study,
    spec: StorageSpec,
    tracker: NullTracker,
    stop: Callable[[], bool] | None,
    params_path: str,
    children: LocalWorkers | None,
) -> bool:
    """N local workers: this process, already imported and holding the study, and N-1 processes beside it.

    A fresh worker process pays seconds of imports before its first trial; the stage would only
    wait. So the stage starts them before its own imports (``children``) and gives them the go
    here, with the hpo run they nest under (:meth:`LocalWorkers.go`); without
    ``children`` they start here, the run named by ``HPOPIPE_PARENT_RUN_ID``. This process's trial
    runs nest through ``tracker``. If this worker raises, the others are stopped before the error
    goes on. Returns False when a worker crashed or the sweep failed.
    """
    if children is None:
        env = {"HPOPIPE_PARENT_RUN_ID": tracker.run_id() or ""}
        never: Callable[[], bool] = lambda: False  # noqa: E731
        children = start_local(params.hpo.n_workers - 1, study.study_name, params_path, stop or never, env)
    try:
        if children.early:  # started before the sweep was ready: they wait for this
            children.go(tracker.run_id())
        reason = join(params, train, schema, study, spec, tracker, stop)
        codes = children.wait()
    except BaseException as err:  # a storage outage, a full disk, a second signal: none is orphaned
        children.stop(now=isinstance(err, KeyboardInterrupt))
        raise
    return _codes_healthy(codes, params.hpo.n_workers, stop) and reason != "failed"


def _fan_out(params: Params, name: str, params_path: str, stop: Callable[[], bool] | None) -> bool:
    """Run the workers elsewhere: N runs of the Prefect worker deployment.

    Returns False when a worker crashed (the others may still have met the budget).
    """
    never: Callable[[], bool] = lambda: False  # noqa: E731
    # Prefect runs, started by a process of its own (sweep.fanout)
    cmd = [sys.executable, "-m", "hpopipe.sweep.fanout", "--n", str(params.hpo.n_workers)]
    proc = subprocess.Popen([*cmd, "--params", params_path, "--study", name])
    code = wait_forwarding_stop([proc], stop or never)[0]
    if code == EXIT_USER_ERROR:
        raise HpopipeError("hpo.backend: the Prefect fan-out refused to start (its reason is above)")
    return code == 0


def _codes_healthy(codes: list[int], n_workers: int, stop: Callable[[], bool] | None) -> bool:
    """Whether the worker processes' exit codes say none crashed; a crash is logged."""
    bad = [c for c in codes if c != 0]
    if bad:  # the sweep may still be whole: the others took over a dead worker's trial
        log.warning("%d of %d workers exited with codes %s", len(bad), n_workers, bad)
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
    done = finished_in(study)
    if not budget_met(done, params.hpo.n_trials) and not healthy:
        raise HpopipeError(
            f"hpo: the workers stopped with {done} of {params.hpo.n_trials} trials finished (see their log)"
        )
    if budget_met(done, params.hpo.n_trials):
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

    Returns why the worker stopped (see :func:`hpopipe.sweep.workers.work`).
    """
    params = params.for_task(schema["task"])  # hpo.metric: auto follows the prepared data
    progress = ProgressReporter(params.hpo.n_trials)
    # a bad hook fails here; the progress bar is cleared first and drawn last
    hooks: list[Callback] = [progress.clear, *after_trial_hooks(params, spec.path, stop), progress]
    x, y = to_arrays(train)
    task = task_of(schema, params.hpo.metric)
    objectives.check_objectives_fit(params, task)
    data = split_validation(x, y, task, params.data.val_size, derive_seed(params.seed, "validation"))
    reuse = Reuse.of(study, params, data_fingerprint(train, schema))
    objective = Objective(params, data, study.study_name, tracker, stop, reuse)
    try:
        return work(study, spec, objective, budget_of(params), hooks, stop or (lambda: False), wid)
    finally:
        progress.close()
        tracker.drain()  # a worker process's trial runs are in the store before it exits
