"""Every sampler, pruner and search-space form runs a real small study (SQLite storage)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.sweep.exports import statistics
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, TINY_PARAMS

CALLS: list[tuple[str, int]] = []


def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A user hook (hpo.callbacks) that remembers what it saw."""
    CALLS.append((study.study_name, trial.number))


def raw_params(tmp_path: Path, **hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update({"n_trials": 3, "checkpoint_dir": str(tmp_path / "ckpt"), **hpo})
    raw["train"].update(max_epochs=3)
    return raw


def run(raw: dict[str, Any], prepared: tuple, db: Path) -> optuna.Study:
    return sweep(parse_params(raw), prepared[0], prepared[1], sqlite_spec(db), NullTracker())


def finished(study: optuna.Study) -> int:
    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


@pytest.mark.parametrize(
    "sampler",
    [
        {"name": "tpe", "n_startup_trials": 1, "multivariate": False, "group": False, "constant_liar": False},
        {"name": "tpe", "multivariate": True, "group": True},
        {"name": "random"},
        {"name": "grid", "grid_points": 2},
        {"name": "gp", "n_startup_trials": 1},
        {"name": "cmaes", "n_startup_trials": 1},
        {"name": "qmc", "qmc_type": "halton"},
        {"name": "nsga2", "population_size": 2},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values())[:30],
)
def test_every_sampler_runs_a_seeded_study(tmp_path: Path, prepared: tuple, sampler: dict) -> None:
    raw = raw_params(tmp_path, sampler=sampler)
    first = run(raw, prepared, tmp_path / "a.db")
    assert finished(first) == 3
    for t in first.trials:
        assert 1e-3 <= t.params["lr"] <= 3e-2 and t.params["width"] in (16, 32)
    again = run(raw, prepared, tmp_path / "b.db")
    assert [t.params for t in again.trials] == [t.params for t in first.trials]


@pytest.mark.parametrize(
    "pruner",
    [
        {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0, "interval_steps": 1},
        {"name": "percentile", "percentile": 50.0, "n_startup_trials": 1, "n_warmup_steps": 0},
        {
            "name": "successive_halving",
            "min_resource": 1,
            "reduction_factor": 2,
            "min_early_stopping_rate": 0,
        },
        {"name": "hyperband", "min_resource": 1, "reduction_factor": 2},
        {"name": "wilcoxon", "p_threshold": 0.5, "n_startup_steps": 1},
        {"name": "none"},
    ],
    ids=lambda p: p["name"],
)
def test_every_pruner_runs_a_study(tmp_path: Path, prepared: tuple, pruner: dict) -> None:
    study = run(raw_params(tmp_path, n_trials=4, pruner=pruner), prepared, tmp_path / "s.db")
    assert finished(study) == 4
    if pruner["name"] == "none":
        assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_threshold_pruner_prunes_below_its_bound(tmp_path: Path, prepared: tuple) -> None:
    pruner = {"name": "threshold", "lower": 1.01, "n_warmup_steps": 1}  # macro-F1 never exceeds 1
    study = run(raw_params(tmp_path, pruner=pruner), prepared, tmp_path / "s.db")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(max(t.intermediate_values) == 1 for t in study.trials)  # stopped at the first check


@pytest.mark.parametrize(
    ("section", "value", "fragment"),
    [
        ("pruner", {"name": "median", "n_warmup_step": 1}, "hpo.pruner.n_warmup_step: unknown key"),
        ("sampler", {"name": "tpe", "multivariat": True}, "hpo.sampler.multivariat: unknown key"),
        ("sampler", {"name": "bayes"}, "hpo.sampler.name: 'bayes' is not one of"),
        ("pruner", {"name": "threshold"}, "threshold needs lower, upper or both"),
        ("callbacks", ["not a reference"], "callbacks: 'not a reference' must look like"),
    ],
)
def test_misspelt_strategy_options_are_errors(
    tmp_path: Path, section: str, value: Any, fragment: str
) -> None:
    raw = raw_params(tmp_path)
    raw["hpo"][section] = value
    with pytest.raises(HpopipeError, match=r"^params\.yaml: ") as err:
        parse_params(raw)
    assert fragment in str(err.value)


def test_normal_int_log_and_step_forms_sample_inside_their_ranges(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path, n_trials=6, sampler={"name": "random"}, pruner={"name": "none"})
    raw["train"].update(max_epochs=1)
    raw["search_space"] = {
        "lr": {"type": "normal", "mu": 0.01, "sigma": 0.002},
        "width": {"type": "int_uniform", "min": 8, "max": 64, "log": True},
        "dropout": {"type": "uniform", "min": 0.0, "max": 0.4, "step": 0.2},
        "n_layers": {"type": "int_uniform", "min": 1, "max": 3, "step": 2},
    }
    study = run(raw, prepared, tmp_path / "s.db")
    for t in study.trials:
        assert 0.01 - 0.006 <= t.params["lr"] <= 0.01 + 0.006
        assert 8 <= t.params["width"] <= 64
        assert t.params["dropout"] in (0.0, 0.2, 0.4) and t.params["n_layers"] in (1, 3)


def test_conditional_parameters_are_absent_when_their_condition_fails(
    tmp_path: Path, prepared: tuple
) -> None:
    raw = raw_params(tmp_path, n_trials=8, sampler={"name": "random"}, pruner={"name": "none"})
    raw["train"].update(max_epochs=1)
    raw["search_space"] = {
        "n_layers": {"type": "int_uniform", "min": 1, "max": 2},
        "width": {"type": "choice", "values": [8, 16], "when": {"n_layers": 2}},
    }
    study = run(raw, prepared, tmp_path / "s.db")
    layers = {t.params["n_layers"] for t in study.trials}
    assert layers == {1, 2}, "8 random draws should hit both depths"
    for t in study.trials:
        assert ("width" in t.params) == (t.params["n_layers"] == 2)


def test_condition_must_name_an_earlier_parameter_and_a_real_value(tmp_path: Path) -> None:
    raw = raw_params(tmp_path)
    raw["search_space"]["heads"] = {"type": "choice", "values": [2, 4], "when": {"layer_type": "attention"}}
    with pytest.raises(HpopipeError, match="'layer_type' must be a parameter listed before 'heads'"):
        parse_params(raw)
    raw["search_space"]["heads"]["when"] = {"width": 99}
    with pytest.raises(HpopipeError, match=r"\[99\] are not all values of 'width'"):
        parse_params(raw)


def test_wandb_form_normalises_into_the_same_objects(tmp_path: Path) -> None:
    native = raw_params(tmp_path)
    native["search_space"] = {
        "lr": {"type": "log_uniform", "min": 1e-4, "max": 1e-2},
        "lr2": {"type": "log_uniform", "min": math.exp(-9), "max": math.exp(-4)},
        "dropout": {"type": "uniform", "min": 0.0, "max": 0.5},
        "q": {"type": "uniform", "min": 0.0, "max": 1.0, "step": 0.25},
        "width": {"type": "int_uniform", "min": 8, "max": 64},
        "act": {"type": "choice", "values": ["relu", "gelu"]},
        "bias": {"type": "normal", "mu": 0.0, "sigma": 1.0},
    }
    wandb = raw_params(tmp_path)
    wandb["search_space"] = {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "lr2": {"distribution": "log_uniform", "min": -9, "max": -4},
        "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5},
        "q": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25},
        "width": {"distribution": "int_uniform", "min": 8, "max": 64},
        "act": {"values": ["relu", "gelu"]},
        "bias": {"distribution": "normal", "mu": 0.0, "sigma": 1.0},
    }
    for raw in (native, wandb):  # an undeclared factory reads any name: the forms are what is tested
        raw["model"] = {"factory": "tests.factories:build_linear"}
    assert parse_params(wandb).search_space == parse_params(native).search_space


