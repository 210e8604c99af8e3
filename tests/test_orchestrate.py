"""Retraining around DVC: stages through real `dvc repro`, overrides, the gate, push and commit.

The first half uses tiny DVC projects (one-line stages) to pin down how a stage's outcome is
read, how timeouts stop it and how overrides edit params.yaml. The second half runs
`hpopipe retrain` on the real pipeline, with a local directory as the DVC remote.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from hpopipe.errors import HpopipeError, StageError
from hpopipe.retrain.gate import EXIT_GATE_FAILED, committed_metrics, quality_gate
from hpopipe.retrain.overrides import apply_overrides, override_list
from hpopipe.retrain.stages import git_tracked_outputs, pipeline_stages, run_stage
from tests.conftest import REPO, TINY_PARAMS, make_project, params_variant, subprocess_env

# The pipeline as dvc.yaml lists it (the contract test pins that order).
PIPELINE = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def sh(root: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=root, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def dvc_project(root: Path, stages: Mapping[str, object]) -> Path:
    """A git + DVC repo whose dvc.yaml holds ``stages``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    sh(root, "dvc", "config", "core.analytics", "false")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "init")
    return root


def py(code: str) -> str:
    """A stage cmd running ``code`` with the python that DVC finds first on PATH."""
    return f'python -c "{code}"'


# ---------------------------------------------------------------- the stage list


def test_stage_list_is_dvc_yaml_in_pipeline_order() -> None:
    assert pipeline_stages(REPO) == PIPELINE
    assert PIPELINE == ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]


