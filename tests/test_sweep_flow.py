"""The ``sweep`` flow on real parts: a Prefect server, a process work pool with two workers, PostgreSQL.

Two ``prefect worker start --pool`` processes stand for two machines; the worker deployment is
registered with ``hpopipe deploy-worker`` as the README says; the sweep flow fans out two runs of
it against a study on the PostgreSQL of this machine (a database of our own, dropped after).
The storage URL is given through an environment variable and carries a password (trust auth
ignores it), so the tests can check that it never reaches Prefect.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import FrozenTrial, TrialState

from tests.canaries import CANARIES, MLFLOW_PW, QUERY_PW, USERINFO_PW
from tests.conftest import REPO, TINY_PARAMS, subprocess_env
from tests.prefect_server import Server, stop

pytestmark = pytest.mark.slow

N_TRIALS = 6
POOL = "sweep-pool"
PASSWORD = "s3cr3t-canary"
STORAGE_ENV = "HPOPIPE_TEST_STORAGE"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# ---------------------------------------------------------------- PostgreSQL


def _admin(sql: str) -> None:
    """One statement on the server's maintenance database, outside a transaction."""
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    try:
        conn.autocommit = True  # CREATE / DROP DATABASE refuse to run in a transaction
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def form() -> str:
    """How the storage URL carries its secret; the canary test parametrizes it (test_secrets' forms)."""
    return "plain"


@pytest.fixture
def database(form: str) -> Iterator[str]:
    """A fresh database for one test, dropped after; its URL carries a password trust auth ignores.

    With ``form`` ``mlflow-tracking-uri`` the study's URL has none and a second database, for
    MLflow, gets it (see :func:`form_env`).
    """
    name = f"hpopipe_test_{uuid.uuid4().hex[:12]}"
    names = [name, f"{name}_mlflow"] if form == "mlflow-tracking-uri" else [name]
    for each in names:
        _admin(f"CREATE DATABASE {each}")
    try:
        yield storage_url(form, name)
    finally:
        for each in names:
            _admin(f"DROP DATABASE IF EXISTS {each} WITH (FORCE)")


def storage_url(form: str, name: str) -> str:
    pg = "127.0.0.1:5432"
    if form == "userinfo-slash-at":
        return f"postgresql://postgres:{USERINFO_PW}@{pg}/{name}"
    if form == "query":
        return f"postgresql://postgres@{pg}/{name}?sslmode=disable&password={QUERY_PW}"
    if form == "mlflow-tracking-uri":
        return f"postgresql://postgres@{pg}/{name}"
    return f"postgresql://postgres:{PASSWORD}@{pg}/{name}"


@pytest.fixture
def form_env(form: str, database: str) -> dict[str, str]:
    """What else the form puts in the workers' environment: the most verbose logs (the canary is
    looked for in all of them, whatever HPOPIPE_LOG_LEVEL CI runs with), MLflow tracking to PostgreSQL."""
    if form == "plain":
        return {}
    verbose = {"HPOPIPE_LOG_LEVEL": "DEBUG"}
    if form != "mlflow-tracking-uri":
        return verbose
    name = database.rsplit("/", 1)[1]
    uri = f"postgresql://postgres:{MLFLOW_PW}@127.0.0.1:5432/{name}_mlflow"
    return {**verbose, "HPOPIPE_TRACKING": "on", "MLFLOW_TRACKING_URI": uri}


# ---------------------------------------------------------------- the project and the pool


def sweep_params() -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    # Slow forward passes, so a worker can be killed in the middle of a trial.
    raw["model"] = {"factory": "tests.failing_models:slow", "params": {}}
    pruner = {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 2}
    raw["hpo"].update(
        n_trials=N_TRIALS, pruner=pruner, storage=f"env:{STORAGE_ENV}", heartbeat_s=1, grace_s=5
    )
    raw["train"].update(max_epochs=6, patience=10)
    return raw


def _env(server: Server, storage: str, **extra: str) -> dict[str, str]:
    """What the workers and the sweep flow run with: the server, the storage URL, the slow model."""
    return {
        **server.env,
        STORAGE_ENV: storage,
        "PYTHONPATH": str(REPO),  # tests.failing_models
        # Trials of a few seconds: long enough that the second machine joins before the first
        # has run them all, and that a kill lands mid-trial.
        "HPOPIPE_TEST_DELAY": "0.06",  # 0.04 let one machine finish all 6 once (CI, Nov 30)
        "HPOPIPE_TRACKING": "off",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        **extra,
    }


