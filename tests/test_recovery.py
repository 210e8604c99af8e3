"""Studies survive anything: real sweep processes killed (SIGKILL) and stopped (SIGTERM/SIGINT)
at several points, resumed runs equal to straight ones, backups, retries and fresh starts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import subprocess_env
from tests.sweeps import (
    assert_invariants,
    load,
    run_stage,
    start,
    study_storage,
    sweep_params,
    wait_mid_trial,
)

pytestmark = pytest.mark.slow


def project(workdir: Path, prepared: Path, **hpo: Any) -> Path:
    """A working folder with prepared data and params for a sweep."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(sweep_params(**hpo)))
    shutil.copytree(prepared, workdir / "data/prepared")
    return workdir


def signature(study: optuna.Study) -> list[tuple[Any, ...]]:
    """Finished trials in order, as a straight run would list them (interrupted attempts left out)."""
    return [
        (t.state, t.params, t.value, t.intermediate_values)
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]


# The pruner users get by default, and median pruning; Hyperband brackets follow sweep positions.
PRUNERS: dict[str, dict[str, Any]] = {"hyperband": {"pruner": {"name": "hyperband"}}, "median": {}}


@pytest.fixture(scope="module")
def straight_runs(
    tmp_path_factory: pytest.TempPathFactory, prepared_dir: Path
) -> Callable[[str], list[tuple[Any, ...]]]:
    """The uninterrupted sweep for a pruner (each run once per module, when first asked for)."""
    runs: dict[str, list[tuple[Any, ...]]] = {}

    def straight(pruner: str) -> list[tuple[Any, ...]]:
        if pruner not in runs:
            workdir = project(tmp_path_factory.mktemp(f"straight-{pruner}"), prepared_dir, **PRUNERS[pruner])
            proc = run_stage(workdir)
            assert proc.returncode == 0, proc.stdout
            assert_invariants(workdir)
            runs[pruner] = signature(load(workdir))
        return runs[pruner]

    return straight


@pytest.fixture
def straight(straight_runs: Callable[[str], list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    return straight_runs("median")


def test_the_straight_hyperband_sweep_prunes(straight_runs: Callable[[str], list[tuple[Any, ...]]]) -> None:
    # Otherwise the kill tests below could not tell brackets by number from brackets by position.
    assert any(state == TrialState.PRUNED for state, *_ in straight_runs("hyperband"))


def long_trial(straight: list[tuple[Any, ...]], nth: int) -> int:
    """The ``nth`` trial that trains 5 epochs or more in the straight run: one to kill mid-way.

    Killed after its 2nd epoch, it leaves a poll under load 3 epochs to see it running.
    """
    numbers = [number for number, (_, _, _, curve) in enumerate(straight) if len(curve) >= 5]
    return numbers[min(nth, len(numbers) - 1)]


def checkpoint_every(workdir: Path, seconds: float) -> None:
    """Set ``train.checkpoint_every_s`` in the project's params (how a trial runs, not what it computes)."""
    params = workdir / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["train"]["checkpoint_every_s"] = seconds
    params.write_text(yaml.safe_dump(raw))


# Hyperband's 2nd and 3rd long trials come after a pruned one: a retry then shifts trial numbers.
# Under the default checkpoint_every_s (30 s) these trials (~1.3 s) are killed before their first
# checkpoint: the retry trains from the start, with the same result. Every 0.2 s, an epoch (~0.2 s
# here) is saved by the end of the 2nd one at the latest, and the retry goes on from it.
@pytest.mark.parametrize(
    ("pruner", "nth", "every_s"),
    [("hyperband", 1, None), ("hyperband", 2, 0.2), ("median", 0, None), ("median", 3, 0.2)],
)
def test_sigkill_mid_trial_then_resume_equals_a_straight_run(
    tmp_path: Path,
    prepared_dir: Path,
    straight_runs: Callable[[str], list[tuple[Any, ...]]],
    pruner: str,
    nth: int,
    every_s: float | None,
) -> None:
    straight = straight_runs(pruner)
    kill_during = long_trial(straight, nth)
    workdir = project(tmp_path, prepared_dir, **PRUNERS[pruner])
    if every_s is not None:
        checkpoint_every(workdir, every_s)
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
    resumed_from = retry.user_attrs.get("resumed_from_epoch", 0)
    assert retry.params == killed.params and (resumed_from >= 1 if every_s else resumed_from == 0)
    for number, trial in before.items():
        assert (study.trials[number].params, study.trials[number].value) == (trial.params, trial.value)
    assert signature(study) == straight


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_gracefully_and_the_next_run_resumes(
    tmp_path: Path, prepared_dir: Path, straight: list[tuple[Any, ...]], sig: signal.Signals, code: int
) -> None:
    workdir = project(tmp_path, prepared_dir)
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


def test_backup_after_every_trial_and_restore(tmp_path: Path, prepared_dir: Path) -> None:
    workdir = project(tmp_path / "w", prepared_dir, backup_dir=str(tmp_path / "backup"), n_trials=2)
    assert run_stage(workdir).returncode == 0
    backup = tmp_path / "backup/study.journal"
    live = workdir / "artifacts/hpo/study.journal"
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
    assert (workdir / "artifacts/hpo/study.journal.before-restore").read_bytes() == b"corrupted"
    assert [t.state for t in load(workdir).trials] == [TrialState.COMPLETE] * 2


def test_unwritable_backup_target_is_a_warning_and_corrupts_nothing(
    tmp_path: Path, prepared_dir: Path
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    workdir = project(tmp_path / "w", prepared_dir, backup_dir=str(tmp_path / "a-file/backup"), n_trials=2)
    proc = run_stage(workdir)
    assert proc.returncode == 0, proc.stdout
    assert "backup of" in proc.stdout and "failed" in proc.stdout
    study = load(workdir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_retry_failed_backs_up_and_reruns_the_failed_trials(tmp_path: Path, prepared_dir: Path) -> None:
    raw = sweep_params(n_trials=4, max_failures=10)
    raw["model"] = {"factory": "tests.failing_models:fails_while_flagged", "params": {}}
    workdir = project(tmp_path / "w", prepared_dir)
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
    storage = study_storage(workdir)
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
    (name,) = [n for n in optuna.study.get_all_study_names(study_storage(workdir)) if "_backup-" not in n]
    return name


def test_fresh_starts_over_and_keeps_the_old_study_as_a_backup(tmp_path: Path, prepared_dir: Path) -> None:
    workdir = project(tmp_path / "w", prepared_dir, n_trials=2)
    assert run_stage(workdir).returncode == 0
    (workdir / "params.yaml").write_text(yaml.safe_dump(sweep_params(n_trials=1, fresh=True)))
    assert run_stage(workdir).returncode == 0
    name = load_name(workdir)
    storage = study_storage(workdir)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == 1
    assert len(optuna.load_study(study_name=f"{name}_backup-0", storage=storage).trials) == 2
