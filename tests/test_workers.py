"""Several workers on one study: exact budgets, dead workers' trials retried, the sweep lifecycle,
and the storages they share (Optuna journal file, PostgreSQL)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.sweep import lifecycle
from hpopipe.sweep.budget import FINISHED
from hpopipe.sweep.local import LocalWorkers
from hpopipe.sweep.storage import StorageSpec, open_storage, resolve
from hpopipe.sweep.workers import Budget, fail_stale, work
from tests.conftest import REPO, TINY_PARAMS

BUDGET = Budget(n_trials=12, timeout_s=None, max_failures=5, grace_s=30.0, heartbeat_s=0.5, max_retry=2)


def journal(tmp_path: Path) -> StorageSpec:
    return resolve("journal", root=tmp_path)


def new_study(spec: StorageSpec, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=open_storage(spec), load_if_exists=True)


def sleepy(trial: optuna.Trial) -> float:
    """A trial that takes a little time, so workers overlap."""
    x = trial.suggest_float("x", -1.0, 1.0)
    time.sleep(0.05)
    return x * x


def _worker(path: str, n_trials: int) -> None:
    spec = StorageSpec("journal", path, Path(path))
    study = optuna.load_study(study_name="s", storage=open_storage(spec))
    budget = Budget(n_trials, None, 5, 30.0, 0.5, 2)
    work(study, spec, sleepy, budget, wid=f"{socket.gethostname()}:{os.getpid()}")


def test_workers_racing_for_the_last_trials_never_exceed_the_budget(tmp_path: Path) -> None:
    spec = journal(tmp_path)
    study = new_study(spec)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(spec.url, 13)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 13
    assert sorted(t.number for t in trials) == list(range(13))
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) >= 2  # they shared the work
    records = lifecycle.workers(study)
    assert set(records) == workers | set(records) and all(r["state"] == "exited" for r in records.values())


def _running_trial(study: optuna.Study, worker: str) -> optuna.Trial:
    trial = study.ask()
    trial.suggest_float("x", -1.0, 1.0)
    trial.set_user_attr("worker", worker)
    return trial


def test_a_dead_local_workers_trial_is_failed_and_queued_again(tmp_path: Path) -> None:
    study = new_study(journal(tmp_path))
    dead = f"{socket.gethostname()}:999999"  # no such process on this host
    lifecycle.beat(study, dead, 0)
    trial = _running_trial(study, dead)
    assert fail_stale(study, grace_s=3600, max_retry=2) == 1  # no need to wait out the grace period
    failed, retry = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and failed.user_attrs["interrupted"] is True
    assert failed.user_attrs["fail_reason"] == "interrupted (its worker process died)"
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == trial.params
    assert retry.user_attrs == {"retry_of": trial.number, "crashes": 1}
    assert fail_stale(study, grace_s=3600, max_retry=2) == 0  # failed once, retried once


def test_a_configuration_that_keeps_killing_its_worker_is_given_up_after_max_retry(tmp_path: Path) -> None:
    study = new_study(journal(tmp_path))
    dead = f"{socket.gethostname()}:999999"
    lifecycle.beat(study, dead, 0)
    _running_trial(study, dead)
    for _ in range(3):
        fail_stale(study, grace_s=3600, max_retry=2)
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            retry = study.ask()  # pops the queued retry, as the next worker would
            retry.set_user_attr("worker", dead)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    assert [t.user_attrs["crashes"] for t in trials] == [1, 2, 3]
    assert "not retried (hpo.max_retry: 2)" in trials[-1].user_attrs["fail_reason"]


def test_a_remote_worker_is_dead_only_after_the_grace_period(tmp_path: Path) -> None:
    now = time.time()
    fresh = {"host": "elsewhere", "pid": 1, "heartbeat": now - 5, "state": "running"}
    old = {**fresh, "heartbeat": now - 120}
    assert lifecycle.worker_alive(fresh, grace_s=60, now=now)
    assert not lifecycle.worker_alive(old, grace_s=60, now=now)
    assert not lifecycle.worker_alive({**fresh, "state": "exited"}, grace_s=60, now=now)
    assert not lifecycle.worker_alive(None, grace_s=60, now=now)


def test_a_paused_sweep_starts_no_trial_until_resumed_and_a_canceled_one_stops(tmp_path: Path) -> None:
    spec = journal(tmp_path)
    study = new_study(spec)
    lifecycle.apply_action(study, "pause")
    budget = Budget(3, 1.5, 5, 30.0, 0.2, 2)  # the timeout ends the paused wait
    assert work(study, spec, sleepy, budget) == "timeout"
    assert study.get_trials(deepcopy=False) == []
    lifecycle.apply_action(study, "resume")
    assert work(study, spec, sleepy, budget) == "done"
    assert len(study.get_trials(deepcopy=False, states=FINISHED)) == 3
    lifecycle.apply_action(study, "cancel")
    more = Budget(6, None, 5, 30.0, 0.2, 2)
    assert work(study, spec, sleepy, more) == "canceled"
    assert len(study.get_trials(deepcopy=False)) == 3
    with pytest.raises(HpopipeError, match="cannot pause a canceled sweep"):
        lifecycle.apply_action(study, "pause")


def test_infinite_and_non_numeric_values_fail_with_a_reason(tmp_path: Path) -> None:
    spec = journal(tmp_path)
    study = new_study(spec)
    results = iter([float("inf"), "abc", float("nan"), 0.5])
    budget = Budget(1, None, 5, 30.0, 0.5, 2)
    assert work(study, spec, lambda trial: next(results), budget) == "done"
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.get_trials(deepcopy=False)]
    assert [t.state for t in study.get_trials(deepcopy=False)][-1] == TrialState.COMPLETE
    assert "not a finite number" in reasons[0] and "not a number" in reasons[1]
    assert "not a finite number" in reasons[2]


def test_a_hook_that_stops_the_study_stops_the_worker(tmp_path: Path) -> None:
    spec = journal(tmp_path)
    study = new_study(spec)
    budget = Budget(5, None, 5, 30.0, 0.5, 2)
    assert work(study, spec, sleepy, budget, [lambda s, t: s.stop()]) == "stopped"
    assert len(study.get_trials(deepcopy=False)) == 1


def params(**hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update(hpo)
    return raw


@pytest.mark.parametrize(
    ("hpo", "message"),
    [
        ({"n_workers": 2, "storage": "sqlite"}, "hpo.storage: SQLite takes one writer"),
        ({"backend": "prefect", "storage": "journal"}, "hpo.storage: Prefect workers may run on other"),
        ({"storage": "postgresql://me:s3cret@db/hpo"}, "hpo.storage: a password here would be copied"),
        ({"storage": "mysql://db/hpo"}, "hpo.storage: unknown storage 'mysql://db/hpo'"),
        ({"storage": "redis://db"}, "hpo.storage: unknown storage"),
        ({"storage": "env:1BAD"}, "hpo.storage: 'env:1BAD': after 'env:' comes"),
        ({"storage": "env:STUDY_URL", "backup_dir": "b"}, "hpo.backup_dir: backs up a study file"),
        ({"heartbeat_s": 30, "grace_s": 10}, "hpo.grace_s"),
        (
            {"n_workers": 2, "storage": "journal", "sampler": {"name": "tpe", "constant_liar": False}},
            "hpo.sampler: constant_liar must stay true with several workers",
        ),
    ],
)
def test_storage_settings_that_cannot_work_are_refused(hpo: dict[str, Any], message: str) -> None:
    with pytest.raises(HpopipeError) as err:
        parse_params(params(**hpo))
    assert message in str(err.value) and "\n" not in str(err.value) and "s3cret" not in str(err.value)


def test_a_storage_url_from_the_environment_is_checked_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPOPIPE_TEST_URL", raising=False)
    with pytest.raises(HpopipeError, match="environment variable HPOPIPE_TEST_URL is not set"):
        resolve("env:HPOPIPE_TEST_URL")
    monkeypatch.setenv("HPOPIPE_TEST_URL", "sqlite:///x.db")
    with pytest.raises(HpopipeError, match="unknown storage"):
        resolve("env:HPOPIPE_TEST_URL")
    monkeypatch.setenv("HPOPIPE_TEST_URL", "postgresql://me:s3cret@db:5432/hpo")
    spec = resolve("env:HPOPIPE_TEST_URL")
    assert spec.kind == "postgresql" and spec.display == "postgresql+psycopg2://me:***@db:5432/hpo"


def test_an_unreachable_database_is_one_line_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPOPIPE_TEST_URL", "postgresql://me:s3cret@127.0.0.1:1/nowhere")
    spec = resolve("env:HPOPIPE_TEST_URL")
    with pytest.raises(HpopipeError) as err:
        open_storage(spec)
    assert str(err.value).startswith(
        "hpo.storage: cannot use postgresql+psycopg2://me:***@127.0.0.1:1/nowhere"
    )
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)


def test_signal_constants_are_what_the_coordinator_forwards() -> None:
    assert signal.SIGTERM == 15  # children map it to exit 143, like a single worker


def _child(ignore_sigterm: bool) -> subprocess.Popen[str]:
    """A process that sleeps, ready once it says so; it may ignore SIGTERM as C code in a busy loop may."""
    handler = "signal.SIG_IGN" if ignore_sigterm else "signal.SIG_DFL"
    code = f"import signal, time; signal.signal(signal.SIGTERM, {handler}); print('ready', flush=True)"
    code += "; time.sleep(120)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_workers_beside_this_one_get_the_stop_this_process_got() -> None:
    stopped = threading.Event()
    children = LocalWorkers([_child(False), _child(False)], stopped.is_set)
    stopped.set()  # as a SIGTERM to this process sets GracefulStop
    assert children.wait() == [-signal.SIGTERM, -signal.SIGTERM]


def test_workers_beside_a_failed_one_are_terminated_and_killed_if_they_ignore_it() -> None:
    polite, stubborn = _child(False), _child(True)
    LocalWorkers([polite, stubborn], lambda: False).stop(timeout_s=1)
    assert (polite.returncode, stubborn.returncode) == (-signal.SIGTERM, -signal.SIGKILL)


# ---------------------------------------------------------------- the hpo stage with several workers


def stage_project(
    workdir: Path, prepared: Path, n_trials: int, train: dict[str, Any] | None = None, **hpo: Any
) -> Path:
    import shutil

    from tests.sweeps import sweep_params

    raw = sweep_params(**hpo)
    raw["hpo"]["n_trials"] = n_trials
    if hpo.get("n_workers", 1) > 1 and "callbacks" not in hpo:  # the stage lets the other join first
        raw["hpo"]["callbacks"] = ["tests.sweeps:second_worker_joined"]
    raw["train"].update(train or {})
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copytree(prepared, workdir / "data/prepared")
    return workdir


def load_study(workdir: Path, setting: str) -> optuna.Study:
    here = os.getcwd()
    os.chdir(workdir)
    try:
        storage = open_storage(resolve(setting))
    finally:
        os.chdir(here)
    (name,) = [n for n in optuna.study.get_all_study_names(storage) if "_backup-" not in n]
    return optuna.load_study(study_name=name, storage=storage)


def assert_exact(study: optuna.Study, n_trials: int) -> set[str]:
    """The issue's invariants; returns the workers that ran trials."""
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert sum(t.state in FINISHED for t in trials) == n_trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), t.number
    assert all(
        t.value is not None and abs(t.value) < float("inf") for t in trials if t.state.name == "COMPLETE"
    )
    return {str(t.user_attrs["worker"]) for t in trials}


