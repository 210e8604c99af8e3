"""``hpopipe space export``: the search space as an Optuna, W&B or AzureML sweep description.

A team that already runs W&B sweeps or AzureML sweep jobs can take params.yaml's one search space
there without re-typing it (and re-introducing the typos ``config.py`` catches). Each translation
is exact where the target can say the same thing, and an ``HpopipeError`` naming the key where it
cannot: a sweep that quietly samples something other than what params.yaml says is worse than
no export at all.

Close-but-not-identical mappings, kept (and stated here) because refusing them would make the
export useless for the common case:

* ``normal`` becomes the target's unbounded normal(mu, sigma); Optuna, which has no normal,
  samples it uniformly in mu ± 3 sigma (``NormalSpec``).
* samplers: tpe, gp and cmaes become W&B ``bayes`` / AzureML ``bayesian`` (model-based search);
  qmc becomes ``random`` (it is quasi-random, not model-based), in AzureML with the Sobol rule
  and ``seed`` (Halton too: Sobol is the one low-discrepancy rule AzureML has); nsga2 (an
  evolutionary search) has no counterpart and is refused.
* ``grid``: both targets need discrete values for a grid, so every parameter is exported as the
  list of values hpopipe's own grid sampler visits (:func:`hpopipe.space.suggest.grid`).
* pruners: W&B's only policy is hyperband (``min_iter``, ``eta``), which takes hyperband and
  successive_halving (whose first rung is ``min_resource * reduction_factor **
  min_early_stopping_rate``). AzureML's median_stopping takes median (``n_warmup_steps`` →
  ``delay_evaluation``, ``interval_steps`` → ``evaluation_interval``; ``n_startup_trials`` has no
  counterpart), truncation_selection takes percentile (both drop the worst ``percentile`` %).
  AzureML's bandit policy (slack relative to the best run) matches no hpopipe pruner, and no
  AzureML policy matches hyperband's geometric rungs: those are refused, not approximated.
* integers: W&B and AzureML round a draw, ``round(x / q) * q``, to integers when ``q`` is one, so
  ``int_uniform`` becomes W&B ``int_uniform`` / ``q_uniform`` (``q`` = step) /
  ``q_log_uniform_values`` (``q`` 1, log) and AzureML ``quniform`` / ``qloguniform``: the same
  integers, the two ends of a linear range half as likely. ``hpopipe space import``
  (:mod:`hpopipe.space.imports`) reads each back as the spec it came from.
* dotted names (``optimizer.lr``, ``model.encoder.depth``) become W&B's nested ``parameters:``
  blocks; AzureML takes them as they are.
* budgets: ``hpo.n_trials`` becomes W&B ``run_cap`` / AzureML ``max_total_trials``;
  ``hpo.timeout`` becomes AzureML ``limits.timeout`` (whole seconds, rounded up); W&B sweeps have
  no time limit, so it is left out there.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml

from hpopipe.config import (
    GridSampler,
    IntUniformSpec,
    LogUniformSpec,
    NormalSpec,
    Params,
    ParamSpec,
    PrunerConfig,
    UniformSpec,
)
from hpopipe.errors import HpopipeError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

FORMATS = ("optuna", "wandb", "azureml")
AZUREML_SCHEMA = "https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json"

_MODEL_BASED = frozenset({"tpe", "gp", "cmaes"})
_WANDB_METHOD = {"random": "random", "qmc": "random", "grid": "grid"} | dict.fromkeys(_MODEL_BASED, "bayes")
# Per the AzureML docs, Bayesian sampling takes only these distributions and no early termination.
_AZUREML_BAYESIAN_TYPES = frozenset({"choice", "uniform", "quniform"})

_AZUREML_HEADER = """\
# AzureML sweep job exported by `hpopipe space export --format azureml`.
# trial (command, code, environment) and compute are placeholders: point them at your
# training script and workspace assets before `az ml job create --file <this file>`.
"""


def export_space(params: Params, fmt: str) -> str:
    """The search space (with sampler, pruner, metric and budget) as text in format ``fmt``.

    Args:
        params: the validated params.yaml.
        fmt: ``optuna`` (JSON), ``wandb`` (sweep YAML) or ``azureml`` (sweep-job YAML).

    Raises:
        HpopipeError: ``fmt`` is unknown, or the target cannot express a part of the space,
            sampler or pruner; the message names the params key.
    """
    exporters: dict[str, Callable[[Params], str]] = {
        "optuna": _optuna_text,
        "wandb": _wandb_text,
        "azureml": _azureml_text,
    }
    if fmt not in exporters:
        raise HpopipeError(f"space export: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "optuna" and params.hpo.metrics is not None:
        raise _cannot(fmt, "hpo.metrics", "its sweeps optimise one metric")
    return exporters[fmt](params)


def _cannot(fmt: str, key: str, why: str) -> HpopipeError:
    return HpopipeError(f"space export: {fmt} cannot express {key} ({why})")


def _dump_yaml(doc: dict[str, Any]) -> str:
    # Key order is the reading order of the target's docs, so never sort.
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _refuse_conditions(fmt: str, space: dict[str, ParamSpec]) -> None:
    for name, spec in space.items():
        if spec.when is not None:
            raise _cannot(fmt, f"search_space.{name}.when", "it has no conditional parameters")


def _starts_on_step(low: float, step: float) -> bool:
    # Both W&B's q_uniform and AzureML's quniform return round(uniform(min, max) / q) * q, i.e.
    # multiples of q; hpopipe's (Optuna's) steps are min + k * step. Same set only if q divides min.
    n = low / step
    return abs(n - round(n)) <= 1e-9 * max(1.0, abs(n))


def _check_quantised(fmt: str, name: str, spec: UniformSpec, step: float) -> None:
    if not _starts_on_step(spec.min, step):
        raise _cannot(
            fmt, f"search_space.{name}", f"its steps are multiples of {step}, but min {spec.min} is not one"
        )


def _grid_values(space: dict[str, ParamSpec], sampler: GridSampler) -> dict[str, list[Any]]:
    from hpopipe.space.suggest import grid  # numpy + optuna: only when a grid export needs them

    return grid(space, sampler.grid_points)


# --- optuna ------------------------------------------------------------------------------------


def optuna_distributions(space: dict[str, ParamSpec]) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each parameter, conditions ignored.

    Derived by running :func:`hpopipe.space.suggest.suggest` on a throwaway in-memory trial rather than
    by a second spec-to-Optuna mapping, so the export cannot drift from what a sweep samples.
    """
    import optuna

    from hpopipe.space.suggest import suggest

    unconditional = {name: spec.model_copy(update={"when": None}) for name, spec in space.items()}
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(logging.WARNING)  # "A new study created in memory" is no news to the user
    try:
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    finally:
        logger.setLevel(level)
    suggest(trial, unconditional)
    return {name: trial.distributions[name] for name in space}


