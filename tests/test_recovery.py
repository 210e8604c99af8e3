"""Studies survive anything: real sweep processes killed (SIGKILL) and stopped (SIGTERM/SIGINT)
at several points, resumed runs equal to straight ones, backups, retries and fresh starts."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from hpopipe.artifacts import sqlite_url
from tests.conftest import REPO, TINY_PARAMS, subprocess_env

pytestmark = pytest.mark.slow
N_TRIALS = 5


def sweep_params(**hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["model"] = {"factory": "tests.failing_models:slow", "params": {}}
    # Median pruning: Hyperband assigns brackets by trial number, which a retry shifts.
    pruner = {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 2}
    raw["hpo"].update({"n_trials": N_TRIALS, "pruner": pruner, **hpo})
    raw["train"].update(max_epochs=6, patience=10)
    return raw


def start(workdir: Path, module: str = "stages.hpo", **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", module]
    environment = subprocess_env(**{"PYTHONPATH": str(REPO), "HPOPIPE_TEST_DELAY": "0.01", **env})
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


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepare stage, run once for the module."""
    workdir = tmp_path_factory.mktemp("prepared")
    (workdir / "params.yaml").write_text(yaml.safe_dump(sweep_params()))
    proc = run_stage(workdir, "stages.prepare")
    assert proc.returncode == 0, proc.stdout
    return workdir / "data/prepared"


def project(workdir: Path, prepared: Path, **hpo: Any) -> Path:
    """A working folder with prepared data and params for a sweep."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(sweep_params(**hpo)))
    shutil.copytree(prepared, workdir / "data/prepared")
    return workdir


def load(workdir: Path) -> optuna.Study:
    storage = sqlite_url(workdir / "artifacts/hpo/study.db")
    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def wait_mid_trial(workdir: Path, proc: subprocess.Popen[str], number: int, epochs: int = 2) -> None:
    """Block until trial ``number`` is RUNNING with at least ``epochs`` epochs reported."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            trials = load(workdir).get_trials(deepcopy=False)
        except (ValueError, KeyError, sqlite3.Error, sqlalchemy.exc.SQLAlchemyError):
            trials = []  # not created yet, or busy: poll again
        running = [t for t in trials if t.number == number and t.state == TrialState.RUNNING]
        if running and len(running[0].intermediate_values) >= epochs:
            return
        time.sleep(0.05)
    raise AssertionError(f"trial {number} never got to epoch {epochs}")


def signature(study: optuna.Study) -> list[tuple[Any, ...]]:
    """Finished trials in order, as a straight run would list them (interrupted attempts left out)."""
    return [
        (t.state, t.params, t.value, t.intermediate_values)
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]


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


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, prepared: Path) -> list[tuple[Any, ...]]:
    workdir = project(tmp_path_factory.mktemp("straight"), prepared)
    proc = run_stage(workdir)
    assert proc.returncode == 0, proc.stdout
    assert_invariants(workdir)
    return signature(load(workdir))


@pytest.mark.parametrize("kill_during", [0, 3])
def test_sigkill_mid_trial_then_resume_equals_a_straight_run(
    tmp_path: Path, prepared: Path, straight: list[tuple[Any, ...]], kill_during: int
) -> None:
    workdir = project(tmp_path, prepared)
    proc = start(workdir)
    wait_mid_trial(workdir, proc, kill_during)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: t for t in load(workdir).trials if t.state == TrialState.COMPLETE}
    resumed = run_stage(workdir)
    assert resumed.returncode == 0, resumed.stdout
    assert_invariants(workdir)
    study = load(workdir)
    killed = study.trials[kill_during]
    assert killed.state == TrialState.FAIL and "process died" in killed.user_attrs["fail_reason"]
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == kill_during]
    assert retry.params == killed.params and retry.user_attrs["resumed_from_epoch"] >= 2
    for number, trial in before.items():
        assert (study.trials[number].params, study.trials[number].value) == (trial.params, trial.value)
    assert signature(study) == straight


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_gracefully_and_the_next_run_resumes(
    tmp_path: Path, prepared: Path, straight: list[tuple[Any, ...]], sig: signal.Signals, code: int
) -> None:
    workdir = project(tmp_path, prepared)
    proc = start(workdir)
    wait_mid_trial(workdir, proc, 1)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=10)
    assert time.monotonic() - sent < 10
    assert proc.returncode == code, out
    assert "Traceback" not in out
    study = load(workdir)
    stopped = study.trials[1]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"].startswith("interrupted")
    assert [t.state for t in study.trials[2:]] == [TrialState.WAITING]  # the queued retry, nothing else
    assert (workdir / "artifacts/hpo/trials.csv").exists() and (workdir / "metrics/hpo.json").exists()
    assert list((workdir / ".hpopipe/checkpoints").glob(f"*/{stopped.user_attrs['checkpoint']}.pt"))
    resumed = run_stage(workdir)
    assert resumed.returncode == 0, resumed.stdout
    assert_invariants(workdir)
    study = load(workdir)
    assert (
        study.trials[2].user_attrs["retry_of"] == 1 and study.trials[2].user_attrs["resumed_from_epoch"] >= 2
    )
    assert signature(study) == straight