@pytest.mark.slow
def test_the_stage_runs_two_local_workers_on_a_journal_study(tmp_path: Path, prepared_dir: Path) -> None:
    from tests.sweeps import run_stage, start

    workdir = stage_project(tmp_path, prepared_dir, 6, n_workers=2, storage="journal")
    stage = start(workdir, HPOPIPE_TEST_DELAY="0.03", HPOPIPE_LOG_LEVEL="INFO")
    out, _ = stage.communicate(timeout=600)
    proc = subprocess.CompletedProcess(stage.args, stage.returncode, out, "")
    assert proc.returncode == 0, proc.stdout
    workers = assert_exact(load_study(workdir, "journal"), 6)
    # Two workers: the stage process itself (already imported) and one process beside it.
    assert len(workers) == 2 and f"{socket.gethostname()}:{stage.pid}" in workers
    assert "started 1 local worker process beside this one (2 workers)" in proc.stdout
    assert "2 workers: trials are proposed in the order results arrive" in proc.stdout  # said at start-up
    assert "A new study created" not in proc.stdout  # Optuna's INFO lines stay quiet, imported late or not
    assert (workdir / "artifacts/hpo/trials.csv").exists()
    status = cli(workdir, "status")
    assert re.search(r"state +finished", status) and re.search(r"finished +6 of 6", status)
    assert sum(line.startswith("worker ") and "exited" in line for line in status.splitlines()) == 2
    # The lifecycle from the command line: a canceled sweep refuses to run until resumed.
    assert "canceled" in cli(workdir, "sweep", "cancel")
    again = run_stage(workdir)
    assert again.returncode == 2 and "is canceled: `hpopipe sweep resume" in again.stdout
    assert "running" in cli(workdir, "sweep", "resume")
    assert run_stage(workdir).returncode == 0
    assert re.search(r"state +finished", cli(workdir, "status"))


