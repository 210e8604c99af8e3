"""Ask/tell for external training code: any script joins a sweep that hpopipe configures.

``sweep = hpopipe.connect("params.yaml")``, then ``trial = sweep.ask()`` (parameters from the
configured space and a seed), ``trial.report(step, value)`` (True: the pruner says stop),
``trial.tell(value)`` or ``trial.fail(reason)``. Each step is the step hpopipe's own workers take
(:mod:`hpopipe.sweep.workers`): the same budget lock keeps several processes to one exact
budget, the same lifecycle record pauses, resumes and cancels them, the same heartbeats let
another process retry the trial of one that died, the same ``hpo.max_failures``, hooks and
MLflow nesting apply. docs/external.md is the guide.

``connect(..., detached=True)`` is for trials that outlive the process that asked for them
(``hpopipe trial ask|report|tell|fail``, each call its own process): such a trial carries its
own heartbeat, written at every call, and :func:`attach` picks it up by number in another process.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe import artifacts
from hpopipe.config import Params, SweepParams, check_storage_url, load_sweep_params
from hpopipe.config.schema import HpoConfig
from hpopipe.errors import HpopipeError, SweepStopped
from hpopipe.handoffs.schema import read_schema
from hpopipe.metrics import AUTO
from hpopipe.names import check_name
from hpopipe.seeding import derive_seed
from hpopipe.sweep import lifecycle
from hpopipe.sweep.hooks import after_trial_hooks
from hpopipe.sweep.optuna_internals import storage_of, trial_id
from hpopipe.sweep.pareto import is_multi_objective
from hpopipe.sweep.recovery import CRASHES, INTERRUPTED, RETRY_OF, mark_interrupted
from hpopipe.sweep.sampling import pruning_steps
from hpopipe.sweep.seeded_sampler import POSITION
from hpopipe.sweep.storage import StorageSpec, budget_lock, open_storage, resolve, sqlite_spec
from hpopipe.sweep.study import data_fingerprint, external_study_name, open_study, study_name
from hpopipe.sweep.trial_steps import report_and_decide, run_name, sample_trial
from hpopipe.sweep.workers import (
    FailureGuard,
    Heartbeat,
    after_trial,
    budget_of,
    claim_trial,
    sweep_gate,
    tell_failure,
    tell_result,
)
from hpopipe.tracking import NullTracker, TrialRun, make_tracker

log = logging.getLogger(__name__)

PARENT_RUN = lifecycle.PARENT_RUN  # study user attribute: the MLflow run every process's trials nest under
SETTINGS = "sweep_params"  # study user attribute: the sweep's settings, so storage + name suffice to join
TRIAL_RUN = "mlflow_run"  # trial user attribute of a detached trial: its MLflow run, for the next process


def connect(
    params: str | Path | SweepParams | None = None,
    *,
    storage: str | None = None,
    study: str | None = None,
    detached: bool = False,
    owner_pid: int = 0,
) -> Sweep:
    """Join (or create) the study that ``params`` describes, or ``study`` on ``storage``.

    Args:
        params: a params file: a whole ``params.yaml`` (the hpo stage's study: its prepared data
            must be here) or one with only ``seed``, ``search_space``, ``hpo`` and ``train`` (a
            study named ``external-<hash>``); or a :class:`SweepParams`. Default ``params.yaml``
            unless ``storage`` is given.
        storage: where the study lives, overriding ``hpo.storage``: ``sqlite:///path``, a
            ``postgresql://`` URL, ``env:NAME``, or ``sqlite`` / ``journal`` as in ``hpo.storage``.
        study: the study's name, overriding the one derived from ``params``. Without ``params``
            the study must exist and have been joined this way before (its settings are in it).
        detached: the trials outlive this process (another process takes them up with :func:`attach`):
            no heartbeat thread; each trial beats on itself at every call and is stale (retried
            elsewhere) after ``hpo.grace_s`` without one.
        owner_pid: with ``detached``, the process on this host that runs the trials (a shell
            script's ``$$``): once it is gone its trial is retried at once. 0: none.

    Returns:
        the :class:`Sweep`, with this process's heartbeat running: use it as a context manager
        or call :meth:`Sweep.close` at the end.
    """
    opened, spec, settings = _open(params, storage, study)
    if SETTINGS not in opened.user_attrs:
        sections = set(SweepParams.model_fields)  # a whole params.yaml: its sweep sections only
        opened.set_user_attr(SETTINGS, settings.model_dump(mode="json", include=sections))
    state = lifecycle.sweep_record(opened)["state"]
    if not (detached and state == "failed"):  # every detached ask connects: hpo.max_failures must hold
        state = lifecycle.begin(opened, settings.hpo.n_trials)
    log.info("joined sweep %s on %s (%s)", opened.study_name, spec.display, state)
    return Sweep(opened, spec, settings, make_tracker(), detached, owner_pid)


def attach(
    number: int,
    params: str | Path | SweepParams | None = None,
    *,
    storage: str | None = None,
    study: str | None = None,
) -> Trial:
    """Trial ``number`` of a sweep, asked by another process with ``connect(..., detached=True)``.

    The study is found as :func:`connect` finds it; the sweep's lifecycle is left as it is (a
    report must not revive a failed sweep). The trial's heartbeat is written now. A trial that
    ended meanwhile (pruned, or failed as stale) comes back with its final ``state``: ``tell``
    then does nothing after a prune and refuses otherwise, naming the reason.
    """
    opened, spec, settings = _open(params, storage, study)
    frozen = _trial_numbered(opened, number)
    recorded = frozen.user_attrs.get(TRIAL_RUN)
    tracker = make_tracker() if isinstance(recorded, str) else NullTracker()  # no MLflow start-up for nothing
    owner = frozen.user_attrs.get(lifecycle.TRIAL_BEAT)
    pid = int(owner.get("pid", 0)) if isinstance(owner, dict) else 0
    return Sweep(opened, spec, settings, tracker, detached=True, owner_pid=pid).attach(number)


def _open(
    params: str | Path | SweepParams | None, storage: str | None, study: str | None
) -> tuple[optuna.Study, StorageSpec, SweepParams]:
    """The study ``connect`` joins, where it lives, and its settings."""
    if params is None and storage is None:
        params = "params.yaml"
    settings = params if isinstance(params, SweepParams) or params is None else load_sweep_params(params)
    spec = _storage_spec(storage) if storage is not None else resolve(_need(settings).hpo.storage)
    if settings is not None:
        settings, derived = _resolved(settings)
        name = check_name(study, "study") if study is not None else derived
    else:
        name = check_name(_need_name(study), "study")
    # An outage is ridden out as by hpopipe's workers (hpo.storage_retry_s; its default when joining
    # by storage and name, before the recorded settings can be read).
    retry_s = settings.hpo.storage_retry_s if settings is not None else HpoConfig().storage_retry_s
    store = open_storage(spec, retry_s)
    if settings is None:
        settings = _recorded_settings(store, name, spec)
    return open_study(settings, name, store), spec, settings


def _trial_numbered(study: optuna.Study, number: int) -> FrozenTrial:
    found = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not found:
        raise HpopipeError(f"--number: study {study.study_name} has no trial {number}")
    return found[0]


def _need(settings: SweepParams | None) -> SweepParams:
    if settings is None:
        raise HpopipeError("connect: give params (a params file), or storage and study")
    return settings


def _need_name(study: str | None) -> str:
    if study is None:
        raise HpopipeError("connect: with storage and no params, name the study (study=...)")
    return study


def _storage_spec(storage: str) -> StorageSpec:
    """``storage=``: a SQLite URL, or anything ``hpo.storage`` accepts (a password is allowed here)."""
    if storage.startswith("sqlite:///"):
        return sqlite_spec(Path(storage[len("sqlite:///") :]))
    if storage not in ("sqlite", "journal") and not storage.startswith("env:"):
        try:
            check_storage_url(storage, in_params=False)
        except ValueError as err:
            raise HpopipeError(f"storage: {err}") from None
    return resolve(storage)


def _resolved(settings: SweepParams) -> tuple[SweepParams, str]:
    """The settings with ``hpo.metric`` resolved, and the study they describe.

    A whole params.yaml names the hpo stage's study, which hangs on the prepared data, as
    ``hpopipe worker`` computes it; a sweep-only file names ``external-<hash>``.
    """
    if isinstance(settings, Params):
        for path in (artifacts.TRAIN, artifacts.SCHEMA):
            if not path.exists():
                raise HpopipeError(
                    f"{path}: not found (a whole params.yaml joins the hpo stage's study: dvc repro prepare)"
                )
        train, schema = artifacts.read_frame(artifacts.TRAIN), read_schema(artifacts.SCHEMA).plain()
        whole = settings.for_task(schema["task"])
        return whole, study_name(whole, data_fingerprint(train, schema))
    if settings.hpo.metric == AUTO:
        raise HpopipeError(
            "hpo.metric: name the metric your training code reports (auto follows hpopipe's prepared data, "
            "which an external script does not have); it sets the direction"
        )
    return settings, external_study_name(settings)


def _recorded_settings(store: optuna.storages.BaseStorage, name: str, spec: StorageSpec) -> SweepParams:
    """The settings an earlier ``connect`` recorded in the study (joining by storage and name)."""
    try:
        existing = optuna.load_study(study_name=name, storage=store)
    except KeyError:
        raise HpopipeError(f"study: no study named {name!r} in {spec.display}") from None
    recorded = existing.user_attrs.get(SETTINGS)
    if not isinstance(recorded, dict):
        raise HpopipeError(f"study {name}: no sweep settings recorded in it: connect with its params file")
    return SweepParams.model_validate(recorded)


class Sweep:
    """One process's membership of a sweep: :meth:`ask` for trials until it returns None."""

    def __init__(
        self,
        study: optuna.Study,
        spec: StorageSpec,
        params: SweepParams,
        tracker: NullTracker,
        detached: bool = False,
        owner_pid: int = 0,
    ) -> None:
        self.study, self.spec, self.params, self.tracker = study, spec, params, tracker
        self.detached, self.owner_pid = detached, owner_pid
        self.budget = budget_of(params)
        # A detached trial's liveness is its own record, so its worker id is only a label.
        self.wid = f"{socket.gethostname()}:detached" if detached else lifecycle.worker_id()
        self._guard = FailureGuard(self.budget.max_failures)
        self._deadline = None if self.budget.timeout_s is None else time.monotonic() + self.budget.timeout_s
        self._hooks = after_trial_hooks(params, spec.path, None)
        self._steps = pruning_steps(params)
        self.stopped = False  # a hook asked the study to stop
        self._closed = False
        self._parent = None if detached else self._shared_parent()  # detached: at the first ask
        self._heart: Heartbeat | None = None
        if not detached:
            self._heart = Heartbeat(study, self.wid, self.budget.heartbeat_s).__enter__()

    @property
    def name(self) -> str:
        """The study's name."""
        return self.study.study_name

    def ask(self, wait: bool = False) -> Trial | None:
        """The next trial to run, or None: the budget is spent, ``hpo.timeout`` passed or a hook stopped.

        While every remaining place of the budget is running in other processes this waits: one
        of them may die, and its trial is then retried here. Raises :class:`SweepStopped` when
        the sweep is canceled or failed, or paused (``wait=True`` waits for it to resume instead).
        """
        if self.stopped or self._closed:
            return None
        poll = min(1.0, self.budget.heartbeat_s)
        while True:
            blocked = sweep_gate(self.study, self._deadline)
            if blocked == "timeout":
                return None
            if blocked == "paused" and wait:
                time.sleep(poll)
                continue
            if blocked is not None:
                reason = str(lifecycle.sweep_record(self.study).get("reason", ""))
                raise SweepStopped(self.name, blocked, reason)
            beat = self._beat if self.detached else None
            trial = claim_trial(self.study, self.spec, self.wid, self.budget, beat)
            if trial == "done":
                self.tracker.end_shared_parent(self._parent or self._recorded_parent())
                return None
            if isinstance(trial, str):
                time.sleep(poll)
                continue
            return self._start(trial)

    def attach(self, number: int) -> Trial:
        """Trial ``number``, asked by a detached process, to report, tell or fail here (:func:`attach`)."""
        frozen = _trial_numbered(self.study, number)
        if frozen.state == TrialState.WAITING:
            raise HpopipeError(f"--number: trial {number} of study {self.name} has not started (queued)")
        recorded = frozen.user_attrs.get(TRIAL_RUN)
        run = self.tracker.reattach(recorded) if isinstance(recorded, str) else TrialRun()
        seed = derive_seed(self.params.seed, "trial", int(frozen.user_attrs.get(POSITION, number)))
        if frozen.state != TrialState.RUNNING:
            return Trial(self, frozen, dict(frozen.params), seed, run)
        live = optuna.Trial(self.study, trial_id(frozen))
        try:
            self._beat(live)
        except optuna.exceptions.UpdateFinishedTrialError:  # it ended since it was read
            return self.attach(number)
        return Trial(self, live, dict(frozen.params), seed, run)

    def _beat(self, trial: optuna.Trial | FrozenTrial) -> None:
        lifecycle.beat_trial(self.study, trial, self.owner_pid)

    def _recorded_parent(self) -> str | None:
        recorded = self.study.user_attrs.get(PARENT_RUN) if self.tracker.enabled else None
        return recorded if isinstance(recorded, str) else None

    def close(self) -> None:
        """Leave the sweep: stop the heartbeat (a trial still open is then retried by another process)."""
        self._closed = True
        if self._heart is not None:
            self._heart.__exit__(None, None, None)
            self._heart = None

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _shared_parent(self) -> str | None:
        """The MLflow run all processes' trials nest under: its id is in the study, made once."""
        if not self.tracker.enabled:
            return None
        with budget_lock(self.spec, storage_of(self.study), self.name):
            known = self.study.user_attrs.get(PARENT_RUN)
            tags = {"study": self.name, "storage": self.spec.display, "stage": "hpo", "source": "connect"}
            parent = self.tracker.shared_parent(
                known if isinstance(known, str) else None, f"hpo {self.name}", tags
            )
            if parent != known:
                self.study.set_user_attr(PARENT_RUN, parent)
        return parent

    def _start(self, trial: optuna.Trial) -> Trial:
        sampled, seed = sample_trial(trial, self.params)
        if self._heart is not None:
            self._heart.trial = trial.number
        if self.detached and self._parent is None and self.tracker.enabled:
            self._parent = self._shared_parent()
        run = self.tracker.trial_run(run_name(trial.number), self._parent, sampled)
        run.set_tags({"trial": str(trial.number), "seed": str(seed), "study": self.name})
        if self.detached:  # the next process finds the run by id; params and tags are sent now
            run.detach()
            if run.run_id is not None:
                trial.set_user_attr(TRIAL_RUN, run.run_id)
        return Trial(self, trial, sampled, seed, run)

    def _ended(self, frozen: FrozenTrial, run: TrialRun) -> None:
        """A trial ended: its MLflow run, the failure streak and the hooks, as after a worker's trial."""
        run.set_tags({"state": frozen.state.name})
        for objective, value in zip(self.params.hpo.objectives, frozen.values or (), strict=False):
            run.log(objective, value)
        if frozen.values:  # `value`, as hpopipe's own trial runs log it (PRUNED: the last report)
            run.log("value", frozen.values[0])
        interrupted = bool(frozen.user_attrs.get(INTERRUPTED))
        run.end({TrialState.FAIL: "KILLED" if interrupted else "FAILED"}.get(frozen.state, "FINISHED"))
        if self._heart is not None:
            self._heart.trial = None
        if self.detached:  # this process saw no earlier trial: the streak is read from the study
            self._guard.streak, self._guard.first_reason = _failures_before(self.study, frozen.number)
        if after_trial(self.study, frozen, self._hooks, self._guard) == "stopped":
            self.stopped = True