def _optuna_text(params: Params) -> str:
    from optuna.distributions import distribution_to_json

    entries: dict[str, dict[str, Any]] = {}
    for name, dist in optuna_distributions(params.search_space).items():
        entries[name] = {"distribution": json.loads(distribution_to_json(dist))}
        when = params.search_space[name].when
        if when is not None:
            entries[name]["when"] = when
    doc: dict[str, Any] = {"metric": params.hpo.metric, "direction": params.hpo.direction}
    if params.hpo.metrics is not None:
        doc = {"metrics": params.hpo.objectives, "directions": params.hpo.directions}
    doc["search_space"] = entries
    return json.dumps(doc, indent=2) + "\n"


# --- W&B ---------------------------------------------------------------------------------------


def _wandb_text(params: Params) -> str:
    _refuse_conditions("wandb", params.search_space)
    doc: dict[str, Any] = {
        "method": _wandb_method(params),
        "metric": {"name": params.hpo.metric, "goal": params.hpo.direction},
        "parameters": _wandb_parameters(params),
    }
    early = _wandb_early_terminate(params.hpo.pruner)
    if early is not None:
        doc["early_terminate"] = early
    doc["run_cap"] = params.hpo.n_trials
    return _dump_yaml(doc)


def _wandb_method(params: Params) -> str:
    name = params.hpo.sampler.name
    if name not in _WANDB_METHOD:
        raise _cannot("wandb", f"hpo.sampler {name}", "its methods are bayes, random and grid")
    return _WANDB_METHOD[name]


def _wandb_parameters(params: Params) -> dict[str, dict[str, Any]]:
    if isinstance(params.hpo.sampler, GridSampler):
        grid = _grid_values(params.search_space, params.hpo.sampler)
        return _nest({name: {"values": values} for name, values in grid.items()})
    return _nest({name: _wandb_param(name, spec) for name, spec in params.search_space.items()})


