"""A new user's first hour: defaults that follow the data, validate before any stage, small CLI comforts."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial
from palmerpenguins import load_penguins

import hpopipe
from hpopipe.cli.main import build_parser
from hpopipe.config import RefitConfig, parse_params
from hpopipe.data import prepare, read_table, to_arrays
from hpopipe.handoffs.best import BestConfig
from hpopipe.refit import refit, save_model
from hpopipe.sweep.hooks import TrialLogger
from hpopipe.sweep.study import study_name
from tests.conftest import DROP, REPO, TINY_PARAMS, params_variant, subprocess_env

CSV = REPO / "data/raw/breast_cancer.csv"


def hpopipe_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hpopipe.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True)


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert all(fragment in line for fragment in fragments), line


def params(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(params_variant(TINY_PARAMS, {"hpo.metric": DROP, **changes}))
    return raw


# ---------------------------------------------------------------- hpo.metric: auto


def test_auto_is_the_default_and_follows_the_task() -> None:
    auto = parse_params(params())
    assert auto.hpo.metric == "auto"
    assert auto.for_task("classification").hpo.metric == "macro_f1"
    assert auto.for_task("regression").hpo.metric == "rmse"
    assert auto.for_task("regression").hpo.direction == "minimize"
    explicit = parse_params(params(**{"hpo.metric": "accuracy"}))
    assert explicit.for_task("classification") is explicit


def test_a_resolved_auto_names_the_same_study_as_the_metric_written_out() -> None:
    # Switching params.yaml to `auto` must not start the default data's sweep over.
    auto = parse_params(params()).for_task("classification")
    assert study_name(auto, "fp") == study_name(parse_params(yaml.safe_load(TINY_PARAMS)), "fp")


def test_auto_may_stay_when_metrics_are_listed() -> None:
    changes = {"hpo.metric": "auto", "hpo.metrics": ["log_loss", "n_params"], "hpo.pruner": DROP}
    multi = parse_params(params(**changes))
    assert multi.hpo.metric == "log_loss" and multi.hpo.objectives == ["log_loss", "n_params"]


# ---------------------------------------------------------------- validate


@pytest.fixture
def penguins_project(tmp_path: Path) -> Path:
    load_penguins().to_csv(tmp_path / "penguins.csv", index=False)
    return tmp_path


def write_params(root: Path, **changes: Any) -> None:
    raw = params(**{"data.path": "penguins.csv", "data.target": "body_mass_g", **changes})
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


def test_validate_resolves_auto_from_the_target(penguins_project: Path) -> None:
    write_params(penguins_project)
    proc = hpopipe_cli("validate", cwd=penguins_project)
    assert proc.returncode == 0, proc.stderr
    assert "penguins.csv: ok (regression, hpo.metric rmse;" in proc.stdout


def test_validate_refuses_a_metric_of_the_other_task_naming_the_key(penguins_project: Path) -> None:
    write_params(penguins_project, **{"hpo.metric": "macro_f1"})
    assert_user_error(
        hpopipe_cli("validate", cwd=penguins_project),
        "hpo.metric: 'macro_f1' is for classification, but 'body_mass_g' in penguins.csv is a regression",
        "use auto or one of rmse, mae, r2",
    )


def test_validate_names_a_missing_target(penguins_project: Path) -> None:
    write_params(penguins_project, **{"data.target": "weight"})
    assert_user_error(
        hpopipe_cli("validate", cwd=penguins_project), "data.target: column 'weight' is not in penguins.csv"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: nothing to refuse")
def test_validate_refuses_cuda_where_there_is_none(penguins_project: Path) -> None:
    write_params(penguins_project, **{"train.device": "cuda"})
    assert_user_error(
        hpopipe_cli("validate", cwd=penguins_project), "train.device: cuda, but torch finds no CUDA device"
    )


# ---------------------------------------------------------------- the command line


def test_version() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--version"])
    assert info.value.code == 0
    proc = hpopipe_cli("--version", cwd=Path.cwd())
    assert proc.returncode == 0 and proc.stdout.strip() == f"hpopipe {hpopipe.__version__}"


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


def test_help_has_no_markup() -> None:
    every = _parsers(build_parser())
    assert len(every) >= 15  # the whole tree: predict, validate, ..., space export and import
    for parser in every:
        assert "`" not in parser.format_help(), parser.prog


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small refit model of the default data, saved as the refit stage saves it."""
    tiny = parse_params(params(**{"data.path": str(CSV)}))
    prep = prepare(read_table(tiny.data.path), tiny.data, tiny.seed)
    best = BestConfig.model_validate(
        {
            "seed": 1,
            "model": {"name": "mlp"},
            "params": {"width": 16},
            "train": {},
            "epochs": 3,
            "metric": "macro_f1",
            "source": {"trial": 0, "sweep_value": 0.9, "cv_mean": 0.9, "cv_std": 0.0, "cv_folds": 2},
        }
    )
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(
        path,
        refit(best, RefitConfig(), prep.schema, to_arrays(prep.train), to_arrays(prep.test)),
        best,
        prep.schema,
    )
    return path


def test_predict_keeps_the_id_columns_it_is_asked_to(model_file: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(CSV).drop(columns=["diagnosis"]).head(8)
    rows.to_csv(tmp_path / "plain.csv", index=False)
    rows.insert(0, "patient", [f"p{i}" for i in range(8)])
    rows.to_csv(tmp_path / "with_id.csv", index=False)
    model = ["--model", str(model_file)]
    assert (
        hpopipe_cli("predict", *model, "--input", "plain.csv", "--output", "a.csv", cwd=tmp_path).returncode
        == 0
    )
    keep = ["--id-column", "patient", "--id-column", "mean_radius"]  # an id, and a feature kept as one
    proc = hpopipe_cli("predict", *model, "--input", "with_id.csv", "--output", "b.csv", *keep, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plain, kept = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert list(kept.columns) == ["patient", "mean_radius", *plain.columns]
    assert list(kept["patient"]) == list(rows["patient"]) and list(kept["mean_radius"]) == list(
        rows["mean_radius"]
    )
    pd.testing.assert_frame_equal(kept[list(plain.columns)], plain)
    missing = ["--id-column", "nope"]
    proc = hpopipe_cli("predict", *model, "--input", "plain.csv", "--output", "c.csv", *missing, cwd=tmp_path)
    assert_user_error(proc, "--id-column: ['nope'] not in the columns of plain.csv")
    assert not (tmp_path / "c.csv").exists()


# ---------------------------------------------------------------- the trial log


def _add(study: optuna.Study, value: float) -> optuna.trial.FrozenTrial:
    study.add_trial(
        create_trial(value=value, params={"x": value}, distributions={"x": FloatDistribution(0, 1)})
    )
    return study.trials[-1]


def test_a_tie_with_the_studys_best_is_no_new_best(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study(direction="maximize")
    _add(study, 0.9)  # from an earlier run of the sweep, or another worker: this logger never saw it
    logger = TrialLogger("macro_f1")
    with caplog.at_level(logging.INFO, logger="hpopipe.sweep.hooks"):
        logger(study, _add(study, 0.9))
        logger(study, _add(study, 0.8))
        logger(study, _add(study, 0.95))
    best_lines = [r.message for r in caplog.records if r.message.startswith("new best")]
    assert best_lines == ["new best: trial 3, 0.95 (+0.05)"]
