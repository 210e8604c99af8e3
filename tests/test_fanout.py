"""hpopipe.sweep.fanout and hpopipe.sweep.summary without a Prefect server: user errors and the summary.

The Prefect plumbing itself (deployment, work-pool workers, fan-out) runs on a real server in
tests/test_sweep_flow.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpopipe.sweep.fanout import WorkerRun
from hpopipe.sweep.summary import finished_trials, summary_markdown
from tests.conftest import REPO, subprocess_env


def _deploy(tmp_path: Path, project: Path) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(PREFECT_HOME=str(tmp_path / "home"))
    env.pop("PREFECT_API_URL", None)
    cmd = [
        sys.executable,
        "-m",
        "hpopipe.cli",
        "deploy-worker",
        "--pool",
        "p",
        "--project-dir",
        str(project),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def test_deploy_worker_needs_a_checkout_and_a_server(tmp_path: Path) -> None:
    no_flow = _deploy(tmp_path, tmp_path)
    assert no_flow.returncode == 2, no_flow.stderr
    assert no_flow.stderr.strip() == (
        f"hpopipe: error: {tmp_path}/flows/sweep.py: not found (deploy-worker runs from a project checkout)"
    )
    no_server = _deploy(tmp_path, REPO)
    assert no_server.returncode == 2, no_server.stderr
    assert no_server.stderr.startswith("hpopipe: error: PREFECT_API_URL: not set")
    assert len(no_server.stderr.strip().splitlines()) == 1


def _study() -> optuna.Study:
    study = optuna.create_study(study_name="mlp-1234abcd", direction="maximize")
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)
    }
    trials = [
        ("host-a:11", TrialState.COMPLETE, 0.91, 0.01),
        ("host-a:11", TrialState.PRUNED, None, 0.05),
        ("host-b:22", TrialState.COMPLETE, 0.95, 0.02),
        ("host-b:22", TrialState.FAIL, None, 0.03),
    ]
    for worker, state, value, lr in trials:
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"lr": lr},
                distributions=dist,
                user_attrs={"worker": worker},
                intermediate_values={0: 0.5} if state == TrialState.PRUNED else None,
            )
        )
    return study


def test_the_summary_counts_states_and_workers_and_masks_the_password() -> None:
    study = _study()
    runs = [WorkerRun("worker-0", "Completed", True), WorkerRun("worker-1", "Crashed", False)]
    text = summary_markdown(study, "postgresql://hpo:s3cr3t@db:5432/optuna", runs, n_trials=3)
    assert "s3cr3t" not in text and "`postgresql://hpo:***@db:5432/optuna`" in text
    assert "# hpopipe sweep `mlp-1234abcd`" in text
    assert "**Trials:** 3 of 3 counted (COMPLETE + PRUNED)" in text
    assert "| COMPLETE | 2 |" in text and "| PRUNED | 1 |" in text and "| FAIL | 1 |" in text
    assert "| host-a:11 | 1 | 1 | 0 | 2 |" in text and "| host-b:22 | 1 | 0 | 1 | 2 |" in text
    assert "**Best:** 0.95 (trial 2: lr=0.02)" in text
    assert "| worker-1 | Crashed |" in text
    assert finished_trials(study) == 3


def test_an_empty_study_has_a_summary_too() -> None:
    study = optuna.create_study(study_name="empty")
    text = summary_markdown(study, "sqlite:///x.db", [])
    assert "**Workers:** no trials yet" in text and "**Best:** no complete trial" in text


def test_run_workers_refuses_without_a_server_or_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # in case this is the session's first `import prefect`
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hpopipe.errors import HpopipeError
    from hpopipe.sweep.fanout import run_workers

    no_api = temporary_settings(restore_defaults={PREFECT_API_URL})
    with no_api, pytest.raises(HpopipeError, match=r"^PREFECT_API_URL: not set"):
        run_workers(2, {"project_dir": str(tmp_path)})
    with pytest.raises(HpopipeError, match=r"^n_workers: must be at least 1, got 0$"):
        run_workers(0, {})
