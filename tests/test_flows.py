"""The Prefect flow on a real Prefect server: the served nightly deployment, triggered runs, the summary.

`prefect server start` runs in a subprocess with its own PREFECT_HOME (a temp dir), the
deployment is served with `hpopipe serve` as the README says, and runs are triggered through
the API. Prefect is imported only after PREFECT_HOME points at a temp dir, so nothing is
written to ~/.prefect.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml

from tests.conftest import REPO, TINY_PARAMS, make_project, params_variant, subprocess_env
from tests.prefect_server import Server, stop, wait_for

PIPELINE = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
DEPLOYMENT = "retrain/nightly"
FLOW_PARAMS = params_variant(
    TINY_PARAMS, {"hpo.n_trials": 2, "train.max_epochs": 2, "cv.top_k": 1, "refit.log_model": False}
)


@pytest.fixture(scope="module")
def served(server: Server, client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A pipeline checkout whose nightly deployment `hpopipe serve` has registered and is serving."""
    root = make_project(tmp_path_factory.mktemp("proj"), FLOW_PARAMS)
    shutil.copytree(REPO / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "add", "flows"], cwd=root, check=True, env=subprocess_env())
    subprocess.run(["git", "commit", "-qm", "flows"], cwd=root, check=True, env=subprocess_env())
    env = {
        **server.env,
        "HPOPIPE_TRACKING": "on",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    log = root.parent / "serve.log"
    cmd = [sys.executable, "-m", "hpopipe.cli", "serve", "--project-dir", str(root)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(lambda: _deployment_exists(client), 120, "served deployment", log)
        yield root
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def retrained(served: Path, server: Server) -> Any:
    """The first triggered run (``n_trials=3``) of the served deployment, once a module.

    A fixture, not the first test's side effect, so the failed-gate test finds a retrained
    checkout whatever order the tests run in.
    """
    return _trigger(server, n_trials=3)


def _deployment_exists(client: Any) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        client.read_deployment_by_name(DEPLOYMENT)
    except ObjectNotFound:
        return False
    return True


def _trigger(server: Server, **parameters: Any) -> Any:
    """Trigger a run of the deployment and wait for its final state."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.url, PREFECT_HOME: server.home}):
        run = run_deployment(DEPLOYMENT, parameters=parameters, timeout=400, poll_interval=2)
    assert run.state is not None and run.state.is_final(), f"run not finished: {run.state}"  # type: ignore[union-attr]
    return run


def _summary(client: Any, flow_run_id: Any) -> str:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    summaries = [a for a in artifacts if a.key == "retrain-summary"]
    assert len(summaries) == 1, [a.key for a in artifacts]
    assert summaries[0].type == "markdown"
    return str(summaries[0].data)


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_stage_has_a_retry_policy_and_user_errors_are_not_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # in case this is the session's first `import prefect`
    from prefect.states import Failed

    from flows import retrain
    from hpopipe.errors import StageError
    from hpopipe.retrain.stages import pipeline_stages

    missing = set(pipeline_stages(REPO)) - set(retrain.POLICIES)
    assert not missing, f"give {sorted(missing)} a retry policy in flows/retrain.py POLICIES"
    assert retrain.POLICIES["hpo"].retries >= 1  # the sweep resumes its study on a retry
    worth = retrain._worth_retrying
    assert worth(None, None, Failed(data=StageError("stage 'hpo': killed", retryable=True)))  # type: ignore[arg-type]
    assert not worth(None, None, Failed(data=StageError("stage 'hpo': bad params", retryable=False)))  # type: ignore[arg-type]


def test_serve_needs_a_server_and_a_checkout(tmp_path: Path) -> None:
    env = subprocess_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "hpopipe.cli", "serve", "--project-dir"]
    no_server = subprocess.run([*cmd, str(REPO)], env=env, capture_output=True, text=True)
    assert no_server.returncode == 2 and no_server.stderr.startswith(
        "hpopipe: error: PREFECT_API_URL: not set"
    )
    no_flow = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, text=True)
    assert no_flow.returncode == 2, no_flow.stderr
    assert (
        no_flow.stderr.strip()
        == f"hpopipe: error: {tmp_path}/flows/retrain.py: not found (serve runs from a project checkout)"
    )


@pytest.mark.slow
def test_the_deployment_is_registered_with_a_nightly_schedule(served: Path, client: Any) -> None:
    deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.parameters == {"project_dir": str(served)}
    [schedule] = deployment.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")


@pytest.mark.slow
def test_a_triggered_run_reproduces_each_stage_as_a_task_and_publishes_a_summary(
    served: Path, client: Any, retrained: Any
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run = retrained
    assert run.state.is_completed(), run.state
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    assert sorted(t.name for t in tasks) == sorted(PIPELINE)
    assert all(t.state.is_completed() for t in tasks)
    summary = _summary(client, run.id)
    for stage in PIPELINE:
        assert f"| {stage} | ran |" in summary
    assert "`++hpo.n_trials=3`" in summary and "**Quality gate:** passed" in summary
    for fragment in ("**Best parameters**", "**CV macro_f1:** ", " ± ", "| macro_f1 |", "committed `"):
        assert fragment in summary
    # The MLflow run ids in the summary are the stages' runs.
    line = next(line for line in summary.splitlines() if line.startswith("**MLflow runs:**"))
    ids = dict(re.findall(r"(\w+) `([0-9a-f]{32})`", line))
    tracking = mlflow.MlflowClient(tracking_uri=f"sqlite:///{served}/mlflow.db")
    # A stage's run name starts with the stage ("hpo mlp-e3b5cd04", "refit breast_cancer-diagnosis").
    assert {stage: tracking.get_run(run_id).info.run_name.split(" ")[0] for stage, run_id in ids.items()} == {
        "hpo": "hpo",
        "cv": "cv",
        "refit": "refit",
    }
    # The override was committed with the lock that recorded it.
    assert yaml.safe_load(_git(served, "show", "HEAD:params.yaml"))["hpo"]["n_trials"] == 3
    assert _git(served, "branch", "--show-current").strip() == "retrain"


@pytest.mark.slow
def test_a_failed_gate_fails_the_run_and_still_publishes_the_summary(
    served: Path, client: Any, server: Server, retrained: Any
) -> None:
    assert retrained.state.is_completed(), retrained.state
    assert (served / "metrics/test.json").is_file(), (
        f"the retrained checkout has no metrics/test.json: {sorted(p.name for p in served.iterdir())}\n"
        + (served.parent / "serve.log").read_text()[-4000:]
    )
    (served / "metrics/test.json").write_text(json.dumps({"macro_f1": 1.0}))
    _git(served, "commit", "-qam", "a perfect model was recorded")
    before = _git(served, "rev-parse", "HEAD")
    run = _trigger(server, max_regression=0.0)
    assert run.state.is_failed(), run.state
    summary = _summary(client, run.id)
    # DVC restores the refit it ran last time for these inputs (its run-cache): no retraining needed.
    assert "| refit | cached (restored from DVC's run-cache) |" in summary
    assert "| hpo | cached (up to date) |" in summary
    assert "**Quality gate:** FAILED: macro_f1 1.0000 -> " in summary and "nothing committed" in summary
    assert _git(served, "rev-parse", "HEAD") == before
