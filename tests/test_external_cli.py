"""``hpopipe trial ask|report|tell|fail``: each verb a real process, on a SQLite study."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

import hpopipe
from hpopipe.config import SweepParams, parse_params
from hpopipe.seeding import derive_seed
from hpopipe.sweep import lifecycle
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import MlflowTracker
from tests.conftest import REPO, TINY_PARAMS, subprocess_env

SPACE = {"x": {"type": "uniform", "min": -2.0, "max": 2.0}}


def write_params(tmp_path: Path, **hpo: Any) -> Path:
    settings = {"n_trials": 2, "metric": "rmse", "sampler": {"name": "random"}, "pruner": {"name": "none"}}
    settings.update(hpo)
    path = tmp_path / "sweep.params.yaml"
    path.write_text(yaml.safe_dump({"seed": 5, "search_space": SPACE, "hpo": settings}))
    return path


def trial_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """One verb as its own process; the study is sqlite:///<tmp>/study.db unless args say otherwise."""
    where = [] if "--storage" in args else ["--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    if "--study" not in args:
        where += ["--params", str(tmp_path / "sweep.params.yaml")]
    cmd = [sys.executable, "-m", "hpopipe.cli", "trial", *args, *where]
    return subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**env), capture_output=True, text=True)


def answer(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def study_of(tmp_path: Path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def test_ask_report_tell_round_trip(tmp_path: Path) -> None:
    write_params(tmp_path)
    trial = answer(trial_cli(tmp_path, "ask"))
    assert trial["number"] == 0 and set(trial["params"]) == {"x"} and trial["retry_of"] is None
    assert trial["seed"] == derive_seed(5, "trial", 0)  # by sweep position, as hpopipe's own trials
    # The asking process is gone, yet the next ask (which fails dead workers' trials) leaves 0 running.
    assert answer(trial_cli(tmp_path, "ask"))["number"] == 1
    assert study_of(tmp_path).trials[0].state == TrialState.RUNNING
    assert answer(trial_cli(tmp_path, "report", "--number", "0", "--step", "0", "--value", "0.5")) == {
        "stop": False
    }
    told = answer(trial_cli(tmp_path, "tell", "--number", "0", "--value", "0.25"))
    assert told == {"number": 0, "state": "COMPLETE", "stop": False}
    study = study_of(tmp_path)
    done = study.trials[0]
    assert (done.state, done.value, done.intermediate_values) == (TrialState.COMPLETE, 0.25, {0: 0.5})
    assert done.params == trial["params"]
    assert done.user_attrs[lifecycle.TRIAL_BEAT]["pid"] == 0  # its own heartbeat, no process to watch
    assert lifecycle.workers(study) == {}  # no worker record per verb call: `hpopipe status` stays short


def test_report_stops_under_the_threshold_pruner_and_the_trial_ends_pruned(tmp_path: Path) -> None:
    write_params(tmp_path, pruner={"name": "threshold", "upper": 1.0, "n_warmup_steps": 0})
    number = str(answer(trial_cli(tmp_path, "ask"))["number"])
    assert answer(trial_cli(tmp_path, "report", "--number", number, "--step", "0", "--value", "3.0")) == {
        "stop": True
    }
    (pruned,) = study_of(tmp_path).trials
    assert pruned.state == TrialState.PRUNED and pruned.intermediate_values == {0: 3.0}
    told = answer(trial_cli(tmp_path, "tell", "--number", number, "--value", "3.0"))  # nothing to do
    assert told["state"] == "PRUNED"
    again = trial_cli(tmp_path, "report", "--number", number, "--step", "1", "--value", "3.0")
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"hpopipe: error: trial {number}: report after it ended (PRUNED)"
    ]


def test_fail_then_the_budget_spent_prints_null_and_exits_3(tmp_path: Path) -> None:
    write_params(tmp_path, n_trials=1)
    first = answer(trial_cli(tmp_path, "ask"))["number"]
    failed = answer(trial_cli(tmp_path, "fail", "--number", str(first), "--reason", "out of memory"))
    assert failed == {"number": first, "state": "FAIL", "stop": False}
    second = answer(trial_cli(tmp_path, "ask"))["number"]  # a failure does not count toward the budget
    answer(trial_cli(tmp_path, "tell", "--number", str(second), "--value", "1.5"))
    spent = trial_cli(tmp_path, "ask")
    assert (spent.returncode, spent.stdout.strip()) == (3, "null")
    states = [(t.state, t.user_attrs.get("fail_reason")) for t in study_of(tmp_path).trials]
    assert states == [(TrialState.FAIL, "out of memory"), (TrialState.COMPLETE, None)]


def test_max_failures_counts_failures_in_a_row_across_processes(tmp_path: Path) -> None:
    write_params(tmp_path, max_failures=2)
    for expected_stop in (False, True):  # each fail its own process; the second trips hpo.max_failures
        number = str(answer(trial_cli(tmp_path, "ask"))["number"])
        failed = answer(trial_cli(tmp_path, "fail", "--number", number, "--reason", "diverged"))
        assert failed["stop"] is expected_stop
    refused = trial_cli(tmp_path, "ask")
    assert refused.returncode == 2
    assert "is failed (hpo.max_failures: 2 trials failed in a row" in refused.stderr


def test_a_paused_sweep_refuses_ask_in_one_line(tmp_path: Path) -> None:
    params = write_params(tmp_path)
    with hpopipe.connect(params, storage=f"sqlite:///{tmp_path / 'study.db'}") as joined:
        lifecycle.apply_action(joined.study, "pause")
        name = joined.name
    refused = trial_cli(tmp_path, "ask")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"hpopipe: error: sweep {name} is paused (hpopipe sweep pause)"
    ]


