"""Faults around DVC itself: `dvc` terminated while its stage trains, and each stage killed half way.

Real `dvc repro` runs in a temporary git repo, real signals, and a scan of /proc for leftovers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy.exc
import yaml
from optuna.trial import TrialState

from tests.conftest import REPO, TINY_PARAMS, dvc_repro, make_project, subprocess_env
from tests.sweeps import _tables_made, assert_invariants, load, study_file, wait_mid_trial

pytestmark = pytest.mark.slow
STAGES = ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]


def params_text() -> str:
    raw = yaml.safe_load(TINY_PARAMS)
    # The slow model sleeps in each forward pass (HPOPIPE_TEST_DELAY: 0.03 s; at 0.01 a poll under two
    # xdist workers once missed trial 1's window), so kills land mid-training.
    raw["model"] = {"factory": "tests.failing_models:slow", "params": {}}
    return yaml.safe_dump(raw, sort_keys=False)


def stage_env(mark: str) -> dict[str, str]:
    """The stage processes inherit the marker, which is how the /proc scan finds them."""
    return subprocess_env(
        PYTHONPATH=str(REPO), HPOPIPE_TEST_DELAY="0.03", HPOPIPE_TEST_MARK=mark, HPOPIPE_LOG_LEVEL="INFO"
    )


def marked(mark: str) -> list[tuple[int, str]]:
    """Live processes carrying ``HPOPIPE_TEST_MARK=mark``: (pid, command line)."""
    needle = f"HPOPIPE_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(
                    (int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
                )
        except OSError:
            continue  # gone, or not ours
    return found


def start_repro(root: Path, mark: str) -> subprocess.Popen[bytes]:
    with (root / "repro.log").open("wb") as log:  # the child keeps its own copy of the handle
        return subprocess.Popen(
            ["dvc", "repro"],
            cwd=root,
            env=stage_env(mark),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def repro(root: Path) -> list[str]:
    """Run `dvc repro` to the end; the stages that ran."""
    return dvc_repro(root, env=stage_env(uuid.uuid4().hex))[0]


def ran(root: Path) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", (root / "repro.log").read_text(errors="replace"))


def wait_for(what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"dvc ended before {what}:\n{(root / 'repro.log').read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}")


def wait_gone(mark: str, seconds: float) -> list[tuple[int, str]]:
    deadline = time.monotonic() + seconds
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_sigterm_to_dvc_alone_leaves_no_orphan_and_the_next_repro_completes(tmp_path: Path) -> None:
    root = make_project(tmp_path / "p", params_text())
    mark = uuid.uuid4().hex
    dvc = start_repro(root, mark)
    wait_mid_trial(root, dvc, 1)  # type: ignore[arg-type]
    dvc.send_signal(signal.SIGTERM)  # to dvc only: DVC does not pass it on to the stage
    dvc.wait()
    assert wait_gone(mark, 10) == [], "the stage outlived dvc by more than 10 s"
    log = (root / "repro.log").read_text()
    assert "the process that launched this stage" in log and "Traceback" not in log
    study = load(root)
    stopped = study.trials[1]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"].startswith("interrupted")
    assert (root / "artifacts/hpo/trials.csv").exists()  # the graceful stop wrote its exports
    assert repro(root) == STAGES[1:]
    assert_invariants(root, n_trials=4)
    study = load(root)
    assert all(math.isfinite(t.value) for t in study.trials if t.state == TrialState.COMPLETE)  # type: ignore[arg-type]
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 1]
    assert retry.user_attrs["resumed_from_epoch"] >= 2


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def deterministic(root: Path) -> dict[str, object]:
    """What an interrupted and an uninterrupted run must agree on, byte for byte where it can.

    Trial numbers are not in it: a crash adds a FAIL trial, so a retry has a new number (the study
    keeps the history); the trials, their values and everything computed from them are the same.
    """
    trials = pd.read_csv(root / "artifacts/hpo/trials.csv")
    finished = trials[trials["state"].isin(["COMPLETE", "PRUNED"])].drop(columns=["number", "duration_s"])
    best = yaml.safe_load((root / "artifacts/best/config.yaml").read_text())
    best["source"].pop("trial")
    cv = json.loads((root / "metrics/cv.json").read_text())
    return {
        **{f"data/prepared/{p.name}": digest(p) for p in sorted((root / "data/prepared").iterdir())},
        "trials": finished.to_csv(index=False),
        "best_value": json.loads((root / "metrics/hpo.json").read_text())["best_value"],
        "cv_scores": sorted((t["mean"], t["std"]) for t in cv["ranks"].values()),
        "cv_results": pd.read_csv(root / "artifacts/cv/results.csv")
        .drop(columns=["trial"])
        .to_csv(index=False),
        "best_config": best,
        "artifacts/best/params.json": digest(root / "artifacts/best/params.json"),
        "metrics/test.json": digest(root / "metrics/test.json"),
    }


def test_each_stage_killed_half_way_reruns_only_it_and_what_follows(tmp_path: Path) -> None:
    """One project, one kill per `dvc repro`: prepare, hpo, cv and refit each SIGKILLed with their
    process group while they run; each next repro must start at the killed stage."""
    root = make_project(tmp_path / "killed", params_text())
    mark = uuid.uuid4().hex

    def running(stage: str) -> Callable[[], bool]:
        return lambda: any(f"stages.{stage}" in cmd for _, cmd in marked(mark))

    def cv_half_way() -> bool:  # the first of the top-k candidates is scored
        log = (root / "repro.log").read_text(errors="replace").split("Running stage 'cv'")[-1]
        return running("cv")() and "hpopipe.cv: trial" in log

    half_way: dict[str, Callable[[], bool]] = {
        "prepare": running("prepare"),  # seconds long, no observable middle: killed on sight
        "hpo": lambda: running("hpo")() and _trial_running(root, 1),
        "cv": cv_half_way,
        "refit": running("refit"),  # killed on sight: no progress file while it trains
    }
    expected_ran = {
        "prepare": ["prepare"],
        "hpo": ["prepare", "hpo"],
        "cv": ["hpo", "cv"],
        "refit": ["cv", "select", "refit"],
    }
    for stage, condition in half_way.items():
        proc = start_repro(root, mark)
        wait_for(f"{stage} half way", condition, proc, root)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_gone(mark, 10) == []
        assert ran(root) == expected_ran[stage], (root / "repro.log").read_text()
        status = subprocess.run(
            ["dvc", "status"], cwd=root, env=stage_env("status"), capture_output=True, text=True
        )
        assert f"{stage}:" in status.stdout
    assert repro(root) == ["refit", "report", "cleanup"]
    assert_invariants(root, n_trials=4)
    straight = make_project(tmp_path / "straight", params_text())
    assert repro(straight) == STAGES
    assert deterministic(root) == deterministic(straight)


def _trial_running(root: Path, number: int) -> bool:
    """Trial ``number`` RUNNING with two epochs reported (the sweep's half way)."""
    if not _tables_made(study_file(root)):  # opening it earlier races the stage's tables
        return False
    try:
        trials = load(root).get_trials(deepcopy=False)
    except (ValueError, KeyError, sqlite3.Error, sqlalchemy.exc.SQLAlchemyError):
        return False  # not created yet, or busy: poll again
    return any(
        t.number == number and t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2
        for t in trials
    )