@pytest.fixture
def project(tmp_path: Path, prepared_dir: Path, server: Server, database: str) -> Path:
    """A checkout with prepared data and flows/, whose worker deployment is registered."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(sweep_params()))
    shutil.copytree(prepared_dir, root / "data/prepared")
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "hpopipe.cli", "deploy-worker", "--pool", POOL]
    proc = subprocess.run(cmd, cwd=root, env=_env(server, database), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registered deployment sweep-worker/hpopipe-worker" in proc.stdout
    return root


@pytest.fixture(scope="module")
def pool(server: Server) -> str:
    """A process work pool on the test server."""
    cmd = [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"]
    proc = subprocess.run(cmd, env=server.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return POOL


@pytest.fixture
def workers(
    server: Server, pool: str, database: str, form_env: dict[str, str], tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two Prefect workers on the pool, one flow run at a time each: two machines.

    Started per test because a flow run inherits its worker's environment, which is where the
    storage URL (and its password) lives: Prefect never sees it.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(2):
            cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", "1"]
            with (tmp_path / f"machine-{i}.log").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [*cmd, "--name", f"machine-{i}"],
                        env=_env(server, database, **form_env),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield procs
    finally:
        for proc in procs:
            stop(proc)


# ---------------------------------------------------------------- running and reading the sweep


def start_sweep(root: Path, server: Server, storage: str, **extra: str) -> subprocess.Popen[str]:
    """The sweep flow with two workers, run in its own process as a user would run it."""
    code = f"from flows.sweep import sweep; sweep(project_dir={str(root)!r}, n_workers=2, timeout_s=500)"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=root,
        env=_env(server, storage, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        stop(proc)
    return out


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    # One connection pool per database: a new storage per poll would keep a connection each until
    # garbage-collected, and PostgreSQL refuses clients past max_connections.
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the dev extra installs psycopg2.
    return optuna.storages.RDBStorage(url.replace("postgresql://", "postgresql+psycopg2://"))


def trials_of(url: str) -> list[FrozenTrial]:
    try:
        storage = _storage(url)
        (name,) = optuna.study.get_all_study_names(storage)
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except (ValueError, sqlalchemy.exc.SQLAlchemyError):
        return []  # no study yet


def assert_exact_budget(trials: list[FrozenTrial]) -> None:
    """Exactly N_TRIALS counted, nothing left running, and no trial counted twice.

    A retry re-runs the params of a trial that died (user attr ``retry_of``), so two finished
    trials sharing an origin would be a duplicate.
    """
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    origins = [t.user_attrs.get("retry_of", t.number) for t in finished]
    assert len(set(origins)) == len(origins), origins


def sweep_runs(client: Any) -> tuple[Any, list[Any]]:
    """The last ``sweep`` flow run and its worker runs."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    [parent] = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=["sweep"])), sort=FlowRunSort.START_TIME_DESC, limit=1
    )
    children = [
        r
        for r in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["sweep-worker"])))
        if r.parent_task_run_id is not None
        and client.read_task_run(r.parent_task_run_id).flow_run_id == parent.id
    ]
    return parent, sorted(children, key=lambda r: r.name)


def summary_of(client: Any, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    [summary] = [a for a in artifacts if a.key == "sweep-summary"]
    return str(summary.data)


def logs_of(client: Any, flow_run_ids: list[Any]) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids)))
    return "\n".join(entry.message for entry in logs)


# ---------------------------------------------------------------- the tests


def test_two_pool_workers_share_the_sweep_exactly(
    project: Path, workers: list[Any], server: Server, client: Any, database: str
) -> None:
    out = finish(start_sweep(project, server, database))
    assert "Finished in state Completed" in out, out[-3000:]

    trials = trials_of(database)
    assert_exact_budget(trials)
    contributors = {t.user_attrs["worker"] for t in trials if t.state in FINISHED}
    assert len(contributors) == 2, contributors

    parent, children = sweep_runs(client)
    assert parent.state.is_completed()
    assert [r.name for r in children] == ["worker-0", "worker-1"]
    assert all(r.state.is_completed() for r in children)
    summary = summary_of(client, parent.id)
    assert f"**Trials:** {N_TRIALS} of {N_TRIALS} counted" in summary
    for worker in contributors:
        assert f"| {worker} |" in summary
    assert "**Best:** " in summary and "| worker-0 | Completed |" in summary
    assert PASSWORD not in summary + logs_of(client, [parent.id, *(r.id for r in children)])


