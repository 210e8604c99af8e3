"""Shared fixtures: every test gets its own MLflow store and no tracking unless it asks."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Fixtures shared by the modules that need a real Prefect server (`server`, `client`).
pytest_plugins = ["tests.prefect_server"]


# Under `pytest -n 2 --dist loadgroup` (make test) a group runs whole on one worker. A module joins one
# when its tests share an expensive module-scoped fixture (built once, not once per worker) or start
# servers: the Prefect and MLflow-server modules share one group, so never two servers on free ports at
# once and the first `import prefect` of a worker keeps the server's PREFECT_HOME, as in a serial run.
XDIST_GROUPS = {
    "test_api": "api",  # one finished pipeline, copied per test
    "test_bad_input": "bad_input",  # base_project: the pipeline up to refit
    "test_orchestrate": "orchestrate",  # tiny DVC project, the first retrain
    "test_pareto": "pareto",  # two multi-objective sweeps
    "test_pipeline_dvc": "pipeline_dvc",  # a whole `dvc repro`
    "test_experiments_dvc": "experiments_dvc",  # one project, its experiments in turn
    "test_recovery": "recovery",  # the straight sweep every resume is compared with
    "test_report": "report",  # a classification and a regression pipeline
    "test_flows": "servers",
    "test_served_model": "servers",  # two pipelines once, `mlflow models serve` on free ports, in order
    "test_sweep_flow": "servers",
    "test_workers": "servers",
}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two workers on a 2-core machine: torch's intra-op threads would only contend (it reads
        # OMP_NUM_THREADS at import; stage processes inherit it). The sweep agent sets its own share.
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = XDIST_GROUPS.get(item.path.stem)
        if group and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(group))


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


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/prepared of the sweep tests' params (the prepare stage as a process), once per session.

    Copy it into a project (shutil.copytree); never write into it.
    """
    from tests.sweeps import run_stage, sweep_params

    workdir = tmp_path_factory.mktemp("prepared")
    (workdir / "params.yaml").write_text(yaml.safe_dump(sweep_params()))
    proc = run_stage(workdir, "stages.prepare")
    assert proc.returncode == 0, proc.stdout
    return workdir / "data/prepared"


@pytest.fixture(scope="module")
def problem() -> dict[str, Any]:
    """240 training and 60 validation rows of a 5-feature problem, for classification and regression."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    y_cls = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    y_reg = (x @ np.arange(5) + 0.1 * rng.normal(size=300)).astype(np.float32)
    return {"x": x, "y_cls": y_cls, "y_reg": y_reg}


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
    """Environment for a child process: the venv's tools first on PATH, this checkout's code first.

    ``src`` leads PYTHONPATH so a child imports this checkout's library even where the
    venv's editable install points at another one (a git worktree).
    """
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
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *([rest] if rest else [])])
    return env


def scikit_learn_loaded_after(code: str) -> list[str]:
    """Which of scikit-learn and scipy a fresh interpreter has loaded after running ``code``
    (this checkout's library first on its path): each costs a stage about half a second."""
    code += "; import sys; print(' '.join(m for m in ('sklearn', 'scipy') if m in sys.modules))"
    env = subprocess_env()
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


DROP: Any = object()
"""A value for :func:`params_variant` that removes the key instead of setting it."""


def params_variant(base_text: str, changes: dict[str, Any]) -> str:
    """``base_text`` (a params.yaml) with each dotted key in ``changes`` set (or dropped, for ``DROP``).

    Edits the parsed YAML, so a change that no longer matches the template fails loudly instead of
    silently doing nothing: the parent of every dotted key must exist (a KeyError otherwise).
    """
    raw = yaml.safe_load(base_text)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for depth, key in enumerate(parents):
            if not isinstance(node, dict) or key not in node:
                raise KeyError(f"params_variant: {'.'.join(parents[: depth + 1])} is not in the template")
            node = node[key]
        if not isinstance(node, dict):
            raise KeyError(f"params_variant: {'.'.join(parents)} is not a mapping")
        if value is DROP:
            if leaf not in node:
                raise KeyError(f"params_variant: {dotted} is not in the template, nothing to drop")
            del node[leaf]
        else:
            node[leaf] = value
    return yaml.safe_dump(raw, sort_keys=False)


def dvc_repro(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Run `dvc repro` in ``root`` to the end (it must succeed); the stages that ran, and the output."""
    proc = subprocess.run(
        ["dvc", "repro", *args], cwd=root, env=env or subprocess_env(), capture_output=True, text=True
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return re.findall(r"Running stage '(\w+)'", out), out


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


def pid_gone(pid: int, within_s: float = 5.0) -> bool:
    """Whether process ``pid`` is gone within ``within_s`` seconds (polled every 20 ms)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False
