"""The loop every sweep worker runs: the hpo stage (with N-1 local processes beside it), or many machines.

Each worker, between trials: honours the sweep's lifecycle (paused, canceled),
fails trials of dead workers and queues their retries, and - holding the
study's budget lock - either starts a trial or sees that the budget is spent.
Counting and starting under one lock is what makes the number of trials
exact whatever the timing: COMPLETE + PRUNED never exceeds ``hpo.n_trials``.

The loop's steps are public functions (:func:`sweep_gate`, :func:`claim_trial`,
:func:`tell_result`, :func:`tell_failure`, :func:`after_trial`): external training code
that joins a sweep through :mod:`hpopipe.sweep.external` takes the same steps.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe.config import SweepParams
from hpopipe.errors import DiskFull, StorageUnavailable
from hpopipe.sweep import lifecycle
from hpopipe.sweep.budget import FINISHED, budget_met, count_finished, own
from hpopipe.sweep.optuna_internals import optimize_loop_window, stop_requested, storage_of, trial_id
from hpopipe.sweep.recovery import CRASHES, INTERRUPTED, queue_retry, retry_attrs
from hpopipe.sweep.storage import StorageSpec, under_budget_lock

log = logging.getLogger(__name__)

Callback = Callable[[optuna.Study, FrozenTrial], None]
Objective = Callable[[optuna.Trial], Any]


@dataclass(frozen=True)
class Budget:
    """What bounds a worker: the shared trial budget, its own wall time, failures in a row."""

    n_trials: int
    timeout_s: float | None
    max_failures: int
    grace_s: float
    heartbeat_s: float
    max_retry: int


def budget_of(params: SweepParams) -> Budget:
    """What bounds each worker of this sweep (and each external process that joins it)."""
    hpo = params.hpo
    return Budget(hpo.n_trials, hpo.timeout, hpo.max_failures, hpo.grace_s, hpo.heartbeat_s, hpo.max_retry)


class FailureGuard:
    """Counts this worker's failures in a row, remembering the first reason."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.first_reason = limit, 0, ""

    @property
    def tripped(self) -> bool:
        return self.streak >= self.limit

    def __call__(self, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL or trial.user_attrs.get(INTERRUPTED):
            self.streak = 0
            return
        self.streak += 1
        if self.streak == 1:
            self.first_reason = str(trial.user_attrs.get("fail_reason", "unknown"))


class Heartbeat:
    """A daemon thread that writes this worker's record every ``interval`` seconds."""

    def __init__(self, study: optuna.Study, wid: str, interval: float) -> None:
        self.study, self.wid, self.interval = study, wid, interval
        self.trial: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{wid}", daemon=True)

    def __enter__(self) -> Heartbeat:
        lifecycle.beat(self.study, self.wid, None)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=self.interval + 5)
        try:
            lifecycle.beat(self.study, self.wid, None, state="exited")
        except Exception as err:  # the storage may be what failed; the record then ages out
            log.warning("could not record that worker %s exited: %s", self.wid, err)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                lifecycle.beat(self.study, self.wid, self.trial)
            except Exception as err:  # a missed beat is not fatal; many in a row make us stale
                log.warning("heartbeat of worker %s failed: %s", self.wid, err)


def fail_stale(study: optuna.Study, grace_s: float, max_retry: int) -> int:
    """Fail the RUNNING trials of dead workers; queue a retry unless one died ``max_retry`` times.

    Call under the budget lock, so two workers never retry the same trial twice.
    """
    failed = 0
    for trial in lifecycle.stale_trials(study, grace_s):
        crashes = int(trial.user_attrs.get(CRASHES, 0)) + 1
        storage, tid = storage_of(study), trial_id(trial)
        try:
            storage.set_trial_user_attr(tid, INTERRUPTED, True)
            storage.set_trial_user_attr(tid, CRASHES, crashes)
            if crashes > max_retry:
                reason = f"its worker died {crashes} times; not retried (hpo.max_retry: {max_retry})"
            else:
                reason = "interrupted (its worker process died)"
            storage.set_trial_user_attr(tid, "fail_reason", reason)
            storage.set_trial_state_values(tid, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # its worker was alive after all and finished it
        if crashes <= max_retry:
            queue_retry(study, trial, retry_attrs(trial, crashes))
        log.warning("trial %d: %s", trial.number, reason)
        failed += 1
    return failed


def next_trial(study: optuna.Study, wid: str, n_trials: int) -> optuna.Trial | str:
    """Start a trial, or say why not: ``done`` (budget spent) or ``wait`` (others may still fail).

    Queued trials run even past the budget: they are retries someone asked for
    (``hpopipe resume``); a dead worker's retry always falls within it.
    """
    trials = own(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING)))
    queued = any(t.state == TrialState.WAITING for t in trials)
    if budget_met(count_finished(trials), n_trials) and not queued:
        return "done"
    if budget_met(sum(t.state != TrialState.WAITING for t in trials), n_trials) and not queued:
        return "wait"  # the rest are running elsewhere; take over if one of them dies
    trial = study.ask()
    trial.set_user_attr("worker", wid)
    return trial


def _values(result: Any) -> list[float] | str:
    """The objective's value(s) as floats, or why they are not a usable result."""
    items = list(result) if isinstance(result, Sequence) and not isinstance(result, str) else [result]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return f"objective returned {result!r}, not a number"
    if not all(math.isfinite(v) for v in values):
        return f"objective returned {result!r}, not a finite number"
    return values


