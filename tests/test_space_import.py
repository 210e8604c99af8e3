"""`hpopipe space import`: W&B sweep configs and AzureML sweep jobs into params.yaml, and back.

The corpus (tests/data/sweeps/, both tools, every distribution, nested and dotted names, early
termination, run caps) imports, validates, runs two trials each, exports to what each tool's own
validator accepts (azure-ai-ml's ``load_job``; W&B's sweep-config JSON schema, a copy in
tests/data/wandb/ because the ``sweeps`` package pins numpy<2 and cannot install beside this
project's numpy), and round-trips.
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from optuna.trial import TrialState

from hpopipe.cli.space import add_parser as add_space_parser
from hpopipe.config import Params, load_params, parse_params
from hpopipe.errors import HpopipeError
from hpopipe.space.formats import export_space
from hpopipe.space.imports import import_sweep
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, TINY_PARAMS

with warnings.catch_warnings():  # azure-ai-ml's schemas warn hundreds of times on import
    warnings.simplefilter("ignore", DeprecationWarning)
    from azure.ai.ml import load_job
    from azure.ai.ml.sweep import SweepJob

pytestmark = pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning")

CORPUS = sorted((REPO / "tests/data/sweeps").glob("*.yaml"))
# Corpus files written for a user factory (the rest tune the built-in mlp).
FACTORY = {"wandb_factory_nested.yaml": "tests.factories:build_encoder"}
WANDB_SCHEMA = json.loads((REPO / "tests/data/wandb/sweep-config.schema.json").read_text())


def wandb_violations(doc: dict[str, Any]) -> list[str]:
    """What W&B's own validator says of a sweep config: its JSON schema, its formats, min < max.

    As W&B's ``sweeps.config`` does: Draft 7 with its ``float`` and ``integer`` format checks,
    then ``min < max`` for every parameter (JSON Schema cannot compare two values).
    """
    formats = jsonschema.FormatChecker()
    formats.checks("float")(lambda v: isinstance(v, float))
    formats.checks("integer")(lambda v: isinstance(v, int))
    validator = jsonschema.Draft7Validator(WANDB_SCHEMA, format_checker=formats)
    found = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]

    def ranges(parameters: dict[str, Any]) -> None:
        for name, spec in parameters.items():
            if "parameters" in spec:
                ranges(spec["parameters"])
            elif "min" in spec and "max" in spec and not spec["min"] < spec["max"]:
                found.append(f"{name}: min {spec['min']} is not less than max {spec['max']}")

    ranges(doc.get("parameters", {}))
    return found


def project(tmp_path: Path, factory: str | None = None) -> Path:
    """A params.yaml of the tiny test problem, with comments, for the import to edit."""
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    if factory is not None:
        raw["model"] = {"factory": factory}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "params.yaml"
    path.write_text("# the tiny test problem\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def imported(tmp_path: Path, sweep_file: Path, factory: str | None = None) -> tuple[Params, list[str]]:
    params_path = project(tmp_path, factory or FACTORY.get(sweep_file.name))
    lines = import_sweep(sweep_file, params_path)
    return load_params(params_path), lines


def tool_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


def test_the_corpus_covers_both_tools_every_distribution_and_form() -> None:
    text = "\n".join(p.read_text() for p in CORPUS)
    assert len(CORPUS) >= 15 and {tool_of(p) for p in CORPUS} == {"wandb", "azureml"}
    from hpopipe.config.wandb_form import DISTRIBUTIONS
    from hpopipe.space.imports import _AZUREML_TYPES

    # randint counts from 0, which no built-in param may be: test_azureml_randint_counts_from_zero.
    for name in [*DISTRIBUTIONS, *_AZUREML_TYPES]:
        assert f": {name}" in text or f"type: {name}" in text, name
    for form in (
        "parameters:\n",
        "model.width",
        "optimizer.lr",
        "early_terminate",
        "early_termination",
        "run_cap",
        "max_total_trials",
        "bandit",
        "median_stopping",
        "truncation_selection",
    ):
        assert form in text, form


@pytest.mark.parametrize("sweep_file", CORPUS, ids=lambda p: p.stem)
def test_corpus_file_is_accepted_by_its_own_tool(sweep_file: Path) -> None:
    doc = yaml.safe_load(sweep_file.read_text())
    if tool_of(sweep_file) == "wandb":
        assert wandb_violations(doc) == []
    else:
        assert isinstance(load_job(sweep_file), SweepJob)


@pytest.mark.parametrize("sweep_file", CORPUS, ids=lambda p: p.stem)
def test_corpus_file_imports_validates_and_runs_two_trials(
    tmp_path: Path, prepared: tuple, sweep_file: Path
) -> None:
    params, lines = imported(tmp_path, sweep_file)
    assert all(line.startswith(("mapped: ", "approximated: ", "not mapped: ", "dropped: ")) for line in lines)
    assert all("\n" not in line for line in lines)
    for name in params.search_space:  # every parameter is accounted for, once
        assert sum(f"-> search_space.{name} " in line for line in lines) == 1, name
    raw = params.model_dump(mode="json")
    raw["hpo"].update(n_trials=2, timeout=None)
    raw["train"]["max_epochs"] = 2
    study = sweep(parse_params(raw), prepared[0], prepared[1], sqlite_spec(tmp_path / "s.db"), NullTracker())
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 2
    for trial in done:
        assert set(trial.params) == set(params.search_space)


@pytest.mark.parametrize("sweep_file", CORPUS, ids=lambda p: p.stem)
def test_corpus_file_exports_to_what_each_tool_accepts_and_round_trips(
    tmp_path: Path, sweep_file: Path
) -> None:
    params, _ = imported(tmp_path / "a", sweep_file)
    accepted = []
    for fmt in ("wandb", "azureml"):
        try:
            text = export_space(params, fmt)
        except HpopipeError as err:  # what the other tool cannot say: refused by name, never bent
            assert str(err).startswith(f"space export: {fmt} cannot express "), err
            continue
        out = tmp_path / f"{fmt}.yaml"
        out.write_text(text)
        if fmt == "wandb":
            assert wandb_violations(yaml.safe_load(text)) == []
        else:
            assert isinstance(load_job(out), SweepJob)
        accepted.append(fmt)
        again, _ = imported(tmp_path / f"back-{fmt}", out, FACTORY.get(sweep_file.name))
        if fmt == tool_of(sweep_file):  # through its own tool: the same params, sampler, pruner, budget
            assert again.search_space == params.search_space
            assert again.hpo.model_dump() == params.hpo.model_dump() | {
                "checkpoint_dir": again.hpo.checkpoint_dir
            }
        else:
            assert again.search_space == params.search_space
    assert tool_of(sweep_file) in accepted


# --- import(export(space)) == space ----------------------------------------------------------------

EVERY_FORM: dict[str, Any] = {
    "weight_decay": {"type": "log_uniform", "min": 1e-6, "max": 3e-2},
    "dropout": {"type": "uniform", "min": 0.0, "max": 0.5},
    "momentum": {"type": "uniform", "min": 0.1, "max": 0.5, "step": 0.05},
    "n_layers": {"type": "int_uniform", "min": 1, "max": 3},
    "units": {"type": "int_uniform", "min": 16, "max": 128, "step": 16},
    "batch": {"type": "int_uniform", "min": 16, "max": 512, "log": True},
    "width": {"type": "choice", "values": [16, 32, 64]},
    "act": {"type": "choice", "values": ["relu", "gelu"]},
    "noise": {"type": "normal", "mu": 0.0, "sigma": 0.1},
    "model.encoder.depth": {"type": "int_uniform", "min": 1, "max": 4},
    "optimizer.lr": {"type": "log_uniform", "min": 1e-5, "max": 1e-2},
    "train.batch_size": {"type": "choice", "values": [32, 64]},
}


@pytest.mark.parametrize("fmt", ["wandb", "azureml"])
@pytest.mark.parametrize(
    "hpo",
    [
        {"sampler": {"name": "random"}, "pruner": {"name": "none"}, "metric": "accuracy", "n_trials": 7},
        {"sampler": {"name": "qmc", "qmc_type": "sobol"}, "pruner": {"name": "none"}, "timeout": 120.0},
    ],
)
def test_import_of_export_is_the_space_for_every_form(tmp_path: Path, fmt: str, hpo: dict[str, Any]) -> None:
    params_path = project(tmp_path, "tests.factories:build_encoder")
    raw = yaml.safe_load(params_path.read_text())
    raw["search_space"] = EVERY_FORM
    raw["train"]["optimizer"] = "sgd"  # which reads momentum
    raw["hpo"].update(hpo)
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    original = load_params(params_path)
    sweep_file = tmp_path / f"{fmt}.yaml"
    sweep_file.write_text(export_space(original, fmt))

    import_sweep(sweep_file, params_path)
    again = load_params(params_path)
    assert again.search_space == original.search_space
    assert list(again.search_space) == list(EVERY_FORM)
    assert (again.hpo.metric, again.hpo.n_trials, again.hpo.pruner) == (
        original.hpo.metric,
        original.hpo.n_trials,
        original.hpo.pruner,
    )
    if fmt == "azureml":  # W&B sweeps have no time limit and no quasi-random rule
        assert (again.hpo.sampler, again.hpo.timeout) == (original.hpo.sampler, original.hpo.timeout)


@pytest.mark.parametrize(
    ("pruner", "fmt", "back"),
    [
        ({"name": "median", "n_warmup_steps": 3, "interval_steps": 2}, "azureml", None),
        ({"name": "percentile", "percentile": 25.0, "n_warmup_steps": 1}, "azureml", None),
        ({"name": "successive_halving", "min_resource": 2, "reduction_factor": 3}, "wandb", None),
        # W&B's hyperband is one bracket: the nearest Optuna pruner is successive halving.
        (
            {"name": "hyperband", "min_resource": 2, "reduction_factor": 4},
            "wandb",
            {"name": "successive_halving", "min_resource": 2, "reduction_factor": 4},
        ),
    ],
)
def test_pruners_come_back_as_the_table_says(
    tmp_path: Path, pruner: dict[str, Any], fmt: str, back: dict[str, Any] | None
) -> None:
    params_path = project(tmp_path)
    raw = yaml.safe_load(params_path.read_text())
    raw["hpo"].update(pruner=pruner, sampler={"name": "random"})
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    original = load_params(params_path)
    sweep_file = tmp_path / "s.yaml"
    sweep_file.write_text(export_space(original, fmt))
    import_sweep(sweep_file, params_path)
    expected = (
        original.hpo.pruner
        if back is None
        else parse_params({**raw, "hpo": {**raw["hpo"], "pruner": back}}).hpo.pruner
    )
    assert load_params(params_path).hpo.pruner == expected


# --- params.yaml keeps its comments and other sections -----------------------------------------------


def test_the_import_keeps_every_comment_and_other_section(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_path)
    before = params_path.read_text()
    lines = import_sweep(REPO / "tests/data/sweeps/wandb_dotted.yaml", params_path)
    after = params_path.read_text()

    def outside_space(text: str) -> list[str]:
        out, inside = [], False
        for line in text.splitlines():
            if line and not line.startswith((" ", "#")):
                inside = line.startswith("search_space:")
            if not inside:
                out.append(line)
        return out

    changed = {"n_trials", "metric", "sampler", "pruner"}
    kept = [line for line in outside_space(before) if line.split(":")[0].strip() not in changed]
    assert [line for line in outside_space(after) if line.split(":")[0].strip() not in changed] == kept
    for line in before.splitlines():  # every comment, in the changed hpo lines too
        if "#" in line and "search_space" not in line:
            assert line[line.index("#") :] in after, line
    assert "  optimizer.lr: {type: log_uniform, min: 0.001, max: 0.03}" in after
    assert "  n_trials: 20" in after and "  metric: accuracy " in after
    assert any(line.startswith("approximated: early_terminate ") for line in lines)
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    for section in old:
        if section not in ("search_space", "hpo"):
            assert new[section] == old[section], section


def test_a_key_params_yaml_lacks_goes_beside_its_kin(tmp_path: Path) -> None:
    params_path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_path)
    text = params_path.read_text().replace(
        "  timeout: null                      # seconds; null = no limit\n", ""
    )
    params_path.write_text(text)
    import_sweep(REPO / "tests/data/sweeps/azureml_random.yaml", params_path)
    lines = params_path.read_text().splitlines()
    assert lines[lines.index("  n_trials: 12") + 1] == "  timeout: 3600"


def test_sampler_and_pruner_options_the_file_does_not_set_stay(tmp_path: Path) -> None:
    params_path = project(tmp_path)
    raw = yaml.safe_load(params_path.read_text())
    raw["hpo"]["sampler"] = {"name": "tpe", "n_startup_trials": 9}
    raw["hpo"]["pruner"] = {"name": "median", "n_startup_trials": 4, "n_warmup_steps": 7}
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    import_sweep(REPO / "tests/data/sweeps/azureml_bandit_dotted.yaml", params_path)  # random, median
    hpo = load_params(params_path).hpo
    assert hpo.sampler.name == "random"
    assert hpo.pruner.model_dump() == {
        "name": "median",
        "n_startup_trials": 4,
        "n_warmup_steps": 1,
        "interval_steps": 1,
    }


def test_multi_objective_params_become_single_objective(tmp_path: Path) -> None:
    params_path = project(tmp_path)
    raw = yaml.safe_load(params_path.read_text())
    raw["hpo"] = {**raw["hpo"], "metrics": ["macro_f1", "n_params"], "pruner": {"name": "none"}}
    del raw["hpo"]["metric"]
    params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    lines = import_sweep(REPO / "tests/data/sweeps/wandb_random_basic.yaml", params_path)
    assert load_params(params_path).hpo.metrics is None
    assert "dropped: hpo.metrics (the sweep has one objective)" in lines


# --- what is said, and errors --------------------------------------------------------------------


def test_lines_say_what_was_mapped_approximated_and_not(tmp_path: Path) -> None:
    params, lines = imported(tmp_path, REPO / "tests/data/sweeps/wandb_unmapped_parts.yaml")
    assert params.hpo.metric == "macro_f1"  # val_loss is no hpopipe metric: left as it was
    assert any(line.startswith("not mapped: metric val_loss: not a metric hpopipe knows") for line in lines)
    assert any("probabilities [0.3, 0.7] dropped" in line for line in lines)
    assert any("eta 2.5 rounded to 2" in line for line in lines)
    for key in ("program", "command", "project", "entity", "name", "description", "early_terminate.strict"):
        assert any(line.startswith(f"not mapped: {key}: ") for line in lines), key
    params, lines = imported(tmp_path / "az", REPO / "tests/data/sweeps/azureml_random.yaml")
    for key in ("trial", "compute", "limits.max_concurrent_trials", "limits.trial_timeout"):
        assert any(line.startswith(f"not mapped: {key}: ") for line in lines), key


def test_azureml_randint_counts_from_zero(tmp_path: Path) -> None:
    # AzureML's randint(upper) draws 0 … upper - 1: for a factory's param that may be 0 (no size).
    doc = {
        "type": "sweep",
        "sampling_algorithm": "random",
        "search_space": {"extra_depth": {"type": "randint", "upper": 3}},
        "objective": {"primary_metric": "accuracy", "goal": "maximize"},
    }
    params_path = project(tmp_path, "tests.factories:build_linear")
    lines = import_sweep(write(tmp_path, doc), params_path)
    spec = load_params(params_path).search_space["extra_depth"]
    assert (spec.type, spec.min, spec.max, spec.step) == ("int_uniform", 0, 2, 1)  # type: ignore[union-attr]
    assert any(line.startswith("mapped: search_space.extra_depth") and "randint" in line for line in lines)


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


WANDB: dict[str, Any] = {"method": "random", "parameters": {"lr": {"values": [0.01]}}}
AZUREML: dict[str, Any] = {
    "type": "sweep",
    "search_space": {"lr": {"type": "choice", "values": [0.01]}},
    "objective": {"primary_metric": "accuracy", "goal": "maximize"},
}


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (
            {**WANDB, "parameters": {"lr": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}}},
            "parameters.lr: q must be > 0",
        ),
        (
            {**WANDB, "parameters": {"lr": {"distribution": "lognormal"}}},
            "parameters.lr: unsupported W&B distribution 'lognormal'",
        ),
        (
            {**WANDB, "parameters": {"opt": {"parameters": {"lr": {"min": 1}}}}},
            "parameters.opt.lr: no distribution given",
        ),
        ({**WANDB, "parameters": {"a-b": {"values": [1]}}}, "parameters: parameter name 'a-b' must be"),
        ({**WANDB, "method": "hyperopt"}, "method: must be grid, random or bayes"),
        ({**WANDB, "early_terminate": {"type": "envelope"}}, "early_terminate: W&B's only type is hyperband"),
        (
            {**WANDB, "early_terminate": {"type": "hyperband", "eta": 3}},
            "early_terminate: hyperband needs min_iter",
        ),
        ({**WANDB, "run_cap": 0}, "run_cap: must be a whole number ≥ 1"),
        (
            {**WANDB, "metric": {"name": "accuracy", "goal": "up"}},
            "metric.goal: must be maximize or minimize",
        ),
        ({**WANDB, "paramters": {}}, "paramters: not a key of a W&B sweep config"),
        ({**AZUREML, "search_space": {"lr": {"type": "gauss"}}}, "search_space.lr: unknown type 'gauss'"),
        (
            {**AZUREML, "search_space": {"lr": {"type": "uniform", "min": 0, "max": 1}}},
            "search_space.lr: uniform takes min_value, max_value, not max, min",
        ),
        (
            {**AZUREML, "search_space": {"lr": {"type": "choice", "values": [{"a": 1}]}}},
            "search_space.lr: values must be a list of numbers or strings",
        ),
        (
            {**AZUREML, "early_termination": {"type": "bandit", "slack": 0.1}},
            "early_termination.slack: not a key of AzureML's bandit policy",
        ),
        ({**AZUREML, "sampling_algorithm": "sobol"}, "sampling_algorithm: must be random, grid or bayesian"),
        ({"kind": "sweep"}, "neither a W&B sweep config"),
    ],
)
def test_errors_name_the_file_the_parameter_and_the_problem(
    tmp_path: Path, doc: dict[str, Any], where: str
) -> None:
    params_path = project(tmp_path)
    before = params_path.read_text()
    sweep_file = write(tmp_path, doc)
    with pytest.raises(HpopipeError) as info:
        import_sweep(sweep_file, params_path)
    assert str(info.value).startswith(f"{sweep_file}: {where}"), info.value
    assert "\n" not in str(info.value)
    assert params_path.read_text() == before  # nothing written


def test_a_dotted_name_nothing_reads_is_refused_naming_the_file(tmp_path: Path) -> None:
    params_path = project(tmp_path)
    sweep_file = write(
        tmp_path,
        {
            **WANDB,
            "parameters": {"model": {"parameters": {"encoder": {"parameters": {"depth": {"values": [2]}}}}}},
        },
    )
    with pytest.raises(HpopipeError) as info:
        import_sweep(sweep_file, params_path)
    assert str(info.value) == (
        f"{sweep_file} (imported into {params_path}): search_space.model.encoder.depth: "
        "the mlp model reads no 'encoder.depth' "
        "(it reads n_layers, width, dropout, norm, embedding, embedding_scale)"
    )


def test_the_command_prints_one_line_each_and_writes_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params_path = project(tmp_path)
    parser = argparse.ArgumentParser(prog="hpopipe")
    add_space_parser(parser.add_subparsers(dest="command", required=True))
    sweep_file = REPO / "tests/data/sweeps/azureml_bayesian.yaml"
    args = parser.parse_args(["space", "import", "--from", str(sweep_file), "--params", str(params_path)])
    args.func(args)
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"wrote search_space and hpo from {sweep_file} into {params_path}"
    assert any(
        line.startswith("approximated: sampling_algorithm bayesian -> hpo.sampler {name: tpe}: ")
        for line in out
    )
    assert load_params(params_path).hpo.sampler.name == "tpe"
