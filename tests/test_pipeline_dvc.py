"""The real `dvc repro` in a temporary git repo: outputs, caching and sweep extension."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import TINY_PARAMS, dvc_repro, make_project, params_variant, subprocess_env

pytestmark = pytest.mark.slow


def repro(root: Path, *args: str) -> tuple[list[str], str]:
    """Run `dvc repro` with tracking on; return the stages that ran and the whole output."""
    env = subprocess_env(
        HPOPIPE_TRACKING="on", HPOPIPE_LOG_LEVEL="INFO", MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db"
    )
    return dvc_repro(root, *args, env=env)


def set_param(root: Path, dotted: str, value: object) -> None:
    path = root / "params.yaml"
    path.write_text(params_variant(path.read_text(), {dotted: value}))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("proj"), TINY_PARAMS)
    ran, _ = repro(root)
    assert ran == ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]
    return root


def test_first_run_writes_every_output(project: Path) -> None:
    trials = pd.read_csv(project / "artifacts/hpo/trials.csv")
    assert list(trials.columns[:5]) == ["number", "state", "value", "duration_s", "best_epoch"]
    assert {"params_lr", "params_n_layers", "params_width", "params_dropout"} <= set(trials.columns)
    assert sorted(trials["number"]) == [0, 1, 2, 3]
    hpo = json.loads((project / "metrics/hpo.json").read_text())
    assert hpo["complete"] + hpo["pruned"] + hpo["fail"] == 4 and hpo["complete"] >= 1
    cv = pd.read_csv(project / "artifacts/cv/results.csv")
    assert cv["trial"].nunique() == min(2, hpo["complete"]) and set(cv["fold"]) == {0, 1}
    folds_run = cv.groupby("trial", sort=False)["fold"].apply(list)
    stopped = cv.groupby("trial", sort=False)["stopped_early"].all()
    assert all(
        f == [0] if stopped[t] else f == [0, 1] for t, f in folds_run.items()
    )  # early stop: fold 0 only
    best = yaml.safe_load((project / "artifacts/best/config.yaml").read_text())
    assert best["model"] == {"name": "mlp", "params": {}}
    assert set(best["params"]) == {"lr", "n_layers", "width", "dropout"}
    assert json.loads((project / "artifacts/best/params.json").read_text()) == best["params"]
    test_metrics = json.loads((project / "metrics/test.json").read_text())
    assert set(test_metrics) == {"accuracy", "macro_f1", "roc_auc", "log_loss", "baselines"}
    assert test_metrics["accuracy"] > 0.8  # a sane model on an easy, real dataset
    assert set(test_metrics["baselines"]) == {"hist_gradient_boosting", "dummy"}
    bundle = torch.load(project / "models/model.pt", weights_only=True)
    assert bundle["schema"]["classes"] == ["benign", "malignant"]
    cleanup = json.loads((project / "metrics/cleanup.json").read_text())
    assert cleanup["kept"] == 1
    left = list((project / ".hpopipe/checkpoints").glob("*/*.pt"))
    assert len({p.name.split(".")[0] for p in left}) == 1  # the kept trial's (and its previous epoch's)


def test_mlflow_has_a_parent_run_per_stage_and_nested_trial_runs(project: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["hpopipe"], output_format="pandas")
    study = json.loads((project / "metrics/hpo.json").read_text())["study"]
    names = set(runs["tags.mlflow.runName"])  # each stage's run says what it is
    assert {f"hpo {study}", f"cv {study}", "refit breast_cancer-diagnosis"} <= names
    hpo_id = runs.loc[runs["tags.mlflow.runName"] == f"hpo {study}", "run_id"].iloc[0]
    hpo_run = runs[runs["run_id"] == hpo_id].iloc[0]
    assert hpo_run["tags.study"] == study and hpo_run["tags.study_hash"] == study.rsplit("-", 1)[1]
    assert hpo_run["tags.stage"] == "hpo" and len(hpo_run["tags.data_fingerprint"]) == 64
    trials = runs[runs["tags.mlflow.parentRunId"] == hpo_id]
    assert len(trials) == 4
    assert set(trials["tags.state"]) <= {"COMPLETE", "PRUNED", "FAIL"}
    assert (trials["metrics.duration_s"] > 0).all() and set(trials["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient()
    (version,) = client.search_model_versions("name = 'breast_cancer-diagnosis'")  # data file stem, target
    refit_id = runs.loc[runs["tags.mlflow.runName"] == "refit breast_cancer-diagnosis", "run_id"].iloc[0]
    assert version.run_id == refit_id


def test_second_repro_does_nothing(project: Path) -> None:
    lock = (project / "dvc.lock").read_text()
    ran, out = repro(project)
    assert ran == []
    assert "Data and pipelines are up to date" in out
    assert (project / "dvc.lock").read_text() == lock


def test_refit_param_reruns_only_refit_and_what_follows(project: Path) -> None:
    auto = int(yaml.safe_load((project / "artifacts/best/config.yaml").read_text())["epochs"])
    set_param(project, "refit.epochs", auto)  # the same model: only its file's bytes change
    ran, _ = repro(project)
    assert ran == ["refit", "cleanup"]  # the report reads the refit's evaluation, which is the same
    set_param(project, "refit.epochs", auto + 1 if auto < 6 else auto - 1)
    ran, _ = repro(project)
    assert ran == ["refit", "report", "cleanup"]


def test_library_change_marks_only_dependent_stages_stale(project: Path) -> None:
    env = subprocess_env()
    train_py = project / "src/hpopipe/training/loop.py"
    original = train_py.read_text()
    train_py.write_text(original + "\n# touched\n")
    status = subprocess.run(["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True)
    train_py.write_text(original)
    stale = set(json.loads(status.stdout))
    assert {"hpo", "cv", "refit"} <= stale
    assert "prepare" not in stale and "select" not in stale


@pytest.mark.parametrize(
    "edited",
    [
        "src/hpopipe/sweep/status.py",
        "src/hpopipe/sweep/fanout.py",
        "src/hpopipe/report/render.py",
        "src/hpopipe/cli/main.py",
    ],
)
def test_a_cosmetic_edit_leaves_the_sweep_cv_select_and_refit_cached(project: Path, edited: str) -> None:
    # The status table, the Prefect fan-out, the report page and the CLI change nothing a trial computes.
    path = project / edited
    original = path.read_text()
    path.write_text(original + "\n# a cosmetic edit\n")
    try:
        status = subprocess.run(
            ["dvc", "status", "--json"], cwd=project, env=subprocess_env(), capture_output=True, text=True
        )
    finally:
        path.write_text(original)
    stale = set(json.loads(status.stdout))
    assert not {"prepare", "hpo", "cv", "select", "refit"} & stale
    assert ("report" in stale) == edited.startswith("src/hpopipe/report/")


STAGES = ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]


def _outputs(root: Path, stage: str) -> dict[str, bytes]:
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    paths = [e if isinstance(e, str) else next(iter(e)) for k in ("outs", "metrics") for e in spec.get(k, [])]
    found = [[root / p] if (root / p).is_file() else sorted((root / p).rglob("*")) for p in paths]
    return {str(f.relative_to(root)): f.read_bytes() for group in found for f in group if f.is_file()}


def test_a_refused_stage_names_the_command_that_brings_its_outputs_back(project: Path) -> None:
    # DVC deletes a stage's outputs before the stage can refuse; the refusal must say how to get them back.
    env = subprocess_env()
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", "finished pipeline"], cwd=project, env=env, check=True)
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params_variant(params, {"retrain": {"max_regression": -1.0}}))
    try:
        for stage in STAGES:
            before = _outputs(project, stage)
            proc = subprocess.run(
                ["dvc", "repro", "-f", "-s", stage], cwd=project, env=env, capture_output=True, text=True
            )
            assert proc.returncode != 0 and "retrain.max_regression" in proc.stderr, proc.stderr
            assert _outputs(project, stage) != before  # DVC deleted them
            (command,) = re.findall(r"`([^`]+)` brings them back", proc.stderr)
            subprocess.run(command, shell=True, cwd=project, env=env, check=True, capture_output=True)
            assert _outputs(project, stage) == before, stage
    finally:
        (project / "params.yaml").write_text(params)
    status = subprocess.run(["dvc", "status", "--json"], cwd=project, env=env, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}


def test_more_trials_extend_the_same_study(project: Path) -> None:
    before = pd.read_csv(project / "artifacts/hpo/trials.csv")
    set_param(project, "hpo.n_trials", 6)
    ran, out = repro(project)
    assert ran[0] == "hpo" and "prepare" not in ran
    assert "4 finished trials, running up to 2 more" in out
    after = pd.read_csv(project / "artifacts/hpo/trials.csv")
    assert sorted(after["number"]) == list(range(6))
    kept = after[after["number"] < 4].drop(columns=["duration_s"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.drop(columns=["duration_s"]))