def _wandb_param(name: str, spec: ParamSpec) -> dict[str, Any]:
    """One W&B parameter; ``hpopipe.config.from_wandb`` maps it back to ``spec``."""
    if isinstance(spec, LogUniformSpec):
        # Not `log_uniform`: that one takes natural-log exponents as min/max.
        return {"distribution": "log_uniform_values", "min": spec.min, "max": spec.max}
    if isinstance(spec, UniformSpec):
        if spec.step is None:
            return {"distribution": "uniform", "min": spec.min, "max": spec.max}
        _check_quantised("wandb", name, spec, spec.step)
        return {"distribution": "q_uniform", "min": spec.min, "max": spec.max, "q": spec.step}
    if isinstance(spec, IntUniformSpec):
        return _wandb_int(name, spec)
    if isinstance(spec, NormalSpec):
        return {"distribution": "normal", "mu": spec.mu, "sigma": spec.sigma}
    return {"values": list(spec.values)}


def _wandb_int(name: str, spec: IntUniformSpec) -> dict[str, Any]:
    # An integer q makes W&B round to integers: round(x / q) * q, so q 1 of a log range gives
    # log-scaled integers and q = step the multiples of step (when min is one: W&B counts from 0).
    if spec.log:
        return {"distribution": "q_log_uniform_values", "min": spec.min, "max": spec.max, "q": 1}
    if spec.step == 1:
        return {"distribution": "int_uniform", "min": spec.min, "max": spec.max}
    if spec.min % spec.step:
        raise _cannot(
            "wandb",
            f"search_space.{name}",
            f"its steps are multiples of {spec.step}, but min {spec.min} is not one",
        )
    return {"distribution": "q_uniform", "min": spec.min, "max": spec.max, "q": spec.step}


def _nest(flat: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Dotted names as W&B's nested ``parameters:`` blocks (config.wandb_form.flatten reads them back)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in flat.items():
        *parents, leaf = name.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {"parameters": {}})["parameters"]
        node[leaf] = entry
    return out


def _wandb_early_terminate(pruner: PrunerConfig) -> dict[str, Any] | None:
    if pruner.name == "none":
        return None
    if pruner.name == "hyperband":
        return {"type": "hyperband", "min_iter": pruner.min_resource, "eta": pruner.reduction_factor}
    if pruner.name == "successive_halving":
        first_rung = pruner.min_resource * pruner.reduction_factor**pruner.min_early_stopping_rate
        return {"type": "hyperband", "min_iter": first_rung, "eta": pruner.reduction_factor}
    raise _cannot("wandb", f"hpo.pruner {pruner.name}", "its only early_terminate policy is hyperband")


# --- AzureML -----------------------------------------------------------------------------------


def _azureml_text(params: Params) -> str:
    space = params.search_space
    _refuse_conditions("azureml", space)
    search_space = _azureml_search_space(params)
    doc: dict[str, Any] = {
        "$schema": AZUREML_SCHEMA,
        "type": "sweep",
        "trial": _azureml_trial(list(space)),
        "compute": "azureml:cpu-cluster",
        "sampling_algorithm": _azureml_sampling(params),
        "search_space": search_space,
        "objective": {"primary_metric": params.hpo.metric, "goal": params.hpo.direction},
        "limits": _azureml_limits(params),
    }
    if params.hpo.sampler.name in _MODEL_BASED:
        _check_bayesian(search_space, params.hpo.sampler.name, params.hpo.pruner.name)
    early = _azureml_early_termination(params.hpo.pruner)
    if early is not None:
        doc["early_termination"] = early
    return _AZUREML_HEADER + _dump_yaml(doc)


def _check_bayesian(search_space: dict[str, dict[str, Any]], sampler: str, pruner: str) -> None:
    """AzureML refuses at submission what its Bayesian sampling cannot take: say so now."""
    why = f"hpo.sampler {sampler} becomes bayesian sampling"
    for name, entry in search_space.items():
        if entry["type"] not in _AZUREML_BAYESIAN_TYPES:
            raise _cannot("azureml", f"search_space.{name}", f"{why}, which takes no {entry['type']}")
    if pruner != "none":
        raise _cannot("azureml", f"hpo.pruner {pruner}", f"{why}, which allows no early termination")


def _azureml_trial(names: list[str]) -> dict[str, str]:
    # `${{search_space.x}}` is how a sweep hands each sampled value to the trial's command.
    flags = " ".join(f"--{name} ${{{{search_space.{name}}}}}" for name in names)
    return {"code": ".", "command": f"python train.py {flags}", "environment": "azureml:hpopipe-env@latest"}