def test_a_stage_listed_before_its_producer_is_refused(tmp_path: Path) -> None:
    stages = {
        "train": {"cmd": "true", "deps": ["data.txt"], "outs": ["model.txt"]},
        "make": {"cmd": "true", "outs": ["data.txt"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    with pytest.raises(HpopipeError, match=r"dvc.yaml: stage 'train' is listed before 'make'.*data.txt"):
        pipeline_stages(tmp_path)


def test_missing_dvc_yaml_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(HpopipeError, match=r"dvc.yaml: not found"):
        pipeline_stages(tmp_path)


def test_the_commit_holds_what_dvc_leaves_to_git_but_not_what_git_ignores(tmp_path: Path) -> None:
    stages = {
        "a": {"cmd": "true", "outs": [{"state.db": {"cache": False, "persist": True}}, "model.pt"]},
        "b": {
            "cmd": "true",
            "outs": [{"plots": {"cache": False}}],
            "metrics": [{"m.json": {"cache": False}}],
        },
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / ".gitignore").write_text("/state.db\n")
    sh(tmp_path, "git", "init", "-q")
    assert git_tracked_outputs(tmp_path) == ["plots", "m.json"]
    tracked = git_tracked_outputs(REPO)
    assert "metrics/test.json" in tracked and "artifacts/hpo/study.journal" not in tracked


# ---------------------------------------------------------------- one stage through DVC


# A stage that ignores SIGTERM, as a busy training loop in C code may: a timeout must still stop it.
SLEEPER = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open('pid', 'w').write(str(os.getpid())); time.sleep(120)"
)
USER_ERROR = (
    "import sys; print('hpopipe: error: params.yaml: hpo.n_trials: bad', file=sys.stderr); sys.exit(2)"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small DVC project with a stage for each outcome (shared: `dvc init` is the slow part)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "in.txt").write_text("a\n")
    copy = py("import shutil; shutil.copy('in.txt', 'out.txt')")
    stages = {
        "copy": {"cmd": copy, "deps": ["in.txt"], "outs": ["out.txt"]},
        "slow": {"cmd": py(SLEEPER), "outs": ["never.txt"]},
        "quick": {"cmd": py("open('quick.txt', 'w').write('ok')"), "outs": ["quick.txt"]},
        "exit1": {"cmd": py("import sys; sys.exit(1)"), "outs": ["x1.txt"]},
        "exit2": {"cmd": py("import sys; sys.exit(2)"), "outs": ["x2.txt"]},
        "hpo": {"cmd": py(USER_ERROR), "outs": ["x3.txt"]},
    }
    return dvc_project(root, stages)


def test_stage_runs_then_is_cached_then_restored_from_run_cache(tiny: Path) -> None:
    assert run_stage(tiny, "copy").status == "ran"
    again = run_stage(tiny, "copy")
    assert (again.status, again.detail) == ("cached", "cached (up to date)")
    (tiny / "in.txt").write_text("b\n")
    assert run_stage(tiny, "copy").status == "ran"
    (tiny / "in.txt").write_text("a\n")  # back to an input DVC has seen: its run-cache has the output
    restored = run_stage(tiny, "copy")
    assert restored.status == "cached" and "run-cache" in restored.detail
    assert (tiny / "out.txt").read_text() == "a\n"


def test_a_timeout_stops_the_stage_under_dvc(tiny: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StageError, match=r"stage 'slow': timed out after 3 s") as caught:
        run_stage(tiny, "slow", timeout_s=3)
    assert time.monotonic() - started < 60
    assert not caught.value.retryable
    pid = int((tiny / "pid").read_text())
    assert _gone(pid), f"stage process {pid} survived the timeout"
    assert run_stage(tiny, "quick").status == "ran"  # no DVC lock left behind


def _gone(pid: int) -> bool:
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child is reaped by init shortly after; until then it is a zombie.
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("stage", "retryable"), [("exit1", True), ("exit2", False)])
def test_a_failed_stage_names_itself_and_user_errors_are_not_retried(
    tiny: Path, stage: str, retryable: bool
) -> None:
    with pytest.raises(StageError, match=rf"^stage '{stage}': ERROR: .*exited with") as caught:
        run_stage(tiny, stage)
    assert caught.value.retryable is retryable
    # Prefect pickles a task's exception; the retry decision must survive it.
    assert pickle.loads(pickle.dumps(caught.value)).retryable is retryable


def test_a_stage_s_own_one_line_error_is_what_the_task_reports(tiny: Path) -> None:
    with pytest.raises(StageError) as caught:
        run_stage(tiny, "hpo")
    assert str(caught.value) == "stage 'hpo': hpopipe: error: params.yaml: hpo.n_trials: bad"
    assert not caught.value.retryable


# ---------------------------------------------------------------- overrides


@pytest.fixture
def params_dir(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("# the one configuration\n" + TINY_PARAMS)
    return tmp_path


def test_overrides_edit_params_yaml_like_dvc_exp_run_set_param(params_dir: Path) -> None:
    overrides = override_list(n_trials=3, max_epochs=2, extra=["cv.folds=3"])
    assert overrides == ["++hpo.n_trials=3", "++train.max_epochs=2", "cv.folds=3"]
    apply_overrides(params_dir, overrides)
    text = (params_dir / "params.yaml").read_text()
    assert text.startswith("# the one configuration\n")  # comments survive
    raw = yaml.safe_load(text)
    assert (raw["hpo"]["n_trials"], raw["train"]["max_epochs"], raw["cv"]["folds"]) == (3, 2, 3)


def test_an_override_of_a_key_left_to_its_default_needs_the_add_form(params_dir: Path) -> None:
    original = (params_dir / "params.yaml").read_bytes()
    with pytest.raises(HpopipeError, match=r"params.yaml: cannot apply --set train.lr=0.1: .*'train.lr'"):
        apply_overrides(params_dir, ["train.lr=0.1"])
    assert (params_dir / "params.yaml").read_bytes() == original
    apply_overrides(params_dir, ["++train.lr=0.1"])
    assert yaml.safe_load((params_dir / "params.yaml").read_text())["train"]["lr"] == 0.1


@pytest.mark.parametrize(
    ("override", "message"),
    [("hpo.n_trials=0", r"hpo.n_trials"), ("++hpo.n_trails=3", r"hpo.n_trails: unknown key")],
)
def test_an_invalid_override_names_the_key_and_leaves_params_yaml_alone(
    params_dir: Path, override: str, message: str
) -> None:
    original = (params_dir / "params.yaml").read_bytes()
    with pytest.raises(HpopipeError, match=message):
        apply_overrides(params_dir, [override])
    assert (params_dir / "params.yaml").read_bytes() == original


# ---------------------------------------------------------------- the quality gate


def test_gate_passes_within_the_allowed_drop_and_fails_beyond_it() -> None:
    ok = quality_gate("macro_f1", {"macro_f1": 0.89}, {"macro_f1": 0.90}, 0.02)
    assert ok.passed and ok.direction == "maximize" and ok.old == 0.90
    bad = quality_gate("macro_f1", {"macro_f1": 0.85}, {"macro_f1": 0.90}, 0.02)
    assert not bad.passed and "beyond the allowed 0.02" in bad.reason
    assert quality_gate("macro_f1", {"macro_f1": 0.99}, {"macro_f1": 0.90}, 0.0).passed


def test_gate_direction_follows_the_metric() -> None:
    worse = quality_gate("log_loss", {"log_loss": 0.40}, {"log_loss": 0.30}, 0.02)
    assert worse.direction == "minimize" and not worse.passed
    assert quality_gate("rmse", {"rmse": 1.0}, {"rmse": 2.0}, 0.0).passed


def test_gate_without_a_committed_value_passes_and_a_nan_fails() -> None:
    first = quality_gate("accuracy", {"accuracy": 0.7}, None, 0.02)
    assert first.passed and first.old is None
    nan = quality_gate("accuracy", {"accuracy": float("nan")}, {"accuracy": 0.7}, 0.02)
    assert not nan.passed


def test_gate_errors_name_the_file_or_the_flag() -> None:
    with pytest.raises(HpopipeError, match=r"metrics/test.json: no numeric 'roc_auc'"):
        quality_gate("roc_auc", {"macro_f1": 0.9}, None, 0.02)
    with pytest.raises(HpopipeError, match=r"--max-regression: must be a number >= 0, got -0.1"):
        quality_gate("macro_f1", {"macro_f1": 0.9}, None, -0.1)


def test_the_baseline_is_the_committed_test_metric(tmp_path: Path) -> None:
    root = tmp_path
    sh(root, "git", "init", "-q")
    assert committed_metrics(root) is None
    (root / "metrics").mkdir()
    (root / "metrics/test.json").write_text(json.dumps({"macro_f1": 0.5}))
    sh(root, "git", "add", "metrics/test.json")
    sh(root, "git", "commit", "-qm", "metrics")
    # The workspace is not the baseline: the last commit is.
    (root / "metrics/test.json").write_text(json.dumps({"macro_f1": 0.1}))
    assert committed_metrics(root) == {"macro_f1": 0.5}


# ---------------------------------------------------------------- `hpopipe retrain` on the real pipeline

RETRAIN_PARAMS = params_variant(
    TINY_PARAMS, {"hpo.n_trials": 2, "train.max_epochs": 2, "cv.top_k": 1, "refit.log_model": False}
)


Retrained = tuple[Path, Path, subprocess.CompletedProcess[str]]  # checkout, DVC remote, first retrain


def retrain_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hpopipe.cli", "retrain", *args]
    return subprocess.run(cmd, cwd=root, env=subprocess_env(), capture_output=True, text=True)


def ran_stages(summary: str) -> list[str]:
    return re.findall(r"^\| (\w+) \| ran \|", summary, flags=re.M)


def cached_stages(summary: str) -> list[str]:
    return re.findall(r"^\| (\w+) \| cached ", summary, flags=re.M)


def remote_files(remote: Path) -> set[str]:
    return {str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()}


def in_remote(remote: Path, root: Path, out: str) -> bool:
    """Whether the version of ``out`` recorded in the workspace's dvc.lock is in the remote."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    md5 = next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out)
    return (remote / "files/md5" / md5[:2] / md5[2:]).is_file()


def head(root: Path) -> str:
    return sh(root, "git", "rev-parse", "HEAD").strip()


@pytest.fixture(scope="module")
def remote_project(tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    """A pipeline checkout with a local DVC remote, after its first `hpopipe retrain`."""
    root = make_project(tmp_path_factory.mktemp("proj"), RETRAIN_PARAMS)
    remote = tmp_path_factory.mktemp("remote")
    sh(root, "dvc", "remote", "add", "-d", "storage", str(remote))
    sh(root, "git", "commit", "-qam", "remote")
    return root, remote, retrain_cli(root)


@pytest.mark.slow
def test_first_retrain_runs_everything_pushes_and_commits(
    remote_project: Retrained,
) -> None:
    root, remote, proc = remote_project
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran_stages(proc.stdout) == PIPELINE
    assert "**Quality gate:** passed: no committed macro_f1 to compare with" in proc.stdout
    for fragment in ("**Best parameters**", "| n_layers |", "**CV macro_f1:** ", " ± ", "| roc_auc |"):
        assert fragment in proc.stdout
    assert in_remote(remote, root, "models/model.pt")
    assert in_remote(remote, root, "data/prepared/train.parquet")
    assert sh(root, "git", "branch", "--show-current").strip() == "retrain"
    committed = sh(root, "git", "show", "--name-only", "--format=%s", "HEAD").split()
    assert {"dvc.lock", "metrics/test.json", "metrics/cv.json"} <= set(committed)
    assert sh(root, "git", "status", "--porcelain", "--untracked-files=no") == ""
    assert "up to date" in sh(root, "dvc", "status")


@pytest.mark.slow
def test_no_change_runs_no_stage_and_commits_nothing(
    remote_project: Retrained,
) -> None:
    root, remote, _ = remote_project
    before, stored = head(root), remote_files(remote)
    proc = retrain_cli(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran_stages(proc.stdout) == [] and cached_stages(proc.stdout) == PIPELINE
    assert head(root) == before and remote_files(remote) == stored
    assert "nothing committed" in proc.stdout


@pytest.mark.slow
def test_changed_data_reruns_pushes_and_commits_the_override_with_the_lock(
    remote_project: Retrained,
) -> None:
    root, remote, _ = remote_project
    csv = root / "data/raw/breast_cancer.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[:-1]))  # one row fewer: new data
    sh(root, "git", "commit", "-qam", "data: drop the last row")
    before = head(root)
    # The smaller model may score lower: this test is about what runs, not the gate.
    proc = retrain_cli(root, "-S", "refit.epochs=1", "--max-regression", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ran_stages(proc.stdout) == PIPELINE
    assert in_remote(remote, root, "models/model.pt")
    assert in_remote(remote, root, "data/prepared/train.parquet")
    assert sh(root, "git", "rev-parse", "HEAD~1").strip() == before
    # The commit holds the override and the lock that recorded it: checked out, nothing is stale.
    assert yaml.safe_load(sh(root, "git", "show", "HEAD:params.yaml"))["refit"]["epochs"] == 1
    lock = yaml.safe_load(sh(root, "git", "show", "HEAD:dvc.lock"))
    assert lock["stages"]["refit"]["params"]["params.yaml"]["refit"]["epochs"] == 1
    assert sh(root, "git", "status", "--porcelain", "--untracked-files=no") == ""
    assert "up to date" in sh(root, "dvc", "status")


@pytest.mark.slow
def test_a_regression_beyond_the_gate_exits_non_zero_and_pushes_nothing(
    remote_project: Retrained,
) -> None:
    root, remote, _ = remote_project
    # The last recorded model was perfect: whatever this run trains is a regression.
    (root / "metrics/test.json").write_text(json.dumps({"accuracy": 1.0, "macro_f1": 1.0}))
    sh(root, "git", "commit", "-qam", "a better model was recorded")
    before, stored = head(root), remote_files(remote)
    proc = retrain_cli(root, "-S", "refit.epochs=2", "--max-regression", "0.001")
    assert proc.returncode == EXIT_GATE_FAILED, proc.stdout + proc.stderr
    ran = ran_stages(proc.stdout)
    assert ran[0] == "refit" and not {"prepare", "hpo", "cv", "select"} & set(ran)
    assert "hpopipe: quality gate failed: macro_f1 1.0000 -> " in proc.stderr
    assert "**Quality gate:** FAILED" in proc.stdout and "nothing pushed" in proc.stdout
    assert not in_remote(remote, root, "models/model.pt")  # the new model stays local
    assert remote_files(remote) == stored and head(root) == before


def test_a_bad_threshold_is_refused_before_any_stage_runs(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    proc = retrain_cli(tmp_path, "--max-regression", "-1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == "hpopipe: error: --max-regression: must be a number >= 0, got -1.0"
