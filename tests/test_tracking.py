"""MLflow tracking against a real SQLite backend: batching, masking, crash leftovers, what a sweep records."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.processes import usable_cpus
from hpopipe.redact import mask_url
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.sweep.trial_steps import INTERMEDIATE, run_name, tracked_values
from hpopipe.tracking import (
    PROCESS_FROM_RUNS,
    WRITER_ENV,
    MlflowTracker,
    local_sqlite_file,
    make_tracker,
    mlflow_run_ids,
    writer_for,
)
from tests.conftest import REPO, TINY_PARAMS, pid_gone, subprocess_env

CHILD = """
import sys, time
from hpopipe.tracking import MlflowTracker, mlflow_run_ids
tracker = MlflowTracker("crash")
with tracker.run("doomed"):
    print("started", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_nested_run_sends_params_metrics_and_tags_in_one_batch(store: str, writer: str) -> None:
    tracker = MlflowTracker("batch", writer)
    with (
        tracker.run("parent", tags={"stage": "hpo"}),
        tracker.run("trial-0", params={"lr": 0.1}, nested=True),
    ):
        tracker.log_history([{"epoch": 1.0, "val_f1": 0.5}, {"epoch": 2.0, "val_f1": 0.7}])
        tracker.set_tags({"state": "COMPLETE"})
    client = mlflow.MlflowClient()
    (child,) = mlflow.search_runs(
        experiment_names=["batch"], filter_string="tags.mlflow.runName = 'trial-0'"
    )["run_id"]
    run = client.get_run(child)
    assert run.data.params == {"lr": "0.1"} and run.data.tags["state"] == "COMPLETE"
    history = client.get_metric_history(child, "val_f1")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.7)]
    assert run.info.status == "FINISHED"


def test_a_failing_block_marks_the_run_failed(store: str) -> None:
    tracker = MlflowTracker("fail")
    with pytest.raises(RuntimeError), tracker.run("boom"):
        raise RuntimeError("x")
    (status,) = mlflow.search_runs(experiment_names=["fail"])["status"]
    assert status == "FAILED"


def test_passwords_never_reach_mlflow(store: str) -> None:
    url = "postgresql://hpo:s3cr3t-canary@db.example:5432/optuna"
    tracker = MlflowTracker("secrets")
    with tracker.run("r", params={"storage": url}, tags={"storage": url}):
        tracker.set_tags({"note": f"using {url}"})
    run = mlflow.MlflowClient().get_run(mlflow.search_runs(experiment_names=["secrets"])["run_id"][0])
    everything = str(run.data.params) + str(run.data.tags)
    assert "s3cr3t-canary" not in everything and "hpo:***@db.example" in everything
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"