def _azureml_sampling(params: Params) -> str | dict[str, Any]:
    sampler = params.hpo.sampler
    if sampler.name == "grid":
        return "grid"
    if sampler.name in _MODEL_BASED:
        return "bayesian"
    if sampler.name == "random":
        return {"type": "random", "seed": params.seed}
    if sampler.name == "qmc":
        return {"type": "random", "rule": "sobol", "seed": params.seed}
    raise _cannot("azureml", f"hpo.sampler {sampler.name}", "its sampling is random, grid or bayesian")


def _azureml_search_space(params: Params) -> dict[str, dict[str, Any]]:
    if isinstance(params.hpo.sampler, GridSampler):  # AzureML grids take only choice
        grid = _grid_values(params.search_space, params.hpo.sampler)
        return {name: _azureml_choice(name, values) for name, values in grid.items()}
    return {name: _azureml_param(name, spec) for name, spec in params.search_space.items()}


def _azureml_choice(name: str, values: list[Any]) -> dict[str, Any]:
    if any(isinstance(v, bool) for v in values):
        # The sweep-job schema takes int, float, str or a mapping per value: true/false fail to load.
        raise _cannot("azureml", f"search_space.{name}", "a choice of true/false: use strings")
    return {"type": "choice", "values": list(values)}


def _azureml_param(name: str, spec: ParamSpec) -> dict[str, Any]:
    if isinstance(spec, LogUniformSpec):
        # AzureML's loguniform returns exp(uniform(min_value, max_value)): natural-log exponents.
        return {"type": "loguniform", "min_value": math.log(spec.min), "max_value": math.log(spec.max)}
    if isinstance(spec, UniformSpec):
        if spec.step is None:
            return {"type": "uniform", "min_value": spec.min, "max_value": spec.max}
        _check_quantised("azureml", name, spec, spec.step)
        return {"type": "quniform", "min_value": spec.min, "max_value": spec.max, "q": spec.step}
    if isinstance(spec, IntUniformSpec):
        return _azureml_int(name, spec)
    if isinstance(spec, NormalSpec):
        return {"type": "normal", "mu": spec.mu, "sigma": spec.sigma}
    return _azureml_choice(name, spec.values)


def _azureml_int(name: str, spec: IntUniformSpec) -> dict[str, Any]:
    """The quantised form that gives the same integers, so ``space import`` reads back the same spec.

    quniform with an integer q is round(uniform(min, max) / q) * q: every multiple of q in
    [min, max] when min is one (the ends half as likely); qloguniform with q 1 is the log-scaled
    integers (natural-log exponents). Hyperopt's convention may hand them to the command as
    ``3.0``: a trial script parses them with ``int(float(x))``. A min off the step's multiples
    has no quantised form: it becomes the explicit choice of its values.
    """
    if spec.log:
        return {
            "type": "qloguniform",
            "min_value": math.log(spec.min),
            "max_value": math.log(spec.max),
            "q": 1,
        }
    if spec.min % spec.step:
        return {"type": "choice", "values": list(range(spec.min, spec.max + 1, spec.step))}
    return {"type": "quniform", "min_value": spec.min, "max_value": spec.max, "q": spec.step}


def _azureml_limits(params: Params) -> dict[str, int]:
    limits = {"max_total_trials": params.hpo.n_trials}
    if params.hpo.timeout is not None:
        limits["timeout"] = math.ceil(params.hpo.timeout)  # AzureML counts whole seconds
    return limits


def _azureml_early_termination(pruner: PrunerConfig) -> dict[str, Any] | None:
    if pruner.name == "none":
        return None
    if pruner.name in ("median", "percentile"):
        # Both count intervals in reports of the metric, i.e. hpopipe's epochs (pruner steps).
        timing = {"evaluation_interval": pruner.interval_steps, "delay_evaluation": pruner.n_warmup_steps}
        if pruner.name == "median":
            return {"type": "median_stopping", **timing}
        return {
            "type": "truncation_selection",
            "truncation_percentage": _percentage(pruner.percentile),
            **timing,
        }
    raise _cannot(
        "azureml",
        f"hpo.pruner {pruner.name}",
        "its policies are bandit, median_stopping and truncation_selection: use median, percentile or none",
    )


def _percentage(percentile: float) -> int:
    if percentile != int(percentile):
        raise _cannot(
            "azureml", "hpo.pruner.percentile", f"{percentile}: truncation_percentage is a whole number"
        )
    return int(percentile)