def cli(workdir: Path, *args: str) -> str:
    from tests.conftest import subprocess_env

    cmd = [sys.executable, "-m", "hpopipe.cli", *args]
    proc = subprocess.run(cmd, cwd=workdir, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_a_worker_killed_mid_trial_is_replaced_by_the_other(tmp_path: Path, prepared_dir: Path) -> None:
    from tests.sweeps import start

    # A checkpoint every 0.2 s: a trial at epoch 2 (~0.35 s an epoch here) has one to go on from.
    workdir = stage_project(
        tmp_path,
        prepared_dir,
        6,
        train={"checkpoint_every_s": 0.2},
        n_workers=2,
        storage="journal",
        grace_s=5,
        heartbeat_s=1,
    )
    proc = start(workdir, HPOPIPE_TEST_DELAY="0.05", HPOPIPE_LOG_LEVEL="INFO")
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            running = load_study(workdir, "journal").get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except (ValueError, KeyError, OSError):
            running = []
        # the other process's trial: the stage is a worker too, and killing it would end the sweep
        with_epochs = [t for t in running if len(t.intermediate_values) >= 2 and _pid(t) != proc.pid]
        if with_epochs:
            victim = with_epochs[0]
        time.sleep(0.1)
    assert victim is not None, "no trial got to epoch 2"
    os.kill(_pid(victim), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    study = load_study(workdir, "journal")
    assert_exact(study, 6)
    dead = study.trials[victim.number]
    assert (
        dead.state == TrialState.FAIL
        and dead.user_attrs["fail_reason"] == "interrupted (its worker process died)"
    )
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state in FINISHED and retry.user_attrs["worker"] != victim.user_attrs["worker"]
    assert retry.user_attrs.get("resumed_from_epoch", 0) >= 1  # it went on from the dead trial's checkpoint
    assert "1 of 2 workers exited with codes [-9]" in out


def _pid(trial: FrozenTrial) -> int:
    """The process of the worker that ran ``trial`` (worker ids are ``host:pid``)."""
    return int(str(trial.user_attrs["worker"]).rsplit(":", 1)[1])


@pytest.mark.slow
def test_sigterm_to_the_stage_stops_both_workers_after_their_epoch(
    tmp_path: Path, prepared_dir: Path
) -> None:
    from tests.sweeps import run_stage, start

    never_prunes = {"name": "median", "n_startup_trials": 100}  # epochs are reported, none is pruned
    train = {"max_epochs": 12, "patience": 20}  # a trial polled at epoch <= 8 is still training when stopped
    workdir = stage_project(
        tmp_path, prepared_dir, 8, train, n_workers=2, storage="journal", pruner=never_prunes
    )
    proc = start(workdir, HPOPIPE_TEST_DELAY="0.05", HPOPIPE_LOG_LEVEL="INFO")
    running: list[FrozenTrial] = []
    deadline = time.monotonic() + 180
    while len({_pid(t) for t in running}) < 2 and time.monotonic() < deadline:
        assert proc.poll() is None
        try:
            trials = load_study(workdir, "journal").get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except (ValueError, KeyError, OSError):
            trials = []
        running = [t for t in trials if 1 <= len(t.intermediate_values) <= 8]
        time.sleep(0.1)
    pids = {_pid(t) for t in running}
    assert len(pids) == 2 and proc.pid in pids, "the two workers were never training at once"
    os.kill(proc.pid, signal.SIGTERM)  # the stage only: it passes the stop on to the other worker
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    assert "worker stopped: stopped" in out, out  # the other process's last word
    study = load_study(workdir, "journal")
    records = lifecycle.workers(study)
    assert {int(r["pid"]) for r in records.values()} == pids
    assert all(r["state"] == "exited" for r in records.values())
    for trial in running:  # each worker stopped after an epoch of its trial, which is queued again
        stopped = study.trials[trial.number]
        assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"].startswith(
            "interrupted"
        )
        assert [t.state for t in study.trials if t.user_attrs.get("retry_of") == trial.number] == [
            TrialState.WAITING
        ]
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert (workdir / "artifacts/hpo/trials.csv").exists()
    again = run_stage(workdir, HPOPIPE_TEST_DELAY="0")  # nothing to catch mid-trial now: full speed
    assert again.returncode == 0, again.stdout
    assert_exact(load_study(workdir, "journal"), 8)


def fail_in_the_stage(study: optuna.Study, trial: FrozenTrial) -> None:
    """An ``hpo.callbacks`` hook that breaks the stage's own worker once the other one is mid-trial."""
    records = lifecycle.workers(study).values()
    if any(int(r["pid"]) == os.getppid() for r in records):
        return  # the worker process beside the stage
    # Mid-trial by the study, not by its heartbeat (up to heartbeat_s old): the two workers start
    # together and may run in step, the other's trial ending as this one's does.
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if any(_pid(t) != os.getpid() and 1 <= len(t.intermediate_values) <= 3 for t in running):
        raise HpopipeError("the stage's own worker broke")


@pytest.mark.slow
def test_a_stage_whose_own_worker_raises_stops_the_other_before_it_exits(
    tmp_path: Path, prepared_dir: Path
) -> None:
    from tests.sweeps import start

    hpo: dict[str, Any] = {
        "callbacks": ["tests.test_workers:fail_in_the_stage"],
        "heartbeat_s": 0.5,
        "grace_s": 5,
    }
    workdir = stage_project(tmp_path, prepared_dir, 30, n_workers=2, storage="journal", **hpo)
    proc = start(workdir, HPOPIPE_TEST_DELAY="0.05", HPOPIPE_LOG_LEVEL="INFO")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith("hpopipe: error: the stage's own worker broke"), out
    assert "worker stopped: stopped" in out  # the other one stopped after its epoch, then the stage left
    study = load_study(workdir, "journal")
    records = lifecycle.workers(study)
    assert len(records) == 2 and all(r["state"] == "exited" for r in records.values())
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    (other,) = [int(r["pid"]) for r in records.values() if int(r["pid"]) != proc.pid]
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert [_pid(t) for t in interrupted] == [other]  # its trial is queued again for the next run


@pytest.mark.slow
def test_two_workers_share_a_postgres_study_and_the_password_never_shows(
    tmp_path: Path, prepared_dir: Path, postgres_url: str
) -> None:
    from tests.sweeps import run_stage

    workdir = stage_project(tmp_path, prepared_dir, 5, n_workers=2, storage="env:HPOPIPE_TEST_PG")
    proc = run_stage(workdir, HPOPIPE_TEST_DELAY="0.03", HPOPIPE_TEST_PG=postgres_url)
    assert proc.returncode == 0, proc.stdout
    os.environ["HPOPIPE_TEST_PG"] = postgres_url
    try:
        study = load_study(workdir, "env:HPOPIPE_TEST_PG")
        assert len(assert_exact(study, 5)) == 2
        attrs = repr([t.user_attrs for t in study.trials]) + repr(study.user_attrs)
    finally:
        del os.environ["HPOPIPE_TEST_PG"]
    written = "".join(
        p.read_text(errors="replace") for p in workdir.rglob("*") if p.is_file() and "prepared" not in str(p)
    )
    for text in (proc.stdout, attrs, written):
        assert "canary-pw-31337" not in text


def test_a_sqlite_mlflow_store_is_refused_for_several_writers() -> None:
    from hpopipe.tracking import MlflowTracker, NullTracker

    NullTracker().check_several_writers("two workers")  # nothing to refuse
    with pytest.raises(HpopipeError) as err:
        MlflowTracker().check_several_writers("hpo.n_workers is 2")  # conftest: a sqlite:/// store
    message = str(err.value)
    assert message.startswith("MLflow: sqlite:///") and "hpo.n_workers is 2" in message
    assert "mlflow server" in message and "HPOPIPE_TRACKING=off" in message and "\n" not in message


@pytest.fixture
def mlflow_server(tmp_path: Path, postgres_url: str) -> Any:
    """``mlflow server`` with a PostgreSQL backend, as the README sets it up for several writers."""
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import subprocess_env

    port = _free_port()
    backend = postgres_url.replace("postgresql://", "postgresql+psycopg2://")
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend-store-uri", backend, "--artifacts-destination", str(tmp_path / "mlartifacts")]
    log = (tmp_path / "mlflow.log").open("wb")
    out = subprocess.STDOUT
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=log, stderr=out, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "mlflow.log").read_text()
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_several_workers_track_to_an_mlflow_server_nested_under_the_hpo_run(
    tmp_path: Path, prepared_dir: Path, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    from tests.sweeps import run_stage

    workdir = stage_project(tmp_path / "w", prepared_dir, 4, n_workers=2, storage="journal")
    proc = run_stage(workdir, HPOPIPE_TRACKING="on", MLFLOW_TRACKING_URI=mlflow_server)
    assert proc.returncode == 0, proc.stdout
    client = MlflowClient(mlflow_server)
    (experiment,) = [e for e in client.search_experiments() if e.name == "hpopipe"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name.startswith("hpo ")]
    trials = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(trials) == len(load_study(workdir, "journal").trials) >= 4
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {parent.info.run_id}
    assert len({r.data.tags["hpopipe.pid"] for r in trials}) == 2  # written by both workers


# ---------------------------------------------------------------- workers started before the stage imports


def test_an_early_worker_waits_for_the_stages_go_on_its_stdin() -> None:
    from hpopipe.sweep.agent import wait_for_stage

    code = "import sys; print(sys.stdin.readline(), end='', flush=True)"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    workers = LocalWorkers([child], lambda: False, early=True)
    workers.go("the-hpo-run")  # what the stage writes once its sweep is ready
    assert workers.wait() == [0]
    assert child.stdout is not None and json.loads(child.stdout.read()) == {"parent_run": "the-hpo-run"}

    read, write = os.pipe()

    def go() -> None:
        os.write(write, b'{"parent_run": null}\n')
        os.close(write)

    later = threading.Timer(0.3, go)
    later.start()
    assert wait_for_stage(lambda: False, read, poll_s=0.05) == {"parent_run": None}
    later.join()
    assert wait_for_stage(lambda: True, read) is None  # a signal ends the wait
    with pytest.raises(
        HpopipeError, match=r"^the hpo stage that started this worker exited before its sweep"
    ):
        wait_for_stage(lambda: False, read)  # the stage died: its end of the pipe is closed
    os.close(read)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hpo", "env", "error", "started"),
    [
        # refused in the sweep, after the worker beside the stage was started
        (
            {"metrics": ["macro_f1", "rmse"], "pruner": {"name": "none"}},
            {},
            "hpopipe: error: hpo.metrics: 'rmse' is for regression",
            True,
        ),
        # refused before any worker starts: an MLflow SQLite store takes one writer
        ({}, {"HPOPIPE_TRACKING": "on"}, "hpopipe: error: MLflow: sqlite:///", False),
    ],
)
def test_a_stage_that_fails_before_its_sweep_leaves_no_worker_running(
    tmp_path: Path, prepared_dir: Path, hpo: dict[str, Any], env: dict[str, str], error: str, started: bool
) -> None:
    from tests.sweeps import start

    workdir = stage_project(tmp_path, prepared_dir, 4, n_workers=2, storage="journal", **hpo)
    proc = start(workdir, HPOPIPE_LOG_LEVEL="INFO", **env)
    out, _ = proc.communicate(timeout=300)  # a worker left running would hold the pipe open
    assert proc.returncode == 2, out
    assert out.strip().splitlines()[-1].startswith(error), out
    assert "Traceback" not in out, out
    assert ("started 1 local worker process beside this one" in out) is started, out
    assert not _group_alive(proc.pid), "a worker process outlived the stage"
    assert "worker stopped:" not in out or "worker stopped: interrupted" in out  # it never ran a trial