def test_backup_after_every_trial_and_restore(tmp_path: Path, prepared: Path) -> None:
    workdir = project(tmp_path / "w", prepared, backup_dir=str(tmp_path / "backup"), n_trials=2)
    assert run_stage(workdir).returncode == 0
    backup = tmp_path / "backup/study.db"
    live = workdir / "artifacts/hpo/study.db"
    assert backup.exists()
    assert len(load(workdir).trials) == 2
    live.write_bytes(b"corrupted")  # the disk ate it
    proc = subprocess.run(
        [sys.executable, "-m", "hpopipe.cli", "restore", "--from", str(tmp_path / "backup")],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "artifacts/hpo/study.db.before-restore").read_bytes() == b"corrupted"
    assert [t.state for t in load(workdir).trials] == [TrialState.COMPLETE] * 2


def test_unwritable_backup_target_is_a_warning_and_corrupts_nothing(tmp_path: Path, prepared: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    workdir = project(tmp_path / "w", prepared, backup_dir=str(tmp_path / "a-file/backup"), n_trials=2)
    proc = run_stage(workdir)
    assert proc.returncode == 0, proc.stdout
    assert "backup of" in proc.stdout and "failed" in proc.stdout
    study = load(workdir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_retry_failed_backs_up_and_reruns_the_failed_trials(tmp_path: Path, prepared: Path) -> None:
    raw = sweep_params(n_trials=4, max_failures=10)
    raw["model"] = {"factory": "tests.failing_models:fails_while_flagged", "params": {}}
    workdir = project(tmp_path / "w", prepared)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    flag = tmp_path / "flag"
    flag.touch()
    assert run_stage(workdir, HPOPIPE_TEST_FLAG=str(flag)).returncode == 0
    failed = [t for t in load(workdir).trials if t.state == TrialState.FAIL]
    assert failed, "width 32 fails while flagged"
    proc = subprocess.run(
        [sys.executable, "-m", "hpopipe.cli", "resume", "--retry-failed"],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    storage = sqlite_url(workdir / "artifacts/hpo/study.db")
    name = load_name(workdir)
    assert f"{name}_backup-0" in optuna.study.get_all_study_names(storage)
    backup = optuna.load_study(study_name=f"{name}_backup-0", storage=storage)
    assert len(backup.trials) == 4 + len(failed)
    flag.unlink()
    assert run_stage(workdir, HPOPIPE_TEST_FLAG=str(flag)).returncode == 0
    study = optuna.load_study(study_name=name, storage=storage)
    assert not [t for t in study.trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)]
    retried = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert sorted(t.params["width"] for t in retried) == sorted(t.params["width"] for t in failed)


def load_name(workdir: Path) -> str:
    (name,) = [
        n
        for n in optuna.study.get_all_study_names(sqlite_url(workdir / "artifacts/hpo/study.db"))
        if "_backup-" not in n
    ]
    return name


def test_fresh_starts_over_and_keeps_the_old_study_as_a_backup(tmp_path: Path, prepared: Path) -> None:
    workdir = project(tmp_path / "w", prepared, n_trials=2)
    assert run_stage(workdir).returncode == 0
    (workdir / "params.yaml").write_text(yaml.safe_dump(sweep_params(n_trials=1, fresh=True)))
    assert run_stage(workdir).returncode == 0
    name = load_name(workdir)
    storage = sqlite_url(workdir / "artifacts/hpo/study.db")
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 1
    assert len(optuna.load_study(study_name=f"{name}_backup-0", storage=storage).trials) == 2
