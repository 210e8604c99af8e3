"""The study's database goes away mid-sweep: workers ride it out, or give up in one line.

The fast tests make a committed write look lost (a connection error raised right after the
COMMIT, through SQLAlchemy's own event hook, on a real SQLite study): the retry must not write
twice. The slow ones stop a throwaway PostgreSQL cluster (tests/pg_cluster.py) under a real hpo
stage with two workers.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import sqlalchemy.exc
import yaml
from optuna.trial import FrozenTrial, TrialState

from hpopipe.artifacts import sqlite_url
from hpopipe.config import parse_params
from hpopipe.errors import StorageReconnected, StorageUnavailable
from hpopipe.sweep import outage
from hpopipe.sweep.budget import FINISHED
from hpopipe.sweep.optuna_internals import trial_id
from hpopipe.sweep.outage import Outage, RetryingStorage, connection_lost, critical
from hpopipe.sweep.workers import fail_stale
from tests import pg_cluster

# ---------------------------------------------------------------- a commit that looks lost


class LostAfterCommit:
    """Raise a connection error right after the next ``n`` COMMITs succeeded: the ambiguous case."""

    def __init__(self, rdb: optuna.storages.RDBStorage) -> None:
        self.armed, self.wrote = 0, False
        factory = rdb.scoped_session.session_factory
        sqlalchemy.event.listen(factory, "after_flush", self._flushed)
        sqlalchemy.event.listen(factory, "after_commit", self._committed)

    def _flushed(self, *_: Any) -> None:
        self.wrote = True

    def _committed(self, _session: Any) -> None:
        wrote, self.wrote = self.wrote, False
        if self.armed and wrote:  # a write, not a read's commit
            self.armed -= 1
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))


# What a plain storage raises then (Optuna's rollback after the hook may fail on its own).
LOOKS_LOST = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[tuple[optuna.Study, LostAfterCommit]]:
    rdb = optuna.storages.RDBStorage(sqlite_url(tmp_path / "s.db"))
    fault = LostAfterCommit(rdb)
    storage = RetryingStorage(rdb, Outage("the test storage", retry_s=30))
    yield optuna.create_study(study_name="s", storage=storage), fault
    rdb.engine.dispose()


def test_a_finished_trial_whose_commit_looked_lost_is_told_once(flaky: Any) -> None:
    study, fault = flaky
    trial = study.ask()
    trial.report(0.5, 1)
    fault.armed = 1
    study.tell(trial, 0.9)  # retried: the retry sees it COMPLETE with 0.9 and does not write again
    (told,) = study.trials
    assert told.state == TrialState.COMPLETE and told.value == 0.9


def test_a_queued_retry_whose_commit_looked_lost_is_queued_once(flaky: Any) -> None:
    study, fault = flaky
    fault.armed = 1
    study.enqueue_trial({"x": 1.0}, user_attrs={"retry_of": 0}, skip_if_exists=False)
    assert [t.state for t in study.trials] == [TrialState.WAITING]


def test_without_the_check_the_retry_would_fail_or_duplicate(tmp_path: Path) -> None:
    """The control: a plain retry of the same two writes goes wrong, which is why they are checked."""
    rdb = optuna.storages.RDBStorage(sqlite_url(tmp_path / "s.db"))
    fault = LostAfterCommit(rdb)
    study = optuna.create_study(study_name="s", storage=rdb)
    fault.armed = 1
    with pytest.raises(LOOKS_LOST):
        study.enqueue_trial({"x": 1.0}, skip_if_exists=False)
    study.enqueue_trial({"x": 1.0}, skip_if_exists=False)
    assert len(study.trials) == 2  # committed twice
    trial = study.ask()
    finish = lambda: rdb.set_trial_state_values(trial_id(trial), TrialState.COMPLETE, [0.9])  # noqa: E731
    fault.armed = 1
    with pytest.raises(LOOKS_LOST):
        finish()
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        finish()  # what a blind retry of the storage call meets
    rdb.engine.dispose()


def test_a_trial_asked_for_when_the_lock_was_lost_is_failed_and_retried(flaky: Any) -> None:
    """Inside the budget lock a lost connection starts the section over; an orphan it left is retried."""
    study, fault = flaky
    fault.armed = 1
    with pytest.raises(StorageReconnected), critical():
        study.ask()  # committed, but the worker never learns its number
    (orphan,) = study.trials
    assert orphan.state == TrialState.RUNNING and "worker" not in orphan.user_attrs
    assert fail_stale(study, grace_s=60, max_retry=2) == 1
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].user_attrs["retry_of"] == 0


def test_only_connection_errors_are_retried() -> None:
    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    try:
        raise optuna.exceptions.StorageInternalError("commit failed") from lost
    except optuna.exceptions.StorageInternalError as err:
        assert connection_lost(err)
    assert not connection_lost(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not connection_lost(ValueError("bad value"))


def test_past_the_deadline_one_line_names_the_storage_and_the_wait() -> None:
    gone = Outage("postgresql+psycopg2://me:***@db:5432/hpo", retry_s=0.5)

    def refused() -> None:
        raise sqlalchemy.exc.OperationalError("connect", {}, Exception('connection to server at "db" failed'))

    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as err:
        gone.call(refused)
    assert time.monotonic() - started >= 0.5  # it waited out the setting
    line = str(err.value)
    assert "\n" not in line and line.startswith("hpo.storage: lost postgresql+psycopg2://me:***@db:5432/hpo")
    assert "hpo.storage_retry_s: 0.5" in line and 'connection to server at "db" failed' in line
    with pytest.raises(StorageUnavailable):  # given up: later calls fail at once
        gone.call(lambda: None)


def test_heartbeats_missed_while_the_database_was_down_do_not_count() -> None:
    from hpopipe.sweep.lifecycle import worker_alive

    now = time.time()
    with outage._downtime_lock:
        outage._downtime.append((now - 50.0, now - 5.0))  # this process saw the database down 45 s
    try:
        record = {"host": "elsewhere", "pid": 1, "heartbeat": now - 70.0, "state": "running"}
        assert worker_alive(record, grace_s=60.0, now=now)  # 70 s silent, 45 of them an outage
        assert not worker_alive({**record, "heartbeat": now - 120.0}, grace_s=60.0, now=now)
    finally:
        with outage._downtime_lock:
            outage._downtime.pop()


def test_storage_retry_s_defaults_to_a_minute_and_is_never_negative() -> None:
    from tests.sweeps import sweep_params

    assert parse_params(sweep_params()).hpo.storage_retry_s == 60.0
    with pytest.raises(Exception, match="storage_retry_s"):
        parse_params(sweep_params(storage_retry_s=-1))


# ---------------------------------------------------------------- a real server, stopped mid-sweep

N_TRIALS = 8


@pytest.fixture
def pg() -> Iterator[pg_cluster.Cluster]:
    why = pg_cluster.missing()
    if why:
        pytest.skip(why)
    with pg_cluster.cluster() as server:
        yield server


def _project(workdir: Path, prepared: Path, **hpo: Any) -> Path:
    from tests.sweeps import sweep_params

    raw = sweep_params(n_trials=N_TRIALS, n_workers=2, storage="env:HPOPIPE_TEST_PG", **hpo)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copytree(prepared, workdir / "data/prepared")
    return workdir


@contextlib.contextmanager
def _study(url: str) -> Iterator[optuna.Study]:
    """The sweep's study, its connections closed afterwards: the test's own cluster takes few
    clients, and a poll that left one engine per call open ran out of them ("too many clients")."""
    storage = optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://"))
    try:
        (name,) = optuna.study.get_all_study_names(storage)
        yield optuna.load_study(study_name=name, storage=storage)
    finally:
        storage.engine.dispose()


def _trials(url: str) -> list[FrozenTrial]:
    with _study(url) as study:
        return study.get_trials(deepcopy=False)


def _wait_mid_sweep(url: str, proc: subprocess.Popen[str]) -> list[int]:
    """Block until a trial finished and another is RUNNING past its first epoch; the RUNNING ones."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            trials = _trials(url)
        except (ValueError, KeyError, sqlalchemy.exc.SQLAlchemyError):
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and len(t.intermediate_values) >= 1]
        if running and any(t.state in FINISHED for t in trials):
            return [t.number for t in trials if t.state == TrialState.RUNNING]
        time.sleep(0.1)
    raise AssertionError("the sweep never got going")


