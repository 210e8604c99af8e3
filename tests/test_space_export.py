"""`hpopipe space export`: each format read back by its reader (Optuna, config.from_wandb, azure-ai-ml)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)

from hpopipe.cli.space import add_parser as add_space_parser
from hpopipe.config import Params, parse_params
from hpopipe.errors import HpopipeError
from hpopipe.space.formats import export_space
from hpopipe.space.suggest import grid

# azure-ai-ml's schemas warn hundreds of times (marshmallow 4 deprecations) on import: not ours to fix.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from azure.ai.ml import load_job
    from azure.ai.ml.sweep import (
        Choice,
        LogUniform,
        MedianStoppingPolicy,
        Normal,
        QLogUniform,
        QUniform,
        SweepJob,
        TruncationSelectionPolicy,
        Uniform,
    )

pytestmark = pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning")

SPACE: dict[str, Any] = {
    "lr": {"type": "log_uniform", "min": 1e-4, "max": 3e-2},
    "n_layers": {"type": "int_uniform", "min": 1, "max": 3},
    "width": {"type": "choice", "values": [32, 64, 128]},
    "dropout": {"type": "uniform", "min": 0.0, "max": 0.5, "step": 0.05},
    "momentum": {"type": "uniform", "min": 0.8, "max": 0.99},
    "noise": {"type": "normal", "mu": 0.0, "sigma": 0.1},
}


def raw(space: dict[str, Any] | None = None, **hpo: Any) -> dict[str, Any]:
    """A params.yaml mapping (nothing in it is read from disk)."""
    return {
        "seed": 42,
        "data": {"path": "data/raw/breast_cancer.csv", "target": "diagnosis"},
        # An undeclared factory reads any name, and sgd reads momentum: the formats are what is tested.
        "model": {"factory": "tests.factories:build_linear"},
        "search_space": copy.deepcopy(SPACE if space is None else space),
        # The metric written out: `auto` needs the data's task, which only `hpopipe space export` reads.
        "hpo": {
            "n_trials": 30,
            "metric": "macro_f1",
            "sampler": {"name": "random"},
            "pruner": {"name": "none"},
            **hpo,
        },
        "train": {"optimizer": "sgd"},
        "cv": {},
        "refit": {},
        "cleanup": {},
    }


def params(space: dict[str, Any] | None = None, **hpo: Any) -> Params:
    return parse_params(raw(space, **hpo))


def azureml_job(tmp_path: Path, p: Params) -> SweepJob:
    path = tmp_path / "sweep.yaml"
    path.write_text(export_space(p, "azureml"))
    job = load_job(path)
    assert isinstance(job, SweepJob)
    return job


# --- optuna ------------------------------------------------------------------------------------


def test_optuna_export_round_trips_through_optunas_own_json() -> None:
    space = {
        **SPACE,
        "layer": {"type": "choice", "values": ["dense", "attention"]},
        "heads": {"type": "int_uniform", "min": 1, "max": 16, "log": True, "when": {"layer": "attention"}},
        "units": {"type": "int_uniform", "min": 16, "max": 128, "step": 16},
    }
    doc = json.loads(export_space(params(space), "optuna"))

    got = {
        name: json_to_distribution(json.dumps(e["distribution"])) for name, e in doc["search_space"].items()
    }
    assert got == {
        "lr": FloatDistribution(1e-4, 3e-2, log=True),
        "n_layers": IntDistribution(1, 3),
        "width": CategoricalDistribution([32, 64, 128]),
        "dropout": FloatDistribution(0.0, 0.5, step=0.05),
        "momentum": FloatDistribution(0.8, 0.99),
        "noise": FloatDistribution(0.0 - 3 * 0.1, 0.0 + 3 * 0.1),  # hpopipe samples a normal in mu ± 3 sigma
        "layer": CategoricalDistribution(["dense", "attention"]),
        "heads": IntDistribution(1, 16, log=True),
        "units": IntDistribution(16, 128, step=16),
    }
    assert list(got) == list(space)
    assert doc["search_space"]["heads"]["when"] == {"layer": "attention"}
    assert "when" not in doc["search_space"]["lr"]
    assert (doc["metric"], doc["direction"]) == ("macro_f1", "maximize")


# --- W&B ---------------------------------------------------------------------------------------


def test_wandb_parameters_read_back_as_the_same_specs() -> None:
    original = params(sampler={"name": "tpe"}, pruner={"name": "hyperband", "reduction_factor": 4})
    sweep = yaml.safe_load(export_space(original, "wandb"))

    again = parse_params(raw(sweep["parameters"]))  # W&B form, normalised by config.from_wandb
    assert again.search_space == original.search_space
    assert sweep["parameters"]["lr"] == {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-2}
    assert sweep["parameters"]["dropout"]["distribution"] == "q_uniform"
    assert sweep["method"] == "bayes"
    assert sweep["metric"] == {"name": "macro_f1", "goal": "maximize"}
    assert sweep["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 4}
    assert sweep["run_cap"] == 30


def test_wandb_integers_with_log_or_step_are_rounded_draws() -> None:
    # W&B rounds to integers when q is one: q 1 of a log range, q = step of a linear one.
    space = {
        "batch": {"type": "int_uniform", "min": 16, "max": 512, "log": True},
        "units": {"type": "int_uniform", "min": 8, "max": 64, "step": 8},
    }
    sweep = yaml.safe_load(export_space(params(space), "wandb"))
    assert sweep["parameters"] == {
        "batch": {"distribution": "q_log_uniform_values", "min": 16, "max": 512, "q": 1},
        "units": {"distribution": "q_uniform", "min": 8, "max": 64, "q": 8},
    }
    assert parse_params(raw(sweep["parameters"])).search_space == params(space).search_space


@pytest.mark.parametrize(
    ("sampler", "method"),
    [("tpe", "bayes"), ("gp", "bayes"), ("cmaes", "bayes"), ("qmc", "random"), ("random", "random")],
)
def test_wandb_method_follows_the_sampler(sampler: str, method: str) -> None:
    sweep = yaml.safe_load(export_space(params(sampler={"name": sampler}, metric="log_loss"), "wandb"))
    assert sweep["method"] == method
    assert sweep["metric"] == {"name": "log_loss", "goal": "minimize"}
    assert "early_terminate" not in sweep


def test_wandb_grid_lists_the_values_hpopipes_grid_visits() -> None:
    p = params(sampler={"name": "grid", "grid_points": 3})
    sweep = yaml.safe_load(export_space(p, "wandb"))
    assert sweep["method"] == "grid"
    assert sweep["parameters"] == {name: {"values": v} for name, v in grid(p.search_space, 3).items()}


def test_wandb_successive_halving_starts_at_its_first_rung() -> None:
    pruner = {
        "name": "successive_halving",
        "min_resource": 2,
        "reduction_factor": 3,
        "min_early_stopping_rate": 1,
    }
    sweep = yaml.safe_load(export_space(params(pruner=pruner), "wandb"))
    assert sweep["early_terminate"] == {"type": "hyperband", "min_iter": 6, "eta": 3}


@pytest.mark.parametrize(
    ("space", "hpo", "message"),
    [
        (
            {
                "layer": {"type": "choice", "values": ["a", "b"]},
                "heads": {**SPACE["n_layers"], "when": {"layer": "b"}},
            },
            {},
            "space export: wandb cannot express search_space.heads.when",
        ),
        (
            {"n": {"type": "int_uniform", "min": 4, "max": 68, "step": 8}},
            {},
            "search_space.n (its steps are multiples of 8, but min 4 is not one",
        ),
        (
            {"d": {"type": "uniform", "min": 0.05, "max": 0.45, "step": 0.1}},
            {},
            "search_space.d (its steps are",
        ),
        (SPACE, {"pruner": {"name": "median"}}, "wandb cannot express hpo.pruner median"),
        (SPACE, {"sampler": {"name": "nsga2"}}, "wandb cannot express hpo.sampler nsga2"),
    ],
)
def test_wandb_refuses_what_it_cannot_express(
    space: dict[str, Any], hpo: dict[str, Any], message: str
) -> None:
    with pytest.raises(HpopipeError, match=message.replace("(", r"\(")):
        export_space(params(space, **hpo), "wandb")


# --- AzureML -----------------------------------------------------------------------------------


def test_azureml_yaml_loads_as_a_sweep_job_with_the_same_space(tmp_path: Path) -> None:
    p = params(timeout=3600.5, pruner={"name": "median", "n_warmup_steps": 3, "interval_steps": 2})
    job = azureml_job(tmp_path, p)

    ss = job.search_space
    assert isinstance(ss["lr"], LogUniform)  # natural-log exponents
    assert (ss["lr"].min_value, ss["lr"].max_value) == pytest.approx((math.log(1e-4), math.log(3e-2)))
    assert isinstance(ss["n_layers"], QUniform)  # round(uniform(1, 3) / 1) * 1: the integers 1 … 3
    assert (ss["n_layers"].min_value, ss["n_layers"].max_value, ss["n_layers"].q) == (1, 3, 1)
    assert isinstance(ss["width"], Choice) and ss["width"].values == [32, 64, 128]
    assert isinstance(ss["dropout"], QUniform)
    assert (ss["dropout"].min_value, ss["dropout"].max_value, ss["dropout"].q) == (0.0, 0.5, 0.05)
    assert isinstance(ss["momentum"], Uniform) and (ss["momentum"].min_value, ss["momentum"].max_value) == (
        0.8,
        0.99,
    )
    assert isinstance(ss["noise"], Normal) and (ss["noise"].mu, ss["noise"].sigma) == (0.0, 0.1)

    assert (job.sampling_algorithm.type, job.sampling_algorithm.seed) == ("random", 42)
    assert (job.objective.primary_metric, job.objective.goal) == ("macro_f1", "maximize")
    assert (job.limits.max_total_trials, job.limits.timeout) == (30, 3601)
    assert isinstance(job.early_termination, MedianStoppingPolicy)
    assert (job.early_termination.delay_evaluation, job.early_termination.evaluation_interval) == (3, 2)
    assert "--lr ${{search_space.lr}}" in job.trial.command


def test_azureml_integers_are_quantised_draws_or_an_explicit_choice(tmp_path: Path) -> None:
    space = {
        "units": {"type": "int_uniform", "min": 16, "max": 64, "step": 16},
        "batch": {"type": "int_uniform", "min": 16, "max": 512, "log": True},
        "odd": {"type": "int_uniform", "min": 1, "max": 7, "step": 2},  # 1 is no multiple of 2
    }
    ss = azureml_job(tmp_path, params(space)).search_space
    assert isinstance(ss["units"], QUniform) and (ss["units"].min_value, ss["units"].q) == (16, 16)
    assert isinstance(ss["batch"], QLogUniform) and ss["batch"].q == 1
    assert (ss["batch"].min_value, ss["batch"].max_value) == pytest.approx((math.log(16), math.log(512)))
    assert isinstance(ss["odd"], Choice) and ss["odd"].values == [1, 3, 5, 7]


def test_azureml_bayesian_from_a_model_based_sampler(tmp_path: Path) -> None:
    space = {name: SPACE[name] for name in ("n_layers", "width", "dropout", "momentum")}
    job = azureml_job(tmp_path, params(space, sampler={"name": "tpe"}))
    assert job.sampling_algorithm == "bayesian"
    assert job.early_termination is None


def test_azureml_grid_is_all_choices_of_hpopipes_grid(tmp_path: Path) -> None:
    p = params(sampler={"name": "grid", "grid_points": 4})
    job = azureml_job(tmp_path, p)
    assert job.sampling_algorithm == "grid"
    assert {n: (type(d), d.values) for n, d in job.search_space.items()} == {
        n: (Choice, v) for n, v in grid(p.search_space, 4).items()
    }


def test_azureml_percentile_and_qmc(tmp_path: Path) -> None:
    pruner = {"name": "percentile", "percentile": 25.0, "n_warmup_steps": 1}
    job = azureml_job(tmp_path, params(sampler={"name": "qmc"}, pruner=pruner))
    assert isinstance(job.early_termination, TruncationSelectionPolicy)
    assert (job.early_termination.truncation_percentage, job.early_termination.delay_evaluation) == (25, 1)
    assert (job.sampling_algorithm.type, job.sampling_algorithm.rule, job.sampling_algorithm.seed) == (
        "random",
        "sobol",
        42,
    )


@pytest.mark.parametrize(
    ("space", "hpo", "message"),
    [
        (
            {
                "layer": {"type": "choice", "values": ["a", "b"]},
                "heads": {**SPACE["n_layers"], "when": {"layer": "b"}},
            },
            {},
            "space export: azureml cannot express search_space.heads.when",
        ),
        (
            {"flag": {"type": "choice", "values": [True, False]}},
            {},
            "search_space.flag (a choice of true/false",
        ),
        (
            {"d": {"type": "uniform", "min": 0.05, "max": 0.45, "step": 0.1}},
            {},
            "search_space.d (its steps are",
        ),
        (SPACE, {"pruner": {"name": "hyperband"}}, "azureml cannot express hpo.pruner hyperband"),
        (SPACE, {"pruner": {"name": "percentile", "percentile": 12.5}}, "hpo.pruner.percentile"),
        (SPACE, {"sampler": {"name": "tpe"}}, "search_space.lr (hpo.sampler tpe becomes bayesian sampling"),
        (
            {"width": SPACE["width"]},
            {"sampler": {"name": "gp"}, "pruner": {"name": "median"}},
            "hpo.pruner median (hpo.sampler gp becomes bayesian sampling, which allows no early termination",
        ),
    ],
)
def test_azureml_refuses_what_it_cannot_express(
    space: dict[str, Any], hpo: dict[str, Any], message: str
) -> None:
    with pytest.raises(HpopipeError, match=message.replace("(", r"\(")):
        export_space(params(space, **hpo), "azureml")


# --- the command -------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="hpopipe")
    add_space_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_writes_stdout_or_the_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw()))

    run_cli(["space", "export", "--format", "wandb", "--params", str(params_file)])
    assert yaml.safe_load(capsys.readouterr().out)["method"] == "random"

    out = tmp_path / "sweeps" / "azureml.yaml"
    run_cli(["space", "export", "--format", "azureml", "--params", str(params_file), "--output", str(out)])
    assert capsys.readouterr().out == f"wrote the azureml search space to {out}\n"
    assert isinstance(load_job(out), SweepJob)


def test_cli_refuses_an_unknown_format_and_a_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_cli(["space", "export", "--format", "ray"])
    with pytest.raises(HpopipeError, match="file not found"):
        run_cli(["space", "export", "--format", "optuna", "--params", str(tmp_path / "nope.yaml")])
    with pytest.raises(HpopipeError, match="format must be one of optuna, wandb, azureml"):
        export_space(params(), "ray")