def test_a_trial_whose_owner_died_is_retried_and_its_late_report_refused(tmp_path: Path) -> None:
    write_params(tmp_path, grace_s=3600.0)  # only the owner's death can make it stale here
    owner = subprocess.Popen(["sleep", "600"])
    first = answer(trial_cli(tmp_path, "ask", "--owner-pid", str(owner.pid)))
    owner.kill()
    owner.wait()
    retry = answer(trial_cli(tmp_path, "ask"))  # fails the dead owner's trial, runs its retry
    assert retry["retry_of"] == first["number"]
    assert (retry["params"], retry["seed"]) == (first["params"], first["seed"])
    late = trial_cli(tmp_path, "report", "--number", str(first["number"]), "--step", "0", "--value", "1")
    assert late.returncode == 2 and len(late.stderr.strip().splitlines()) == 1
    assert "report after it ended (FAIL: interrupted" in late.stderr and "stop training it" in late.stderr


def test_the_shell_example_spends_the_budget_exactly(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "examples/external_cli.params.yaml").read_text())
    raw["hpo"]["n_trials"] = 3
    (tmp_path / "cli.params.yaml").write_text(yaml.safe_dump(raw))
    env = subprocess_env(STEPS="2", STORAGE=f"sqlite:///{tmp_path / 'study.db'}")
    assert shutil.which("hpopipe", path=env["PATH"]), "the console script is installed in the venv"
    cmd = ["bash", str(REPO / "examples/external_cli.sh"), "cli.params.yaml"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    trials = study_of(tmp_path).trials
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len([line for line in proc.stdout.splitlines() if line.startswith("trial ")]) == 3


@pytest.fixture
def tracking_on(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HPOPIPE_TRACKING", "on")
    return os.environ["MLFLOW_TRACKING_URI"]


def test_trials_of_the_hpo_stages_study_nest_under_its_hpo_run(
    tmp_path: Path, prepared: tuple[pd.DataFrame, dict], tracking_on: str
) -> None:
    from mlflow import MlflowClient

    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update(n_trials=1, checkpoint_dir=str(tmp_path / "ckpt"))
    raw["train"]["max_epochs"] = 1
    params = parse_params(raw)
    db = tmp_path / "study.db"
    study = sweep(params, prepared[0], prepared[1], sqlite_spec(db), MlflowTracker())  # as the hpo stage
    client = MlflowClient(tracking_on)
    found = client.get_experiment_by_name("hpopipe")
    assert found is not None
    experiment = found.experiment_id
    (hpo_run,) = client.search_runs([experiment], f"run_name = 'hpo {study.study_name}'")
    assert study.user_attrs[lifecycle.PARENT_RUN] == hpo_run.info.run_id

    # External code joins that study (one more trial), then drives a trial through the verbs.
    sections = params.model_dump(include=set(SweepParams.model_fields))
    sections["hpo"]["n_trials"] = 2
    storage = f"sqlite:///{db}"
    hpopipe.connect(SweepParams.model_validate(sections), storage=storage, study=study.study_name).close()
    where = ("--storage", storage, "--study", study.study_name)
    number = str(answer(trial_cli(tmp_path, "ask", *where))["number"])
    answer(trial_cli(tmp_path, "report", "--number", number, "--step", "0", "--value", "0.5", *where))
    answer(trial_cli(tmp_path, "tell", "--number", number, "--value", "0.75", *where))

    assert len(client.search_runs([experiment], "run_name LIKE 'hpo %'")) == 1  # no second parent
    (run,) = client.search_runs([experiment], f"run_name = 'trial-{int(number):04d}'")
    assert run.data.tags["mlflow.parentRunId"] == hpo_run.info.run_id
    assert (run.info.status, run.data.tags["state"]) == ("FINISHED", "COMPLETE")
    assert run.data.metrics[params.hpo.metric] == 0.75
    assert [m.value for m in client.get_metric_history(run.info.run_id, "intermediate_value")] == [0.5]
    assert set(run.data.params) == set(params.search_space)  # sent by ask, in its own process