def test_a_worker_killed_mid_trial_leaves_the_sweep_to_the_other(
    project: Path, workers: list[Any], server: Server, client: Any, database: str
) -> None:
    proc = start_sweep(project, server, database)
    victim = wait_for_running_trial(database, proc)
    pid = int(str(victim.user_attrs["worker"]).rsplit(":", 1)[1])
    # The flow run's process group: Prefect's runner, the flow engine and `hpopipe worker`.
    group = os.getpgid(pid)
    assert group not in {os.getpgid(0), *(w.pid for w in workers)}
    os.killpg(group, signal.SIGKILL)
    out = finish(proc)
    assert "Finished in state Completed" in out, out[-3000:]

    trials = trials_of(database)
    assert_exact_budget(trials)
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL
    assert any(t.user_attrs.get("retry_of") == victim.number and t.state in FINISHED for t in trials)

    parent, children = sweep_runs(client)
    assert parent.state.is_completed()
    assert sorted(r.state.name for r in children) == ["Completed", "Crashed"]
    summary = summary_of(client, parent.id)
    assert "Crashed |" in summary and f"**Trials:** {N_TRIALS} of {N_TRIALS} counted" in summary


def wait_for_running_trial(url: str, proc: subprocess.Popen[str], epochs: int = 2) -> FrozenTrial:
    """The first trial seen RUNNING with ``epochs`` epochs reported (a worker mid-trial)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        running = [
            t
            for t in trials_of(url)
            if t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs
        ]
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"no trial got to epoch {epochs}")


def test_fan_out_errors_name_the_missing_pool_or_deployment(
    server: Server, client: Any, tmp_path: Path
) -> None:
    from hpopipe.errors import HpopipeError
    from hpopipe.sweep.fanout import run_workers

    with pytest.raises(HpopipeError) as missing:
        run_workers(1, {"project_dir": str(tmp_path)}, deployment="sweep-worker/nowhere")
    assert str(missing.value) == (
        f"deployment 'sweep-worker/nowhere': not found on {server.url} "
        "(register it: hpopipe deploy-worker --pool NAME)"
    )
    cmd = [
        sys.executable,
        "-m",
        "hpopipe.cli",
        "deploy-worker",
        "--pool",
        "nope",
        "--project-dir",
        str(REPO),
    ]
    proc = subprocess.run(cmd, env=server.env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"hpopipe: error: --pool: no work pool 'nope' on {server.url} "
        "(create it: prefect work-pool create nope --type process)"
    )


def test_the_hpo_stage_fans_out_through_the_pool_with_backend_prefect(
    project: Path, workers: list[Any], server: Server, database: str
) -> None:
    raw = sweep_params()
    raw["hpo"].update(backend="prefect", n_workers=2)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.hpo"],
        cwd=project,
        env=subprocess_env(**_env(server, database)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    trials = trials_of(database)
    assert_exact_budget(trials)
    assert len({t.user_attrs["worker"] for t in trials if t.state in FINISHED}) == 2
    assert (project / "artifacts/hpo/trials.csv").exists()
    assert PASSWORD not in proc.stdout + proc.stderr


# ---------------------------------------------------------------- every URL form, read back from Prefect


def _every_page(read: Any, **kwargs: Any) -> list[Any]:
    """All the objects a Prefect read method returns, page by page (the server caps a page at 200)."""
    found: list[Any] = []
    while True:
        page = read(limit=200, offset=len(found), **kwargs)
        found += page
        if len(page) < 200:
            return found


def prefect_record(client: Any) -> str:
    """Everything the Prefect server holds, as JSON: every flow run (parameters, names, state
    messages, job variables), task run, artifact, log line, deployment, variable and block."""
    objects = [
        *_every_page(client.read_flow_runs),
        *_every_page(client.read_task_runs),
        *_every_page(client.read_artifacts),
        *_every_page(client.read_logs),
        *_every_page(client.read_deployments),
        *_every_page(client.read_block_documents),
        *client.read_variables(),
    ]
    return "\n".join(o.model_dump_json() for o in objects)


@pytest.mark.parametrize("form", ["userinfo-slash-at", "query", "mlflow-tracking-uri"])
def test_no_url_form_leaks_into_prefect(
    form: str,
    project: Path,
    workers: list[Any],
    server: Server,
    client: Any,
    database: str,
    form_env: dict[str, str],
) -> None:
    """A sweep per URL form of test_secrets; the canary is in no artifact, parameter or log line."""
    out = finish(start_sweep(project, server, database, **form_env))
    assert "Finished in state Completed" in out, out[-3000:]

    parent, children = sweep_runs(client)
    assert parent.state.is_completed() and len(children) == 2
    assert "**Storage:** `" in summary_of(client, parent.id)  # the artifact was written, and searched
    worker_logs = logs_of(client, [r.id for r in children])
    assert "trial" in worker_logs  # the workers' output reached Prefect's logs, and was searched
    record = prefect_record(client)
    worker_files = [p.read_text(errors="replace") for p in project.parent.glob("machine-*.log")]
    assert [c for c in CANARIES if c in record] == []
    assert [c for c in CANARIES if c in out or any(c in text for text in worker_files)] == []
    if form == "mlflow-tracking-uri":  # the workers did track there: the canary was in play
        assert "CANARYMLFLOW" in form_env["MLFLOW_TRACKING_URI"]
