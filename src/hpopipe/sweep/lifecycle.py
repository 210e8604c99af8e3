"""A sweep's shared state, kept in the study itself so every worker on every machine sees it.

Two kinds of record live in the study's user attributes:

- ``sweep``: ``{"state": running|paused|canceled|failed|finished, "reason": ..., "n_trials": N}``,
  set by ``hpopipe sweep pause|resume|cancel`` and by the workers; honoured between trials.
- ``worker:<id>``: each worker's host, pid, current trial and last heartbeat (epoch seconds).
- ``mlflow_parent_run``: the MLflow run every process's trials nest under (the hpo stage's run,
  or the one the first external process made).

A *detached* trial, driven by separate processes (``hpopipe trial ask|report|tell``), has no
worker process to beat for it: it carries its own heartbeat record (trial user attribute
``heartbeat``, the same fields), written at every call.

A RUNNING trial is *stale* when its worker stopped beating for longer than the
grace period, or when that worker ran on this host and its process is gone
(so a restart does not have to wait out the grace period). Time this process saw the
database down does not count toward the grace period: no worker could beat then.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe.errors import HpopipeError
from hpopipe.processes import pid_alive
from hpopipe.sweep.optuna_internals import storage_of, trial_id
from hpopipe.sweep.outage import downtime_between

SWEEP = "sweep"
WORKER_PREFIX = "worker:"
PARENT_RUN = "mlflow_parent_run"  # study user attribute: the MLflow run every process's trials nest under
TRIAL_BEAT = "heartbeat"  # trial user attribute: a detached trial's own heartbeat record
STATES = ("pending", "running", "paused", "canceled", "failed", "finished")
# What `hpopipe sweep <action>` sets.
ACTIONS = {"pause": "paused", "resume": "running", "cancel": "canceled"}


def worker_id() -> str:
    """``<host>:<pid>``: unique among live workers, and tells whether a worker is local."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sweep_record(study: optuna.Study) -> dict[str, Any]:
    """The sweep's lifecycle record (running when none was written yet)."""
    record = study.user_attrs.get(SWEEP)
    return dict(record) if isinstance(record, dict) else {"state": "running"}


def set_sweep_state(study: optuna.Study, state: str, reason: str = "", **extra: Any) -> None:
    """Record the sweep's state; every worker reads it before starting a trial."""
    record = {**sweep_record(study), "state": state, "reason": reason, **extra}
    study.set_user_attr(SWEEP, record)


def begin(study: optuna.Study, n_trials: int) -> str:
    """A run joins the sweep with this budget: mark it running, unless paused or canceled.

    A canceled sweep stays canceled until ``hpopipe sweep resume``; a paused one stays paused
    (its budget recorded). Returns the state the sweep is in now.
    """
    record = sweep_record(study)
    state = record["state"]
    if state == "canceled":
        return state
    if state == "paused":
        set_sweep_state(study, "paused", record.get("reason", ""), n_trials=n_trials)
        return state
    set_sweep_state(study, "running", n_trials=n_trials)
    return "running"


def apply_action(study: optuna.Study, action: str) -> str:
    """``pause``/``resume``/``cancel`` a sweep; returns the new state."""
    current = sweep_record(study)["state"]
    if action == "pause" and current in ("canceled", "finished"):
        raise HpopipeError(f"sweep {study.study_name}: cannot pause a {current} sweep")
    state = ACTIONS[action]
    set_sweep_state(study, state, reason=f"hpopipe sweep {action}")
    return state


def workers(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Every worker that has joined the sweep, by id."""
    return {
        key[len(WORKER_PREFIX) :]: value
        for key, value in study.user_attrs.items()
        if key.startswith(WORKER_PREFIX) and isinstance(value, dict)
    }


def beat(study: optuna.Study, wid: str, trial: int | None, state: str = "running") -> None:
    """Write this worker's heartbeat record."""
    host, _, pid = wid.rpartition(":")
    record = {"host": host, "pid": int(pid) if pid.isdigit() else 0}
    record.update({"heartbeat": time.time(), "trial": trial, "state": state})
    # Peak resident memory of this process so far (Linux reports KiB): for status and benchmarks.
    record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    study.set_user_attr(WORKER_PREFIX + wid, record)


def beat_trial(study: optuna.Study, trial: FrozenTrial | optuna.Trial, pid: int = 0) -> None:
    """Write a detached trial's own heartbeat; ``pid`` (0: none) is the process that runs it on this host.

    Without a pid only the heartbeat's age tells whether the trial is alive (``hpo.grace_s``).
    """
    record = {"host": socket.gethostname(), "pid": pid, "heartbeat": time.time(), "state": "running"}
    storage_of(study).set_trial_user_attr(trial_id(trial), TRIAL_BEAT, record)


def worker_alive(record: dict[str, Any] | None, grace_s: float, now: float | None = None) -> bool:
    """Whether a worker record belongs to a live worker."""
    if not record or record.get("state") == "exited":
        return False
    pid = int(record.get("pid", 0))  # 0: no process to look for, only the heartbeat's age
    if pid > 0 and record.get("host") == socket.gethostname() and not pid_alive(pid):
        return False
    now = now or time.time()
    beat_at = float(record.get("heartbeat", 0.0))
    # While the database was down nobody could beat: that part of the silence is not death.
    return now - beat_at - downtime_between(beat_at, now) <= grace_s


def live_workers(study: optuna.Study, grace_s: float) -> list[str]:
    """Ids of the workers that are running this sweep now (their heartbeat is fresh)."""
    now = time.time()
    return sorted(wid for wid, record in workers(study).items() if worker_alive(record, grace_s, now))


def refuse_while_running(study: optuna.Study, grace_s: float, what: str) -> None:
    """A one-line error when a worker holds the study: ``what`` would rewrite it under the sweep."""
    alive = live_workers(study, grace_s)
    if alive:
        raise HpopipeError(
            f"sweep {study.study_name} is running (worker {', '.join(alive)}): {what} would rewrite it "
            f"under the workers; wait for it to end, or `hpopipe sweep pause {study.study_name}` and let "
            "them leave"
        )


def stale_trials(study: optuna.Study, grace_s: float) -> list[FrozenTrial]:
    """RUNNING trials whose worker is dead: by pid on this host, else by heartbeat age.

    A detached trial is judged by its own record (see :func:`beat_trial`).
    """
    known = workers(study)
    now = time.time()
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not worker_alive(_record_of(t, known), grace_s, now)
    ]


def _record_of(trial: FrozenTrial, known: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    own = trial.user_attrs.get(TRIAL_BEAT)
    return own if isinstance(own, dict) else known.get(str(trial.user_attrs.get("worker", "")))
