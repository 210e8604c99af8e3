"""Helpers for tests that run real sweep stages as processes (kill, resume, several workers)."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy.exc
import yaml
from optuna.trial import FrozenTrial, TrialState

from hpopipe.artifacts import sqlite_url
from hpopipe.sweep import lifecycle
from hpopipe.sweep.journal_file import is_journal, open_journal
from hpopipe.sweep.recovery import INTERRUPTED
from tests.conftest import REPO, TINY_PARAMS, subprocess_env

N_TRIALS = 5


def sweep_params(**hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["model"] = {"factory": "tests.failing_models:slow", "params": {}}
    # Median pruning by default; test_recovery runs the default Hyperband too.
    pruner = {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 2}
    raw["hpo"].update({"n_trials": N_TRIALS, "pruner": pruner, **hpo})
    raw["train"].update(max_epochs=6, patience=10)
    return raw


def start(workdir: Path, module: str = "stages.hpo", **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", module]
    # Slow enough that a poll under load still finds a trial mid-way (0.01 missed one under xdist).
    environment = subprocess_env(**{"PYTHONPATH": str(REPO), "HPOPIPE_TEST_DELAY": "0.03", **env})
    return subprocess.Popen(
        cmd,
        cwd=workdir,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def run_stage(workdir: Path, module: str = "stages.hpo", **env: str) -> subprocess.CompletedProcess[str]:
    proc = start(workdir, module, **env)
    out, _ = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def study_file(workdir: Path) -> Path:
    """The study file of a project in ``workdir``: the default journal, else a SQLite file
    (``hpo.storage: sqlite``)."""
    journal = workdir / "artifacts/hpo/study.journal"
    return journal if journal.exists() else workdir / "artifacts/hpo/study.db"


def study_storage(workdir: Path) -> optuna.storages.BaseStorage | str:
    """The storage of :func:`study_file` (never created), without hpopipe's read memo: a test reads
    what the stage processes wrote."""
    path = study_file(workdir)
    assert path.exists(), f"no study file in {path.parent}"
    return open_journal(path) if is_journal(path) else sqlite_url(path)


def load(workdir: Path) -> optuna.Study:
    storage = study_storage(workdir)
    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


@functools.cache
def _polling_storage(path: Path) -> optuna.storages.BaseStorage:
    """One storage (one engine) per study file for a poll loop: a new one per poll cost enough
    under load that a poll missed a trial's window."""
    if is_journal(path):
        return open_journal(path)
    return optuna.storages.RDBStorage(sqlite_url(path))


def _tables_made(db: Path) -> bool:
    """Whether the stage has made its study file: for SQLite, Optuna's tables (its alembic version
    row is written last). Opening a storage earlier would create them too, racing the stage's own
    creation (a UNIQUE constraint on alembic_version then killed the stage)."""
    if not db.exists():
        return False
    if is_journal(db):
        return db.stat().st_size > 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
            return conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] > 0
    except sqlite3.Error:
        return False


_joined: list[bool] = []  # this process has seen a second worker join (second_worker_joined)
_STARTED = time.time()  # loaded by the sweep as it starts: older worker records are an earlier run's


def second_worker_joined(study: optuna.Study, trial: FrozenTrial) -> None:
    """An ``hpo.callbacks`` hook: a worker waits after its first trial until another worker of this
    run has taken a trial (or already exited).

    The hpo stage is a worker too, already imported: on small trials it would otherwise run them
    all before the process beside it has started, and a test of two workers would see one. A worker
    that has only joined may still lose every remaining trial to this one, and the records of an
    earlier run's workers (an extended sweep) say "exited" from the start: neither counts.
    """
    if trial.user_attrs.get(INTERRUPTED):
        return  # this worker is stopping: nobody is left to wait for
    mine = f":{os.getpid()}"  # the end of this worker's id, host:pid
    deadline = time.monotonic() + 120
    while not _joined and time.monotonic() < deadline:
        theirs = [
            t
            for t in study.get_trials(deepcopy=False)
            if not str(t.user_attrs.get("worker", "")).endswith(mine)
        ]
        taken = any(t.datetime_start and t.datetime_start.timestamp() >= _STARTED for t in theirs)
        gone = [r for r in lifecycle.workers(study).values() if r.get("state") == "exited"]
        exited = any(r.get("pid") != os.getpid() and float(r.get("heartbeat", 0)) >= _STARTED for r in gone)
        if taken or exited:
            _joined.append(True)  # the sweep is past its start
        else:
            time.sleep(0.1)


def wait_mid_trial(workdir: Path, proc: subprocess.Popen[str], number: int, epochs: int = 2) -> None:
    """Block until trial ``number`` is RUNNING with at least ``epochs`` epochs reported."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        db = study_file(workdir)
        try:
            if not _tables_made(db):
                raise ValueError("no study yet")
            storage = _polling_storage(db)
            (name,) = optuna.study.get_all_study_names(storage)
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        except (ValueError, KeyError, sqlite3.Error, sqlalchemy.exc.SQLAlchemyError):
            trials = []  # not created yet, or busy: poll again
        running = [t for t in trials if t.number == number and t.state == TrialState.RUNNING]
        if running and len(running[0].intermediate_values) >= epochs:
            return
        time.sleep(0.05)
    raise AssertionError(f"trial {number} never got to epoch {epochs}")


def assert_invariants(workdir: Path, n_trials: int = N_TRIALS) -> None:
    trials = load(workdir).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), t.number
            assert any(r.user_attrs.get("retry_of") == t.user_attrs.get("retry_of", t.number) for r in trials)
    exported = pd.read_csv(workdir / "artifacts/hpo/trials.csv")
    assert exported["number"].is_unique and len(exported) == len(trials)
