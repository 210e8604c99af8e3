"""hpopipe.connect: external training code on the sweep's budget, pruner, lifecycle, retries and MLflow."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import hpopipe
from hpopipe.errors import HpopipeError, SweepStopped
from hpopipe.seeding import derive_seed
from hpopipe.sweep import lifecycle
from tests.conftest import REPO, subprocess_env

SPACE = {
    "lr": {"type": "log_uniform", "min": 1.0e-4, "max": 1.0e-1},
    "depth": {"type": "int_uniform", "min": 1, "max": 2},
    "width2": {"type": "choice", "values": [8, 16], "when": {"depth": 2}},
}


def write_params(tmp_path: Path, **hpo: Any) -> Path:
    """A sweep-only params file (no data, model, cv ... sections)."""
    settings = {
        "n_trials": 4,
        "metric": "accuracy",
        "sampler": {"name": "random"},
        "pruner": {"name": "none"},
    }
    settings.update({"heartbeat_s": 0.2, "grace_s": 30.0, **hpo})
    path = tmp_path / "sweep.params.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "search_space": SPACE, "hpo": settings}))
    return path


def join(tmp_path: Path, **hpo: Any) -> hpopipe.Sweep:
    return hpopipe.connect(write_params(tmp_path, **hpo), storage=f"sqlite:///{tmp_path / 'study.db'}")


def counted(sweep: hpopipe.Sweep) -> int:
    return len(sweep.study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def test_two_members_share_one_exact_budget_with_conditional_params_and_positional_seeds(
    tmp_path: Path,
) -> None:
    one, two = join(tmp_path, n_trials=5), join(tmp_path, n_trials=5)
    assert one.name == two.name and one.name.startswith("external-")
    seen = []
    with one, two:
        for member in (one, two, one, two, one):
            trial = member.ask()
            assert trial is not None
            seen.append(trial)
            trial.tell(0.5 + trial.number / 100)
        assert one.ask() is None and two.ask() is None  # the budget is spent: nothing more, anywhere
    assert counted(one) == 5 and len(one.study.trials) == 5
    for trial in seen:
        assert ("width2" in trial.params) == (trial.params["depth"] == 2)  # conditional, as configured
        assert trial.seed == derive_seed(3, "trial", trial.number)  # by sweep position, as hpopipe's own
    states = lifecycle.workers(one.study)
    assert all(record["state"] == "exited" for record in states.values())  # heartbeats, then a goodbye


def test_report_asks_the_configured_pruner_and_a_pruned_trial_counts(tmp_path: Path) -> None:
    pruner = {"name": "threshold", "lower": 0.5, "n_warmup_steps": 0}
    with join(tmp_path, n_trials=2, pruner=pruner) as sweep:
        good = sweep.ask()
        assert good is not None
        assert good.report(0, 0.9) is False
        good.tell(0.9)
        bad = sweep.ask()
        assert bad is not None
        assert bad.report(0, 0.1) is True  # under the threshold: stop, already recorded
        bad.tell(0.1)  # nothing to do: the trial ended pruned
        assert bad.state == TrialState.PRUNED
        assert sweep.ask() is None
        assert [t.state for t in sweep.study.trials] == [TrialState.COMPLETE, TrialState.PRUNED]
        assert sweep.study.trials[1].intermediate_values == {0: 0.1}


def test_failures_fail_the_trial_not_the_script_until_max_failures(tmp_path: Path) -> None:
    with join(tmp_path, n_trials=4, max_failures=2) as sweep:
        first = sweep.ask()
        assert first is not None
        with first:
            raise ValueError("out of memory")  # swallowed: the trial fails, the loop goes on
        assert first.state == TrialState.FAIL
        assert sweep.study.trials[0].user_attrs["fail_reason"] == "ValueError: out of memory"
        second = sweep.ask()
        assert second is not None
        with second:
            pass  # ended without tell: a failure too
        with pytest.raises(SweepStopped) as stopped:
            sweep.ask()
        assert stopped.value.state == "failed" and "max_failures" in str(stopped.value)
        with pytest.raises(HpopipeError, match="after it ended"):
            second.tell(1.0)


def test_nan_fails_and_explicit_fail_records_the_reason(tmp_path: Path) -> None:
    with join(tmp_path, n_trials=2) as sweep:
        trial = sweep.ask()
        assert trial is not None
        trial.tell(float("nan"))
        other = sweep.ask()
        assert other is not None
        other.fail("diverged")
    reasons = [t.user_attrs["fail_reason"] for t in sweep.study.trials]
    assert "not a finite number" in reasons[0] and reasons[1] == "diverged"
    assert counted(sweep) == 0


def test_keyboard_interrupt_hands_the_trial_back_for_a_retry(tmp_path: Path) -> None:
    with join(tmp_path, n_trials=1) as sweep:
        trial = sweep.ask()
        assert trial is not None
        with pytest.raises(KeyboardInterrupt), trial:
            raise KeyboardInterrupt
        assert trial.state == TrialState.FAIL
        retry = sweep.ask()  # the queued retry: same parameters, same seed
        assert retry is not None
        assert (retry.retry_of, retry.params, retry.seed) == (trial.number, trial.params, trial.seed)
        retry.tell(0.7)
        assert sweep.ask() is None
    assert counted(sweep) == 1


def test_paused_raises_and_wait_waits_for_resume(tmp_path: Path) -> None:
    with join(tmp_path) as sweep:
        lifecycle.apply_action(sweep.study, "pause")
        with pytest.raises(SweepStopped) as stopped:
            sweep.ask()
        assert stopped.value.state == "paused"
        threading.Timer(0.5, lifecycle.apply_action, (sweep.study, "resume")).start()
        trial = sweep.ask(wait=True)
        assert trial is not None
        trial.tell(0.5)
        lifecycle.apply_action(sweep.study, "cancel")
        with pytest.raises(SweepStopped) as canceled:
            sweep.ask(wait=True)
        assert canceled.value.state == "canceled"


def test_storage_and_study_alone_join_with_the_recorded_settings(tmp_path: Path) -> None:
    with join(tmp_path, n_trials=3) as first:
        name = first.name
    with hpopipe.connect(storage=f"sqlite:///{tmp_path / 'study.db'}", study=name) as again:
        assert again.params.search_space.keys() == SPACE.keys() and again.budget.n_trials == 3
    with pytest.raises(HpopipeError, match="no study named"):
        hpopipe.connect(storage=f"sqlite:///{tmp_path / 'study.db'}", study="nothing-here")


def test_metric_auto_is_refused_without_prepared_data(tmp_path: Path) -> None:
    with pytest.raises(HpopipeError, match=r"hpo\.metric: name the metric"):
        join(tmp_path, metric="auto")


def test_import_hpopipe_stays_cheap() -> None:
    code = "import sys, hpopipe; print(sorted(m for m in ('torch', 'optuna', 'mlflow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
    assert set(hpopipe.__all__) >= {"connect", "Sweep", "Trial", "SweepStopped"}
    assert (REPO / "src/hpopipe/py.typed").exists()


@pytest.mark.slow
def test_the_example_twice_at_once_on_postgresql_spends_the_budget_exactly(
    tmp_path: Path, postgres_url: str
) -> None:
    """Done when (issue 17): two processes, one study, the budget exact, pruning, MLflow nested."""
    from mlflow import MlflowClient

    raw = yaml.safe_load((REPO / "examples/external.params.yaml").read_text())
    raw["hpo"].update(storage="env:HPOPIPE_TEST_PG", callbacks=["tests.external_hooks:until_two_workers"])
    params = tmp_path / "external.params.yaml"
    params.write_text(yaml.safe_dump(raw))
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = subprocess_env(HPOPIPE_TEST_PG=postgres_url, HPOPIPE_TRACKING="on", MLFLOW_TRACKING_URI=mlflow_uri)
    env["PYTHONPATH"] += f":{REPO}"  # the test hook
    cmd = [sys.executable, str(REPO / "examples/external_training.py"), "--params", str(params)]
    cmd += ["--data", str(REPO / "data/raw/breast_cancer.csv")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)]
    procs.append(
        subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    )
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    storage = optuna.storages.RDBStorage(postgres_url.replace("postgresql://", "postgresql+psycopg2://"))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == raw["hpo"]["n_trials"]  # exactly: neither process ran one too many
    assert any(t.state == TrialState.PRUNED for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both processes ran trials
    storage.engine.dispose()

    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "hpopipe"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name.startswith("hpo ")]
    assert study.user_attrs["mlflow_parent_run"] == parent.info.run_id
    children = [r for r in runs if r.info.run_name.startswith("trial-")]
    assert len(children) == len(trials)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert len({r.data.tags["hpopipe.pid"] for r in children}) == 2
    pruned = next(r for r in children if r.data.tags["state"] == "PRUNED")
    assert client.get_metric_history(pruned.info.run_id, "intermediate_value")
    assert parent.info.status == "FINISHED"