def _assert_budget_exact(url: str, running_at_outage: list[int]) -> None:
    trials = _trials(url)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert sum(t.state in FINISHED for t in trials) == N_TRIALS  # budget exact
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    origins = [int(t.user_attrs.get("retry_of", t.number)) for t in trials if t.state in FINISHED]
    assert len(set(origins)) == len(origins)  # 0 duplicates: no trial finished twice (itself and a retry)
    finished_origins = set(origins)
    for number in running_at_outage:  # 0 lost: finished, or failed and retried to the end
        assert number in finished_origins, number


def _run(workdir: Path, url: str, **env: str) -> subprocess.Popen[str]:
    from tests.sweeps import start

    return start(workdir, HPOPIPE_TEST_DELAY="0.05", HPOPIPE_TEST_PG=url, HPOPIPE_LOG_LEVEL="INFO", **env)


@pytest.mark.slow
def test_two_workers_ride_out_a_20_s_outage(
    tmp_path: Path, prepared_dir: Path, pg: pg_cluster.Cluster
) -> None:
    url = pg.create_database(f"outage_{uuid.uuid4().hex[:8]}")
    workdir = _project(tmp_path / "p", prepared_dir)
    proc = _run(workdir, url)
    running = _wait_mid_sweep(url, proc)
    pg.stop()
    time.sleep(20)
    assert proc.poll() is None  # nobody gave up
    pg.start()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert "unreachable" in out and "reachable again after" in out
    _assert_budget_exact(url, running)


@pytest.mark.slow
def test_an_outage_past_storage_retry_s_fails_in_one_line_and_the_next_run_finishes(
    tmp_path: Path, prepared_dir: Path, pg: pg_cluster.Cluster
) -> None:
    url = pg.create_database(f"outage_{uuid.uuid4().hex[:8]}")
    workdir = _project(tmp_path / "p", prepared_dir, storage_retry_s=3)
    proc = _run(workdir, url)
    running = _wait_mid_sweep(url, proc)
    pg.stop()
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("hpopipe: error:")]
    assert errors and errors[-1] == out.strip().splitlines()[-1]  # the stage's own last word
    for line in errors:  # the stage's and each worker's: the storage (port), the setting, the wait
        assert f"hpo.storage: lost postgresql+psycopg2://postgres@127.0.0.1:{pg.port}/" in line, line
        assert "gave up after" in line and "(hpo.storage_retry_s: 3)" in line, line
    pg.start()
    again = _run(workdir, url)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out
    _assert_budget_exact(url, running)