def _failures_before(study: optuna.Study, number: int) -> tuple[int, str]:
    """The failures in a row (interrupted ones break it) that ended last before trial ``number``,
    in any process, and the first one's reason: ``hpo.max_failures`` across detached calls."""
    ended = [
        t
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
        if t.number != number and t.datetime_complete is not None
    ]
    streak, first = 0, ""
    for trial in sorted(ended, key=lambda t: (t.datetime_complete, t.number), reverse=True):
        if trial.state != TrialState.FAIL or trial.user_attrs.get(INTERRUPTED):
            break
        streak, first = streak + 1, str(trial.user_attrs.get("fail_reason", "unknown"))
    return streak, first


class Trial:
    """One trial of the sweep, run by external code: ``report`` as it trains, then ``tell`` or ``fail``.

    As a context manager: an exception in the block fails the trial (the next ``ask`` goes on,
    as a worker goes on after a failed trial; ``hpo.max_failures`` in a row fail the sweep), a
    ``KeyboardInterrupt`` hands it back for a retry and propagates, and a block that ends without
    ``tell`` fails it.
    """

    def __init__(
        self,
        sweep: Sweep,
        trial: optuna.Trial | FrozenTrial,
        params: dict[str, Any],
        seed: int,
        run: TrialRun,
    ) -> None:
        self._sweep, self._origin, self._run = sweep, trial, run
        self.params, self.seed, self.number = params, seed, trial.number
        origin = trial.user_attrs.get(RETRY_OF)
        self.retry_of: int | None = None if origin is None else int(origin)
        # A FrozenTrial: one that had ended when another process attached it.
        self.state: TrialState = trial.state if isinstance(trial, FrozenTrial) else TrialState.RUNNING

    @property
    def sweep_stopped(self) -> bool:
        """Whether to stop asking: a hook stopped the study here, or the sweep failed or was canceled."""
        state = lifecycle.sweep_record(self._sweep.study)["state"]
        return self._sweep.stopped or state in ("failed", "canceled")

    @property
    def _trial(self) -> optuna.Trial:
        """The live trial (only a running one is written to: every caller checks that first)."""
        assert isinstance(self._origin, optuna.Trial)
        return self._origin

    def report(self, step: int, value: float) -> bool:
        """Record an intermediate value; True when the configured pruner says stop.

        The trial is then already recorded as PRUNED (a pruned trial counts toward the budget):
        stop training; a ``tell`` after it does nothing.
        """
        self._check_running("report")
        if is_multi_objective(self._sweep.params):
            raise HpopipeError("report: Optuna cannot prune a multi-objective sweep (hpo.metrics); only tell")
        value = float(value)
        self._run.log("intermediate_value", value, step)
        try:
            stop = report_and_decide(self._trial, self._sweep._steps, int(step), value)
        except optuna.exceptions.UpdateFinishedTrialError:  # a detached trial, failed as stale meanwhile
            raise HpopipeError(f"trial {self.number}: {self._ended_elsewhere()}") from None
        if not stop:
            if self._sweep.detached:
                self._run.flush()
            return False
        self._end(self._sweep.study.tell(self._trial, state=TrialState.PRUNED, skip_if_finished=True))
        return True

    def tell(self, value: float | Sequence[float]) -> None:
        """Record the trial's final value (one per objective); NaN or infinity fails it."""
        if self.state == TrialState.PRUNED:
            return
        self._check_running("tell")
        self._end(tell_result(self._sweep.study, self._trial, value))

    def fail(self, reason: str, retry: bool = False) -> None:
        """Record the trial as failed with ``reason``; ``retry=True`` queues it again (interrupted)."""
        self._check_running("fail")
        study = self._sweep.study
        if retry:  # as a worker's trial stopped by a signal: retried, not counted as a failure
            mark_interrupted(study, self._trial, f"{INTERRUPTED}: {reason}")
        self._end(tell_failure(study, self._trial, reason))

    def __enter__(self) -> Trial:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if self.state != TrialState.RUNNING:
            return False
        if isinstance(err, KeyboardInterrupt):
            self.fail("KeyboardInterrupt", retry=True)
            return False
        if isinstance(err, Exception):
            log.warning("trial %d failed", self.number, exc_info=(kind, err, tb))  # type: ignore[arg-type]
            self.fail(f"{type(err).__name__}: {err}")
            return True  # a failing trial is a FAIL trial, not a crashed sweep
        if err is None:
            self.fail("the trial's block ended without trial.tell(value)")
        return False

    def _check_running(self, what: str) -> None:
        if self.state != TrialState.RUNNING:
            reason = self._origin.user_attrs.get("fail_reason")
            why = f": {reason}" if reason and self.state == TrialState.FAIL else ""
            hint = f"; {self._ended_elsewhere()}" if CRASHES in self._origin.user_attrs else ""
            raise HpopipeError(f"trial {self.number}: {what} after it ended ({self.state.name}{why}){hint}")

    def _ended_elsewhere(self) -> str:
        grace = self._sweep.budget.grace_s
        return (
            f"another process failed it as stale (no call for over hpo.grace_s, {grace:g} s, or its "
            "owner process is gone): stop training it"
        )

    def _end(self, frozen: FrozenTrial) -> None:
        self.state = frozen.state
        self._sweep._ended(frozen, self._run)

    def __repr__(self) -> str:
        return f"Trial(number={self.number}, params={json.dumps(self.params, default=str)}, seed={self.seed})"