def test_runs_left_running_by_a_killed_process_are_closed_on_the_next_start(store: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env=subprocess_env(MLFLOW_TRACKING_URI=store),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (status,) = mlflow.search_runs(experiment_names=["crash"])["status"]
    assert status == "RUNNING"
    MlflowTracker("crash")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        (status,) = mlflow.search_runs(experiment_names=["crash"])["status"]
        if status != "RUNNING":
            break
    assert status == "KILLED"


WRITER = """
import sys, time
from hpopipe.tracking import MlflowTracker, mlflow_run_ids
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # every writer starts at the same instant
tracker = MlflowTracker("shared")
for i in range(10):
    with tracker.run(f"run-{i}", params={"i": i}):
        tracker.log_metrics({"x": float(i)})
"""


def test_processes_writing_one_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Queued DVC experiments share the workspace's mlflow.db: without turns, a fresh store's
    tables were created twice (``table latest_metrics already exists``) and writers failed."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    start = time.time() + 4  # after the three interpreters have imported MLflow
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(start)],
            env=subprocess_env(MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(o[-2000:] for o in outputs)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("shared")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 30 and {r.info.status for r in runs} == {"FINISHED"}


# ---------------------------------------------------------------- what a sweep records


@pytest.fixture(scope="module", params=["thread", "process"])
def tracked_sweep(
    prepared: tuple[Any, dict], tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[optuna.Study, dict[str, Any]]:
    """A tiny real sweep (complete and pruned trials) tracked to a real SQLite MLflow store, its trial
    runs written by the tracker's background thread or by a writer process."""
    tmp = tmp_path_factory.mktemp("tracked")
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update(n_trials=6, checkpoint_dir=str(tmp / "ckpt"))
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        study = sweep(
            parse_params(raw),
            prepared[0],
            prepared[1],
            sqlite_spec(tmp / "s.db"),
            MlflowTracker("sweep", request.param),
        )
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("sweep")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    return study, {"client": client, "runs": runs}


def test_every_trial_run_is_named_by_its_zero_padded_number_under_the_named_hpo_run(
    tracked_sweep: tuple[optuna.Study, dict[str, Any]],
) -> None:
    study, found = tracked_sweep
    runs = found["runs"]
    parent = runs[f"hpo {study.study_name}"]
    trials = {name for name, r in runs.items() if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert trials == {f"trial-{t.number:04d}" for t in study.trials}
    assert run_name(7) == "trial-0007"


def test_complete_trials_log_the_value_told_to_optuna_and_their_curve(
    tracked_sweep: tuple[optuna.Study, dict[str, Any]],
) -> None:
    study, found = tracked_sweep
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for trial in complete:
        run = found["runs"][f"trial-{trial.number:04d}"]
        assert run.data.tags["state"] == "COMPLETE"
        assert run.data.metrics["value"] == pytest.approx(trial.value)  # the best epoch's, not the last's
        series = found["client"].get_metric_history(run.info.run_id, INTERMEDIATE)
        assert {m.step: m.value for m in series} == pytest.approx(trial.intermediate_values)


def test_pruned_trials_log_their_value_and_intermediate_values(
    tracked_sweep: tuple[optuna.Study, dict[str, Any]],
) -> None:
    study, found = tracked_sweep
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "the tiny sweep should prune a trial"
    for trial in pruned:
        run = found["runs"][f"trial-{trial.number:04d}"]
        assert run.data.tags["state"] == "PRUNED" and run.info.status == "FINISHED"
        assert run.data.metrics["value"] == pytest.approx(trial.value)  # Optuna's: the last reported value
        series = found["client"].get_metric_history(run.info.run_id, INTERMEDIATE)
        assert {m.step: m.value for m in series} == pytest.approx(trial.intermediate_values)
        assert len(series) >= 1


def test_the_hpo_run_logs_the_best_value_and_counts_by_state(
    tracked_sweep: tuple[optuna.Study, dict[str, Any]],
) -> None:
    study, found = tracked_sweep
    metrics = found["runs"][f"hpo {study.study_name}"].data.metrics
    by_state = {s: len(study.get_trials(states=(s,))) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert metrics["n_complete"] == by_state[TrialState.COMPLETE]
    assert metrics["n_pruned"] == by_state[TrialState.PRUNED] and metrics["n_fail"] == 0
    assert metrics["best_value"] == pytest.approx(study.best_value)
    assert metrics["best_trial"] == study.best_trial.number


def test_a_multi_objective_trial_logs_each_objective_by_name() -> None:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["hpo"].update(metrics=["macro_f1", "n_params"], pruner={"name": "none"})
    params = parse_params(raw)
    assert tracked_values(params, (0.9, 120.0), [], "COMPLETE") == {
        "value": 0.9,
        "value_macro_f1": 0.9,
        "value_n_params": 120.0,
    }
    assert tracked_values(params, None, [(1, 0.5), (2, 0.6)], "PRUNED") == {"value": 0.6}
    assert tracked_values(params, None, [], "FAIL") == {}


def test_the_retrain_summary_finds_each_stages_run_by_the_first_word_of_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("HPOPIPE_TRACKING", "on")
    mlflow.set_tracking_uri(uri)
    tracker = MlflowTracker()
    ids = {}
    for name in ("hpo mlp-0a1b2c3d", "cv mlp-0a1b2c3d", "refit breast_cancer-diagnosis"):
        with tracker.run(name):
            ids[name.split(" ")[0]] = tracker.run_id()
            if name.startswith("hpo"):
                with tracker.run("trial-0000", nested=True):
                    pass
    assert mlflow_run_ids(tmp_path, ["hpo", "cv", "refit", "cleanup"], 0) == ids


def test_the_requirement_check_gets_our_module_map_and_says_what_mlflow_s_own_map_would(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """log_model's requirement check answers the same without MLflow's scan of every distribution."""
    import importlib.metadata

    from mlflow.utils import requirements_utils

    from hpopipe.served import REQUIRED
    from hpopipe.tracking import _requirements_known

    numpy_now = importlib.metadata.version("numpy")
    asked = ["numpy==" + numpy_now, "scikit-learn==0.0.1", "pyyaml==" + importlib.metadata.version("pyyaml")]
    scans: list[int] = []
    scan = requirements_utils.importlib_metadata.packages_distributions

    def counted() -> Any:  # the real scan, counted
        scans.append(1)
        return scan()

    monkeypatch.setattr(requirements_utils.importlib_metadata, "packages_distributions", counted)

    def warnings() -> list[str]:
        caplog.clear()
        requirements_utils.warn_dependency_requirement_mismatches(asked)
        return [r.getMessage() for r in caplog.records]

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    with _requirements_known(REQUIRED):
        ours = warnings()
    assert scans == [] and requirements_utils._MODULES_TO_PACKAGES is None  # spared, and put back
    theirs = warnings()  # MLflow builds its own map now
    assert scans == [1]
    assert ours == theirs and "scikit-learn (current: " in ours[0] and "numpy" not in ours[0]


# ---------------------------------------------------------------- how trial runs are written


def test_the_writer_is_a_process_for_a_long_enough_sweep_with_a_core_to_spare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cores = usable_cpus()
    monkeypatch.delenv(WRITER_ENV, raising=False)
    expected = "process" if cores > 1 else "thread"
    assert writer_for(PROCESS_FROM_RUNS, 1) == expected  # the default sweep (30 trials) on a spare core
    assert writer_for(PROCESS_FROM_RUNS - 1, 1) == "thread"  # done before a process would be ready
    assert writer_for(1000, cores) == "thread"  # every core trains
    found: list[str] = []
    off_main = threading.Thread(target=lambda: found.append(writer_for(1000, 1)))
    off_main.start()
    off_main.join()
    assert found == ["thread"]  # the parent-death signal follows the thread that starts the child
    monkeypatch.setenv(WRITER_ENV, "Process")
    assert writer_for(1, 1000) == "process"
    monkeypatch.setenv(WRITER_ENV, "threads")
    with pytest.raises(HpopipeError, match=r"^HPOPIPE_TRACKING_WRITER: 'threads' is not one of auto, thread"):
        make_tracker(enabled=False)  # refused even with tracking off


def test_the_local_store_commits_in_wal_mode_with_normal_syncing(store: str) -> None:
    """Seven commits a trial run with a rollback journal and full syncing cost more than the run."""
    MlflowTracker("wal")
    db = local_sqlite_file(store)
    assert db is not None
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # kept in the file
    engine = sqlalchemy.create_engine(store)  # any engine of this process, to this file
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    other = sqlalchemy.create_engine(f"sqlite:///{db.with_name('other.db')}")
    with other.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: only MLflow's store
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"


@pytest.mark.slow
def test_the_hpo_stage_writes_trial_runs_from_a_process_that_dies_with_it(
    tmp_path: Path, prepared_dir: Path
) -> None:
    """The default sweep's path: enough trials for a writer process. Every trial run arrives and
    the writer exits with the stage; a SIGKILLed stage takes its writer with it."""
    import shutil

    from tests.sweeps import start

    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update(n_trials=PROCESS_FROM_RUNS, pruner={"name": "hyperband"})
    raw["train"].update(max_epochs=3)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {"HPOPIPE_TRACKING": "on", "HPOPIPE_LOG_LEVEL": "INFO", "MLFLOW_TRACKING_URI": uri}

    def project(name: str) -> Path:
        workdir = tmp_path / name
        workdir.mkdir()
        (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
        shutil.copytree(prepared_dir, workdir / "data/prepared")
        return workdir

    def writer_pid(proc: subprocess.Popen[str]) -> tuple[int, list[str]]:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if found := re.search(r"MLflow trial runs are written by process (\d+)", line):
                return int(found[1]), seen
        raise AssertionError("".join(seen))

    proc = start(project("whole"), HPOPIPE_TEST_DELAY="0", **env)
    pid, _ = writer_pid(proc)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert pid_gone(pid), "the writer outlived the stage"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("hpopipe")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name.startswith("hpo ")]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in trials) == [run_name(n) for n in range(PROCESS_FROM_RUNS)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert all("value" in r.data.metrics or r.data.tags["state"] == "FAIL" for r in trials)

    proc = start(project("killed"), **env)  # HPOPIPE_TEST_DELAY: slow enough to be killed mid-sweep
    pid, _ = writer_pid(proc)
    proc.kill()  # the stage alone, not its group
    proc.communicate(timeout=60)
    assert pid_gone(pid), "the writer outlived its SIGKILLed stage"


def test_no_writer_process_to_be_had_means_the_thread_writes_the_runs(
    store: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(sys, "executable", "/nonexistent/python")  # the process cannot start
        tracker = MlflowTracker("no-process", "process")
    assert "no writer process" in caplog.text and "a thread writes them" in caplog.text
    with tracker.run("parent"), tracker.run("trial-0000", nested=True):
        tracker.log_metrics({"value": 0.5})
    (status,) = mlflow.search_runs(
        experiment_names=["no-process"], filter_string="tags.mlflow.runName = 'trial-0000'"
    )["status"]
    assert status == "FINISHED"
