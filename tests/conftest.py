"""Shared fixtures: every test gets its own MLflow store and no tracking unless it asks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Fixtures shared by the modules that need a real Prefect server (`server`, `client`).
pytest_plugins = ["tests.prefect_server"]


@pytest.fixture(scope="module")
def prepared() -> tuple[Any, dict]:
    """The default data prepared with TINY_PARAMS: (train frame, schema file's mapping), once a module."""
    from hpopipe.config import parse_params
    from hpopipe.data import prepare, read_table

    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    params = parse_params(raw)
    prep = prepare(read_table(params.data.path), params.data, params.seed)
    return prep.train, prep.schema.plain()


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}/mlflow.db")
    monkeypatch.setenv("HPOPIPE_TRACKING", "off")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")


@pytest.fixture
def postgres_url() -> Any:
    """A database of our own on this machine's PostgreSQL; the URL carries a canary password."""
    import uuid

    import sqlalchemy

    name = f"hpopipe_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    # Trust authentication ignores the password: it is there to prove it never leaks.
    yield f"postgresql://postgres:canary-pw-31337@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def inside(root: Path) -> Iterator[None]:
    """Run in ``root`` with tracking off, as DVC would run the stages there."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("HPOPIPE_TRACKING", "off")
        yield


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: the venv's tools first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
    )
    env.update(extra)
    return env


def make_project(root: Path, params: str) -> Path:
    """A fresh git + DVC repo holding a copy of this project's pipeline and the given params.yaml."""
    for name in ("src", "stages", "data/raw"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / "params.yaml").write_text(params)
    env = subprocess_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=root, check=True, env=env)
    return root


TINY_PARAMS = """\
seed: 7
data:
  path: data/raw/breast_cancer.csv
  target: diagnosis
  test_size: 0.25
model:
  name: mlp
search_space:
  lr: {type: log_uniform, min: 1.0e-3, max: 3.0e-2}
  n_layers: {type: int_uniform, min: 1, max: 2}
  width: {type: choice, values: [16, 32]}
  dropout: {type: uniform, min: 0.0, max: 0.3, step: 0.1}
hpo:
  n_trials: 4
  metric: macro_f1
  sampler: {name: tpe, n_startup_trials: 2}
  pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 1}
train:
  max_epochs: 6
  patience: 3
cv:
  top_k: 2
  folds: 2
refit:
  epochs: auto
cleanup:
  keep_best: 1
"""
