"""Riding out an outage of the study's database: retry, back off, and give up in one line.

A PostgreSQL study outlives a restart of its server, a failover or a network blip; the
workers should too. :class:`RetryingStorage` wraps the study's storage (Optuna's cached RDB
storage) and retries every call that failed for want of a connection, with exponential
backoff and jitter, for up to ``hpo.storage_retry_s`` from the first failure; after that it
raises :class:`~hpopipe.errors.StorageUnavailable`, one line naming the (masked) URL and
how long it waited, and every later call of the process fails the same way at once (the
worker is on its way out; the trial it ran stays RUNNING and the next run retries it).
Only connection-level errors are retried (SQLAlchemy's ``OperationalError``,
``InterfaceError``, ``DisconnectionError``, the drivers' ``OperationalError``), never a
constraint or a bad value.

A retried write must not happen twice. Most writes are idempotent (attributes and
intermediate values are upserts, a parameter already written is ignored). Two are not, and
are checked after a failure before they are sent again, because the failed attempt may
have committed before the connection died: finishing a trial (is it already in that state,
with those values?) and creating a trial from a template (a queued retry: is an identical
one there now?). A new trial asked for (``study.ask``) is created under the budget lock,
which the server drops with the connection: any connection error inside that section
raises :class:`~hpopipe.errors.StorageReconnected` instead of a retry, and the section runs
again from the start under a fresh lock (:func:`hpopipe.sweep.storage.under_budget_lock`).
A trial the lost attempt may have created has no worker, so that section fails it and
queues its retry, as for a dead worker: nothing is lost, nothing runs twice.

Heartbeats cannot be written while the database is down: :func:`downtime_between` tells
:mod:`hpopipe.sweep.lifecycle` how much of a heartbeat's age this process saw the database
down, so a live worker is not failed as dead just because it could not beat.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpopipe.atomic import disk_full, no_space
from hpopipe.errors import StorageReconnected, StorageUnavailable
from hpopipe.redact import mask_url
from hpopipe.sweep.optuna_internals import same_trial, set_system_attr, trial_id, write_intermediate_values
from hpopipe.sweep.read_memo import ReadMemo

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_DELAY_S = 0.25  # the first retry's wait; doubled after each failure ...
MAX_DELAY_S = 5.0  # ... up to this, so a worker is back within seconds of the database
_downtime: list[tuple[float, float]] = []  # (start, end) wall-clock seconds: outages this process saw
_downtime_lock = threading.Lock()


@functools.cache
def _connection_errors() -> tuple[type[BaseException], ...]:
    """The exception classes that mean "no connection" (drivers only where installed)."""
    found: list[type[BaseException]] = [
        sqlalchemy.exc.OperationalError,
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.DisconnectionError,
    ]
    try:
        import psycopg2

        found.append(psycopg2.OperationalError)
    except ImportError:
        pass
    try:
        import psycopg

        found.append(psycopg.OperationalError)
    except ImportError:
        pass
    return tuple(found)


def connection_lost(err: BaseException) -> bool:
    """Whether ``err`` (or what it wraps: Optuna re-raises SQLAlchemy's errors) is a lost connection."""
    return _lost_connection(err) is not None


def _lost_connection(err: BaseException) -> BaseException | None:
    """The connection error in ``err``'s chain (causes, and what it was raised while handling)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, (StorageUnavailable, StorageReconnected)):
            return None  # our own verdicts, whatever they were raised during
        if isinstance(current, _connection_errors()):
            return current
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def _reason(err: BaseException) -> str:
    """The first line of what the driver said, password masked."""
    current = _lost_connection(err) or err
    text = str(getattr(current, "orig", None) or current).strip()
    return mask_url(text.splitlines()[0].strip() if text else type(current).__name__)


def downtime_between(start: float, end: float) -> float:
    """Seconds of ``[start, end]`` (wall clock) during which this process saw the database down."""
    with _downtime_lock:
        spans = list(_downtime)
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in spans)


class Outage:
    """One database as this process sees it: up, or down since when; retries until a deadline.

    Shared by the threads of a process (the worker loop and its heartbeat), so an outage is
    logged once, its deadline is one, and once it has given up every caller fails at once.
    """

    def __init__(self, display: str, retry_s: float, retries: bool = True) -> None:
        self.display, self.retry_s, self.retries = display, retry_s, retries
        self._lock = threading.Lock()
        self._last_ok = time.time()  # wall clock: an outage may have begun right after it
        self._down_since: float | None = None  # monotonic
        self._span: int | None = None  # this outage's index in _downtime
        self._gave_up: StorageUnavailable | None = None

    def call(self, fn: Callable[[], T], resolve: Callable[[], T | None] | None = None) -> T:
        """``fn()``, retried while the database is unreachable.

        ``resolve`` is asked, once the database answers again, whether a failed attempt took
        effect after all (it returns the result then, None otherwise). Inside a budget-lock
        section (``critical``) a lost connection raises StorageReconnected instead.
        """
        attempt = 0
        while True:
            if self._gave_up is not None:
                raise StorageUnavailable(str(self._gave_up))
            try:
                result = fn()
            except Exception as err:
                if no_space(err):  # retrying cannot make room: one line, and the worker stops
                    where = " (the database server's disk)" if self.retries else ""
                    raise disk_full(self.display + where) from None
                if not self.retries or not connection_lost(err):
                    raise
                self._failed(err)
                if _critical.active:
                    raise StorageReconnected(self.display) from None
                self._pause(attempt)
                attempt += 1
                if resolve is not None:
                    done = self.call(resolve)
                    if done is not None:
                        return done
                continue
            self._succeeded()
            return result

    def _failed(self, err: BaseException) -> None:
        """Note the failure; past the deadline, give up with the one line the user reads."""
        now = time.monotonic()
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                with _downtime_lock:
                    _downtime.append((self._last_ok, float("inf")))
                    self._span = len(_downtime) - 1
                log.warning(
                    "study storage %s unreachable (%s): retrying for up to %g s (hpo.storage_retry_s)",
                    self.display,
                    _reason(err),
                    self.retry_s,
                )
            waited = now - self._down_since
            if waited >= self.retry_s:
                # The silence ends here: past this, nothing of this process beats, so an open span
                # would keep every heartbeat it judges alive (a process that lives on, or a test).
                with _downtime_lock:
                    if self._span is not None:
                        _downtime[self._span] = (_downtime[self._span][0], time.time())
                self._gave_up = StorageUnavailable(self._give_up_line(waited, err))
                raise StorageUnavailable(str(self._gave_up)) from None

    def _give_up_line(self, waited: float, err: BaseException) -> str:
        if self.retry_s == 0:
            how = "hpo.storage_retry_s is 0 (no retry)"
        else:
            how = f"gave up after {waited:.0f} s (hpo.storage_retry_s: {self.retry_s:g})"
        return f"hpo.storage: lost {self.display}: {how}: {_reason(err)}"

    def _pause(self, attempt: int) -> None:
        """Exponential backoff with jitter, never past the deadline (one last try at it)."""
        delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2**attempt) * random.uniform(0.5, 1.0)
        with self._lock:
            since = self._down_since
        if since is not None:
            delay = min(delay, max(0.0, since + self.retry_s - time.monotonic()))
        time.sleep(delay)

    def _succeeded(self) -> None:
        now = time.time()
        if self._down_since is None:  # the common case: no lock, one attribute write
            self._last_ok = now
            return
        with self._lock:
            if self._down_since is not None:
                log.warning(
                    "study storage %s reachable again after %.1f s",
                    self.display,
                    time.monotonic() - self._down_since,
                )
                with _downtime_lock:
                    if self._span is not None:
                        _downtime[self._span] = (_downtime[self._span][0], now)
                self._down_since, self._span = None, None
            self._last_ok = now


class _Critical(threading.local):
    active = False


_critical = _Critical()


@contextmanager
def critical() -> Iterator[None]:
    """A budget-lock section of this thread: a lost connection in it raises StorageReconnected."""
    before = _critical.active
    _critical.active = True
    try:
        yield
    finally:
        _critical.active = before


class RetryingStorage(optuna.storages.BaseStorage):
    """A study storage whose calls ride out an outage of its database (see the module docstring),
    and whose writes on a full disk fail in one line naming the file (files: nothing retried).

    ``rdb`` is the RDB storage underneath (None for a journal), for the budget lock's connection.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, outage: Outage) -> None:
        self.outage = outage
        self.rdb = storage if isinstance(storage, optuna.storages.RDBStorage) else None
        self._inner = optuna.storages.get_storage(storage)  # Optuna's trial cache around an RDB
        self.memo = ReadMemo()  # repeated reads with nothing written between them (read_memo)

    def _retry(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self._inner, name)
        if not name.startswith("get_"):  # a write: what this process read before may be stale
            self.memo.forget()
        return self.outage.call(lambda: method(*args, **kwargs))

    def forget(self) -> None:
        """Read the trials afresh from now on (the budget lock counts other workers' trials)."""
        self.memo.forget()

    def _trial_write(self, trial_id: int, write: Callable[[], T], change: Callable[[FrozenTrial], None]) -> T:
        """``write`` to one trial, then shown in the remembered reads as a re-read would show it
        (:meth:`ReadMemo.patch`); a write that raised may or may not have landed: forgotten."""
        try:
            result = self.outage.call(write)
        except BaseException:
            self.memo.forget()
            raise
        self.memo.patch(trial_id, change)
        return result

    # -- studies
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        self.memo.forget_study()
        return int(self._retry("create_new_study", directions, study_name=study_name))

    def delete_study(self, study_id: int) -> None:
        self.memo.forget_study()
        self._retry("delete_study", study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry("set_study_system_attr", study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.memo.study_id(study_name, lambda: int(self._retry("get_study_id_from_name", study_name)))

    def get_study_name_from_id(self, study_id: int) -> str:
        return str(self._retry("get_study_name_from_id", study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.memo.directions(study_id, lambda: list(self._retry("get_study_directions", study_id)))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._retry("get_study_user_attrs", study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._retry("get_study_system_attrs", study_id))

    def get_all_studies(self) -> list[Any]:  # Optuna's FrozenStudy, not exported
        return list(self._retry("get_all_studies"))

    # -- trials
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        def already() -> int | None:  # a trial from a template: did the failed attempt commit it?
            assert template_trial is not None
            found = [
                t
                for t in self._inner.get_all_trials(study_id, deepcopy=False)
                if same_trial(t, template_trial)
            ]
            return trial_id(max(found, key=lambda t: t.number)) if found else None

        create = self._inner.create_new_trial
        self.memo.forget()
        return int(
            self.outage.call(lambda: create(study_id, template_trial), already if template_trial else None)
        )

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        def change(t: FrozenTrial) -> None:
            t.params[param_name] = distribution.to_external_repr(param_value_internal)
            t.distributions[param_name] = distribution

        inner = self._inner
        self._trial_write(
            trial_id,
            lambda: inner.set_trial_param(trial_id, param_name, param_value_internal, distribution),
            change,
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return int(self._retry("get_trial_id_from_study_id_trial_number", study_id, trial_number))

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        def already() -> bool | None:  # did the failed attempt finish the trial after all?
            now = self._inner.get_trial(trial_id)
            same_values = values is None or list(now.values or []) == [float(v) for v in values]
            return True if state.is_finished() and now.state == state and same_values else None

        write = self._inner.set_trial_state_values
        self.memo.forget()
        return bool(self.outage.call(lambda: write(trial_id, state, values), already))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        def change(t: FrozenTrial) -> None:
            t.intermediate_values[int(step)] = float(intermediate_value)

        inner = self._inner
        self._trial_write(
            trial_id, lambda: inner.set_trial_intermediate_value(trial_id, step, intermediate_value), change
        )

    def set_trial_intermediate_values(self, trial: optuna.Trial, points: Sequence[tuple[int, float]]) -> bool:
        """Several intermediate values of the live ``trial`` in one transaction (an upsert: safe
        to retry); False, with nothing written, when the storage is not an RDB (a journal: the
        caller reports them one by one; see :func:`write_intermediate_values`)."""
        if self.rdb is None:
            return False

        def change(t: FrozenTrial) -> None:
            t.intermediate_values.update((int(step), float(value)) for step, value in points)

        return bool(
            self._trial_write(
                trial_id(trial), lambda: write_intermediate_values(trial, points, self._inner), change
            )
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        def change(t: FrozenTrial) -> None:
            t.user_attrs[key] = json.loads(json.dumps(value))  # stored as JSON, read back from it

        inner = self._inner
        self._trial_write(trial_id, lambda: inner.set_trial_user_attr(trial_id, key, value), change)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        def change(t: FrozenTrial) -> None:
            set_system_attr(t, key, value)

        inner = self._inner
        self._trial_write(trial_id, lambda: inner.set_trial_system_attr(trial_id, key, value), change)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.memo.trial(trial_id, lambda: self._retry("get_trial", trial_id))

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if deepcopy:
            return list(self._retry("get_all_trials", study_id, deepcopy=True, states=states))
        return self.memo.trials(
            study_id, states, lambda: list(self._retry("get_all_trials", study_id, False))
        )

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        trial: FrozenTrial = self._retry("get_best_trial", study_id)
        return trial

    def remove_session(self) -> None:
        self._inner.remove_session()