@pytest.mark.slow
def test_early_workers_nest_under_this_runs_hpo_run_not_a_stale_one_in_the_study(
    tmp_path: Path, prepared_dir: Path, mlflow_server: str
) -> None:
    from mlflow import MlflowClient

    from tests.sweeps import run_stage

    workdir = stage_project(tmp_path / "w", prepared_dir, 3, n_workers=2, storage="journal")
    tracking = {"HPOPIPE_TRACKING": "on", "MLFLOW_TRACKING_URI": mlflow_server}
    assert run_stage(workdir, **tracking).returncode == 0
    first = load_study(workdir, "journal").user_attrs[lifecycle.PARENT_RUN]
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["hpo"]["n_trials"] = 6  # the same study, extended: it still names the first run as its parent
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = run_stage(workdir, **tracking)
    assert proc.returncode == 0, proc.stdout
    client = MlflowClient(mlflow_server)
    (experiment,) = [e for e in client.search_experiments() if e.name == "hpopipe"]
    runs = client.search_runs([experiment.experiment_id])
    (second,) = [r for r in runs if r.info.run_name.startswith("hpo ") and r.info.run_id != first]
    study = load_study(workdir, "journal")
    assert study.user_attrs[lifecycle.PARENT_RUN] == second.info.run_id
    newer = {f"trial-{t.number:04d}" for t in study.trials if t.number >= 3}
    trials = [r for r in runs if r.info.run_name in newer]
    assert len(trials) == len(newer) >= 3
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {second.info.run_id}
    assert len({r.data.tags["hpopipe.pid"] for r in trials}) == 2  # the early worker's among them