def run_trial(study: optuna.Study, trial: optuna.Trial, objective: Objective) -> FrozenTrial:
    """Run one trial and record its end: COMPLETE, PRUNED, or FAIL with the reason."""
    try:
        result = objective(trial)
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
    except (DiskFull, StorageUnavailable):
        raise  # the machine's fault, not the trial's: the worker stops, the next run retries it
    except Exception as err:
        log.debug("trial %d failed", trial.number, exc_info=True)
        return tell_failure(study, trial, f"{type(err).__name__}: {err}")
    return tell_result(study, trial, result)


def tell_result(study: optuna.Study, trial: optuna.Trial, result: Any) -> FrozenTrial:
    """Record a trial's result: COMPLETE, or FAIL with the reason when it is no usable value.

    NaN, infinities and non-numbers are failures here (Optuna would record an
    infinite value as COMPLETE).
    """
    values = _values(result)
    if isinstance(values, str):
        return tell_failure(study, trial, values)
    return study.tell(trial, values, skip_if_finished=True)


def tell_failure(study: optuna.Study, trial: optuna.Trial, reason: str) -> FrozenTrial:
    """Record a trial as FAIL with ``reason``, unless the objective already gave one."""
    _give_reason(study, trial, reason[:500])
    return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)


def _give_reason(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Record why a trial failed, unless the objective already did (read fresh: it may
    have written through the storage, which the live trial's cache does not see)."""
    if "fail_reason" not in storage_of(study).get_trial(trial_id(trial)).user_attrs:
        trial.set_user_attr("fail_reason", reason)


def after_trial(
    study: optuna.Study, trial: FrozenTrial, callbacks: Sequence[Callback], guard: FailureGuard
) -> str | None:
    """After a trial ended: count it in the failure streak, run the hooks; why to stop, if so.

    Returns ``stopped`` when a hook asked the study to stop, ``failed`` when ``hpo.max_failures``
    trials failed in a row (the sweep is then marked failed for every worker), else None.
    Optuna only lets ``study.stop()`` be called inside its optimize loop, and
    user hooks written for Optuna call it: we open the same window around them.
    """
    guard(trial)
    with optimize_loop_window(study):
        for callback in callbacks:
            callback(study, trial)
    if stop_requested(study):
        return "stopped"
    if guard.tripped:
        reason = (
            f"hpo.max_failures: {guard.streak} trials failed in a row; "
            f"the first failure was: {guard.first_reason}"
        )
        lifecycle.set_sweep_state(study, "failed", reason)
        return "failed"
    return None


def sweep_gate(study: optuna.Study, deadline: float | None) -> str | None:
    """Whether a worker may start a trial now: None, or why not.

    ``canceled`` / ``failed`` (the sweep's state), ``timeout`` (``deadline``, a ``time.monotonic``
    value, has passed) or ``paused`` (wait and ask again).
    """
    state = lifecycle.sweep_record(study)["state"]
    if state in ("canceled", "failed"):
        return str(state)
    if deadline is not None and time.monotonic() >= deadline:
        return "timeout"
    return "paused" if state == "paused" else None


def claim_trial(
    study: optuna.Study,
    spec: StorageSpec,
    wid: str,
    budget: Budget,
    started: Callable[[optuna.Trial], None] | None = None,
) -> optuna.Trial | str:
    """Under the budget lock: fail dead workers' trials, then start a trial or say ``done``/``wait``.

    ``started`` runs on a started trial still under the lock (a detached trial's first
    heartbeat: no other process may judge it stale before it has one). The whole section runs
    again if the database went away inside it (see ``under_budget_lock``).
    """

    def section() -> optuna.Trial | str:
        fail_stale(study, budget.grace_s, budget.max_retry)
        trial = next_trial(study, wid, budget.n_trials)
        if started is not None and not isinstance(trial, str):
            started(trial)
        return trial

    return under_budget_lock(spec, storage_of(study), study.study_name, section)


def work(
    study: optuna.Study,
    spec: StorageSpec,
    objective: Objective,
    budget: Budget,
    callbacks: Sequence[Callback] = (),
    stop: Callable[[], bool] = lambda: False,
    wid: str | None = None,
) -> str:
    """Run trials until the budget is spent, the sweep is paused for good, canceled or failed.

    Returns why the worker stopped: ``done``, ``canceled``, ``failed``, ``timeout``,
    ``stopped`` (a hook stopped it) or ``interrupted`` (a signal).
    """
    wid = wid or lifecycle.worker_id()
    guard = FailureGuard(budget.max_failures)
    deadline = None if budget.timeout_s is None else time.monotonic() + budget.timeout_s
    poll = min(1.0, budget.heartbeat_s)

    with Heartbeat(study, wid, budget.heartbeat_s) as heart:
        while True:
            if stop():
                return "interrupted"
            blocked = sweep_gate(study, deadline)
            if blocked == "paused":
                time.sleep(poll)
                continue
            if blocked is not None:
                return blocked
            trial = claim_trial(study, spec, wid, budget)
            if trial == "done":
                return "done"
            if isinstance(trial, str):
                time.sleep(poll)
                continue
            heart.trial = trial.number
            frozen = run_trial(study, trial, objective)
            heart.trial = None
            ended = after_trial(study, frozen, callbacks, guard)
            if ended is not None:
                return ended
