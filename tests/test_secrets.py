"""A canary password in the storage URL, through the whole pipeline with a failure and a crash,
reaches none of: logs, dvc.lock, DVC's cache and run-cache, exports, MLflow, the study's attributes.

The storage URL comes from an environment variable named in params.yaml (``env:VAR``); this
machine's PostgreSQL uses trust authentication, which ignores the password, so the canary can
ride along in a real connection string.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from tests.conftest import REPO, TINY_PARAMS, make_project, subprocess_env

pytestmark = pytest.mark.slow
CANARY = "canary-pw-31337"  # the password the postgres_url fixture puts in the URL


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    # One storage (one connection pool) per database: a new one per poll would hold a connection
    # each until garbage-collected, and PostgreSQL refuses clients past max_connections.
    return optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://"))


def trials(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        storage = _storage(url)
        (name,) = optuna.study.get_all_study_names(storage)
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except (ValueError, sqlalchemy.exc.SQLAlchemyError):
        return []


def test_a_canary_password_leaks_nowhere(tmp_path: Path, postgres_url: str) -> None:
    assert CANARY in postgres_url
    raw = yaml.safe_load(TINY_PARAMS)
    raw["model"] = {"factory": "tests.failing_models:slow_flaky", "params": {}}
    raw["hpo"].update(storage="env:HPOPIPE_TEST_DB", n_trials=4, max_failures=10)
    root = make_project(tmp_path / "p", yaml.safe_dump(raw))
    env = subprocess_env(
        PYTHONPATH=str(REPO),
        HPOPIPE_TEST_DELAY="0.02",
        HPOPIPE_TEST_DB=postgres_url,
        HPOPIPE_TRACKING="on",
        HPOPIPE_LOG_LEVEL="DEBUG",
        MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db",
    )
    # A crash: the whole `dvc repro` process group killed in the middle of a trial.
    with (root / "first.log").open("wb") as log:
        proc = subprocess.Popen(
            ["dvc", "repro"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 300
    while not any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials(postgres_url)):
        assert proc.poll() is None and time.monotonic() < deadline, (root / "first.log").read_text()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    second = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    done = trials(postgres_url)
    assert any(t.user_attrs.get("retry_of") is not None for t in done)  # the crash was retried
    assert any("width 32" in str(t.user_attrs.get("fail_reason", "")) for t in done)  # and a failure
    # Nowhere: every file of the project (dvc.lock, .dvc/cache incl. runs/, exports, metrics,
    # checkpoints, mlflow.db with its params and tags), both runs' output, the study's attributes.
    files = [p for p in root.rglob("*") if p.is_file()]
    assert [str(p.relative_to(root)) for p in files if CANARY.encode() in p.read_bytes()] == []
    assert (root / ".dvc/cache/runs").is_dir()  # the run-cache was written, and searched
    logs = (root / "first.log").read_text(errors="replace") + second.stdout + second.stderr
    assert CANARY not in logs and CANARY not in repr([(t.user_attrs, t.params) for t in done])
    assert "postgresql+psycopg2://postgres:***@" in logs  # the URL was logged, masked