def test_user_hooks_and_the_progress_log_run_after_every_trial(
    tmp_path: Path, prepared: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    CALLS.clear()
    raw = raw_params(tmp_path, callbacks=["tests.test_strategies:record"], pruner={"name": "none"})
    with caplog.at_level(logging.INFO, logger="hpopipe.sweep.hooks"):
        study = run(raw, prepared, tmp_path / "s.db")
    assert [(study.study_name, n) for n in range(3)] == CALLS
    assert sum("trial " in r.message and "COMPLETE" in r.message for r in caplog.records) == 3
    assert any(r.message.startswith("new best: trial 0") for r in caplog.records)


def test_bad_hook_fails_before_any_trial(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path, callbacks=["tests.test_strategies:nope"])
    with pytest.raises(
        HpopipeError, match=r"hpo\.callbacks: 'tests\.test_strategies' has no function 'nope'"
    ):
        run(raw, prepared, tmp_path / "s.db")


def test_statistics_summarise_the_study(tmp_path: Path, prepared: tuple) -> None:
    study = run(raw_params(tmp_path, pruner={"name": "none"}), prepared, tmp_path / "s.db")
    stats = statistics(study)
    assert stats["counts"]["complete"] == 3 and stats["success_rate"] == 1.0
    assert stats["best_value"] == max(t.value for t in study.trials)  # type: ignore[type-var]
    assert stats["mean_duration_s"] > 0 and stats["direction"] == "maximize"
