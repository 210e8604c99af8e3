"""A canary password in the storage URL, through the whole pipeline with a failure and a crash,
reaches none of: logs, dvc.lock, DVC's cache and run-cache, exports, MLflow, the study's attributes.
Then one canary per URL form (a password with '/' and '@' in the userinfo, a password query
parameter, a password in MLFLOW_TRACKING_URI on PostgreSQL), each through a whole pipeline.

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
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from tests.canaries import CANARIES, MLFLOW_PW, QUERY_PW, USERINFO_PW
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


# ---------------------------------------------------------------- every URL form, one sweep each


@pytest.fixture
def databases() -> Any:
    """Two fresh databases of our own (the study's and MLflow's), dropped afterwards."""
    import uuid

    names = [f"hpopipe_canary_{uuid.uuid4().hex[:10]}_{i}" for i in range(2)]
    admin = sqlalchemy.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        for name in names:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield names
    with admin.connect() as conn:
        for name in names:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def dump_database(name: str) -> str:
    """Every row of every table, as text: the study's attributes, MLflow's params, tags and runs."""
    engine = sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
    try:
        with engine.connect() as conn:
            tables = sqlalchemy.inspect(conn).get_table_names()
            rows = [
                repr(row)
                for table in tables
                for row in conn.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))
            ]
    finally:
        engine.dispose()
    return "\n".join(rows)


def form_settings(form: str, study_db: str, mlflow_db: str, root: Path) -> tuple[str, dict[str, str]]:
    """(hpo.storage, environment) for one URL form; every form tracks to MLflow."""
    pg = "127.0.0.1:5432"
    if form == "userinfo-slash-at":
        url = f"postgresql://postgres:{USERINFO_PW}@{pg}/{study_db}"
        return "env:HPOPIPE_TEST_DB", {
            "HPOPIPE_TEST_DB": url,
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        }
    if form == "query":
        url = f"postgresql://postgres@{pg}/{study_db}?sslmode=disable&password={QUERY_PW}"
        return "env:HPOPIPE_TEST_DB", {
            "HPOPIPE_TEST_DB": url,
            "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        }
    # MLFLOW_TRACKING_URI on PostgreSQL, the bare scheme (SQLAlchemy's default driver, psycopg 3, is absent)
    return "sqlite", {"MLFLOW_TRACKING_URI": f"postgresql://postgres:{MLFLOW_PW}@{pg}/{mlflow_db}"}


@pytest.mark.parametrize("form", ["userinfo-slash-at", "query", "mlflow-tracking-uri"])
def test_every_url_form_leaks_nowhere(tmp_path: Path, databases: list[str], form: str) -> None:
    """A tiny whole pipeline per form; then every file, both logs and both databases are searched."""
    study_db, mlflow_db = databases
    root = tmp_path / "p"
    root.mkdir()
    storage, env_extra = form_settings(form, study_db, mlflow_db, root)
    raw = yaml.safe_load(TINY_PARAMS)
    raw["hpo"].update(storage=storage, n_trials=2)
    raw["train"]["max_epochs"] = 2
    raw["cv"]["top_k"] = 1
    make_project(root, yaml.safe_dump(raw))
    env = subprocess_env(HPOPIPE_TRACKING="on", HPOPIPE_LOG_LEVEL="DEBUG", **env_extra)

    proc = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    logs = proc.stdout + proc.stderr
    found = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    dumps = {name: dump_database(name) for name in databases}
    assert (root / ".dvc/cache/runs").is_dir() and (root / "reports/index.html").is_file()
    for canary in CANARIES:
        assert [str(p.relative_to(root)) for p, data in found.items() if canary.encode() in data] == []
        assert canary not in logs
        assert [name for name, dump in dumps.items() if canary in dump] == []
    if form == "mlflow-tracking-uri":  # MLflow did write there: the search had something to search
        assert "hpo" in dumps[mlflow_db] and "study_hash" in dumps[mlflow_db]
    else:
        assert "trial_values" in dumps[study_db] or "COMPLETE" in dumps[study_db]
        assert "postgres:***@" in logs or "password=***" in logs  # the URL was logged, masked
