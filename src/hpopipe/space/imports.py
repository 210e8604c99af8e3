"""``hpopipe space import``: a W&B sweep config or an AzureML sweep job as params.yaml sections.

The inverse of :mod:`hpopipe.space.formats`: the search space, sampler, metric and goal, pruner
and budget of a sweep file become ``search_space`` and ``hpo`` keys, and every part of the file
is accounted for in one line: mapped (the same thing), approximated (the nearest thing hpopipe
has, and how it differs) or not mapped (and why). The per-parameter mapping is
:mod:`hpopipe.config.wandb_form`'s, so a W&B parameter means the same written into params.yaml
or imported; AzureML's parameter types are rewritten as their W&B twins first (both round a
draw the same way, Hyperopt's convention). docs/strategies.md has the tables.

Nearest, not same (each also printed by the import):

* W&B ``bayes`` (a Gaussian-process search) and AzureML ``bayesian`` become ``tpe``, hpopipe's
  model-based default, which also takes conditional spaces and several workers (``gp`` is the
  closer relative; set it by hand if wanted).
* W&B's hyperband ``early_terminate`` is one bracket: at ``min_iter * eta**k`` epochs it stops
  runs outside the best 1/eta. That is Optuna's successive halving at the same rungs; Optuna's
  hyperband would add brackets W&B does not run. A fractional ``eta`` is rounded.
* AzureML's bandit policy stops runs a slack away from the best run; no built-in Optuna pruner
  compares with the best, so it becomes the median rule at the same interval and delay.
  median_stopping (running averages in AzureML) becomes ``median`` (values at the same step),
  truncation_selection becomes ``percentile``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpopipe.config import HpoConfig, load_params
from hpopipe.config.edit import write_sections
from hpopipe.config.wandb_form import check_name, convert, flatten
from hpopipe.config.yaml_checks import read_yaml
from hpopipe.errors import HpopipeError
from hpopipe.metrics import METRIC_NAMES, objective_direction

IMPORT_FORMATS = ("wandb", "azureml")


@dataclass
class Imported:
    """What a sweep file says, in params.yaml's terms, and one line per part of it."""

    fmt: str
    search_space: dict[str, dict[str, Any]] = field(default_factory=dict)
    hpo: dict[str, Any] = field(default_factory=dict)
    drop_hpo: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def mapped(self, what: str, where: str, note: str | None = None) -> None:
        if note is None:
            self.lines.append(f"mapped: {what} -> {where}")
        else:
            self.lines.append(f"approximated: {what} -> {where}: {note}")

    def skipped(self, what: str, why: str) -> None:
        self.lines.append(f"not mapped: {what}: {why}")


def _text(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
        .strip()
        .removesuffix("\n...")
    )


def import_sweep(sweep: Path, params_path: Path) -> list[str]:
    """Write what ``sweep`` says into params.yaml (comments and other sections kept).

    Returns:
        One line per part of the file: mapped, approximated or not mapped.

    Raises:
        HpopipeError: naming the sweep file and the part of it, or params.yaml and its key.
    """
    current = load_params(params_path)
    imported = import_document(read_yaml(sweep), sweep, current.hpo)
    for key in ("sampler", "pruner"):  # options the file does not set stay as params.yaml had them
        mine = getattr(current.hpo, key)
        if key in imported.hpo and imported.hpo[key]["name"] == mine.name:
            imported.hpo[key] = {**mine.model_dump(mode="json", exclude_defaults=True), **imported.hpo[key]}
    write_sections(
        params_path, imported.search_space, imported.hpo, drop_hpo=imported.drop_hpo, source=str(sweep)
    )
    return imported.lines


def detect(doc: Any, path: Path) -> str:
    """``wandb`` or ``azureml``, from the keys only each one has."""
    if isinstance(doc, dict) and (doc.get("type") == "sweep" or {"search_space", "objective"} <= set(doc)):
        return "azureml"
    if isinstance(doc, dict) and ("parameters" in doc or "method" in doc):
        return "wandb"
    raise HpopipeError(
        f"{path}: neither a W&B sweep config (method, parameters) nor an AzureML sweep job "
        "(type: sweep, search_space, objective)"
    )


def import_document(doc: Any, path: Path, current_hpo: HpoConfig) -> Imported:
    """Map a parsed sweep file.

    Args:
        doc: the file's YAML, parsed.
        path: the file, named by every error.
        current_hpo: params.yaml's ``hpo`` values, for the lines that say what stays.

    Raises:
        HpopipeError: ``<file>: <part>: <problem>`` for anything that cannot be read.
    """
    fmt = detect(doc, path)
    imported = Imported(fmt)
    if fmt == "wandb":
        _wandb(doc, path, imported, current_hpo)
    else:
        _azureml(doc, path, imported, current_hpo)
    return imported


def _fail(path: Path, where: str, problem: str) -> HpopipeError:
    return HpopipeError(f"{path}: {where}: {problem}")


def _mapping(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise _fail(path, key, f"must be a mapping, got {_text(value)}")
    return value


def _count(value: Any, where: str, path: Path, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, where, f"must be a whole number ≥ {minimum}, got {_text(value)}")
    return value


# --- parameters --------------------------------------------------------------------------------


def _parameter(imported: Imported, path: Path, label: str, name: str, spec: Any, dist: str) -> None:
    if not isinstance(spec, dict):
        raise _fail(path, label, f"must be a mapping, got {_text(spec)}")
    try:
        check_name(name)
        result = convert(spec)
    except (ValueError, TypeError) as err:
        raise _fail(path, label, str(err)) from None
    values = result.spec.get("values", [])
    if not isinstance(values, list) or not all(isinstance(v, bool | int | float | str) for v in values):
        raise _fail(path, label, f"values must be a list of numbers or strings, got {_text(values)}")
    imported.search_space[name] = result.spec
    imported.mapped(f"{label} ({dist})", f"search_space.{name} {_text(result.spec)}", result.note)


def _wandb_dist(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "?"
    if "distribution" in spec:
        return str(spec["distribution"])
    return "categorical" if "values" in spec else "constant" if "value" in spec else "range"


# --- W&B ---------------------------------------------------------------------------------------

# Parts of a W&B sweep config that describe where and how W&B runs it, not what it searches.
_WANDB_ELSEWHERE = {
    "program": "hpopipe trains with its own loop (params.yaml model and train sections)",
    "command": "hpopipe trains with its own loop (params.yaml model and train sections)",
    "job": "a W&B Launch job: hpopipe runs trials itself",
    "image_uri": "a W&B Launch image: hpopipe runs trials itself",
    "name": "the study name follows from the configuration (hpopipe studies)",
    "description": "no description in params.yaml",
    "project": "a W&B project; MLflow records hpopipe's runs",
    "entity": "a W&B entity; MLflow records hpopipe's runs",
    "controller": "hpopipe's sweep is its own controller",
    "apiVersion": "W&B metadata",
    "kind": "W&B metadata",
    "scheduler": "a custom W&B scheduler has no hpopipe counterpart",
    "metrics": "multi-objective W&B sweeps need a custom scheduler: set hpo.metrics by hand",
}
_WANDB_KEYS = frozenset({"method", "metric", "parameters", "early_terminate", "run_cap", *_WANDB_ELSEWHERE})


def _wandb(doc: dict[str, Any], path: Path, imported: Imported, current: HpoConfig) -> None:
    unknown = sorted(set(doc) - _WANDB_KEYS)
    if unknown:
        raise _fail(path, unknown[0], "not a key of a W&B sweep config")
    parameters = _mapping(doc, "parameters", path)
    if not parameters:
        raise _fail(path, "parameters", "a W&B sweep needs at least one parameter")
    try:
        flat = flatten(parameters)
    except ValueError as err:
        raise _fail(path, "parameters", str(err)) from None
    for name, spec in flat.items():
        _parameter(imported, path, f"parameters.{name}", name, spec, _wandb_dist(spec))
    _wandb_method(doc.get("method"), path, imported)
    _metric(imported, path, _mapping(doc, "metric", path), "metric", current)
    _wandb_early_terminate(doc.get("early_terminate"), path, imported)
    if "run_cap" in doc:
        imported.hpo["n_trials"] = _count(doc["run_cap"], "run_cap", path)
        imported.mapped(f"run_cap {doc['run_cap']}", f"hpo.n_trials {doc['run_cap']}")
    else:
        imported.skipped("run_cap (absent)", f"hpo.n_trials stays {current.n_trials}")
    for key in sorted(set(doc) & set(_WANDB_ELSEWHERE)):
        imported.skipped(key, _WANDB_ELSEWHERE[key])


def _wandb_method(method: Any, path: Path, imported: Imported) -> None:
    if method in ("grid", "random"):
        imported.hpo["sampler"] = {"name": method}
        imported.mapped(f"method {method}", f"hpo.sampler {{name: {method}}}")
    elif method == "bayes":
        imported.hpo["sampler"] = {"name": "tpe"}
        imported.mapped("method bayes", "hpo.sampler {name: tpe}", _BAYES)
    elif method == "custom":
        imported.skipped(
            "method custom", "a custom W&B scheduler has no hpopipe counterpart; hpo.sampler stays"
        )
    else:
        raise _fail(path, "method", f"must be grid, random or bayes, got {_text(method)}")


_BAYES = "a Gaussian-process search in W&B; TPE is hpopipe's model-based default (gp is the closer relative)"


def _wandb_early_terminate(early: Any, path: Path, imported: Imported) -> None:
    if early is None:
        imported.hpo["pruner"] = {"name": "none"}
        imported.mapped("early_terminate (absent)", "hpo.pruner {name: none}")
        return
    if not isinstance(early, dict) or early.get("type") != "hyperband":
        raise _fail(path, "early_terminate", f"W&B's only type is hyperband, got {_text(early)}")
    unknown = sorted(set(early) - {"type", "min_iter", "max_iter", "s", "eta", "strict"})
    if unknown:
        raise _fail(path, f"early_terminate.{unknown[0]}", "not a key of W&B's hyperband")
    eta = early.get("eta", 3)
    if isinstance(eta, bool) or not isinstance(eta, int | float) or eta <= 1:
        raise _fail(path, "early_terminate.eta", f"must be a number > 1, got {_text(eta)}")
    factor = max(2, round(eta))
    if "min_iter" in early:
        first = _count(early["min_iter"], "early_terminate.min_iter", path)
    elif "max_iter" in early and "s" in early:
        first = _first_band(early, eta, path)
    else:
        raise _fail(path, "early_terminate", "hyperband needs min_iter, or max_iter and s")
    pruner = {"name": "successive_halving", "min_resource": first, "reduction_factor": factor}
    imported.hpo["pruner"] = pruner
    note = _HYPERBAND + ("" if factor == eta else f"; eta {eta} rounded to {factor}")
    imported.mapped(f"early_terminate {_text(early)}", f"hpo.pruner {_text(pruner)}", note)
    if "strict" in early:
        imported.skipped("early_terminate.strict", "Optuna's successive halving has one rule")


_HYPERBAND = (
    "W&B's hyperband is one bracket, stopping runs outside the best 1/eta at min_iter * eta^k epochs: "
    "successive halving at the same rungs (Optuna's hyperband would add brackets)"
)


def _first_band(early: dict[str, Any], eta: float, path: Path) -> int:
    # W&B's bands for max_iter and s: int(max_iter / eta**i) for i = 1..s, those ≥ 1.
    max_iter = _count(early["max_iter"], "early_terminate.max_iter", path)
    s = _count(early["s"], "early_terminate.s", path)
    bands = [int(max_iter / eta**i) for i in range(1, s + 1) if max_iter / eta**i >= 1]
    if not bands:
        raise _fail(path, "early_terminate", f"max_iter {max_iter} / eta^1 is below 1: no band")
    return min(bands)


def _metric(imported: Imported, path: Path, metric: dict[str, Any], label: str, current: HpoConfig) -> None:
    name = metric.get("name", metric.get("primary_metric"))
    goal = metric.get("goal", "minimize")
    if name is None:
        imported.skipped(f"{label} (absent)", f"hpo.metric stays {current.metric}")
        return
    if goal not in ("maximize", "minimize"):
        raise _fail(path, f"{label}.goal", f"must be maximize or minimize, got {_text(goal)}")
    if name not in METRIC_NAMES:
        imported.skipped(
            f"{label} {name}",
            f"not a metric hpopipe knows ({', '.join(METRIC_NAMES)}); hpo.metric stays {current.metric}",
        )
        return
    imported.hpo["metric"] = name
    if current.metrics is not None:
        imported.drop_hpo.append("metrics")
    direction = objective_direction(name)
    note = (
        None if goal == direction else f"goal {goal} dropped: hpopipe {direction.removesuffix('e')}es {name}"
    )
    imported.mapped(f"{label} {name} ({goal})", f"hpo.metric {name}", note)
    if current.metrics is not None:
        imported.lines.append("dropped: hpo.metrics (the sweep has one objective)")
    for key in sorted(set(metric) - {"name", "primary_metric", "goal"}):
        imported.skipped(f"{label}.{key}", "no hpopipe counterpart")


# --- AzureML -----------------------------------------------------------------------------------

# AzureML parameter type -> (W&B twin, {AzureML key: W&B key}); `randint` is handled apart.
_AZUREML_TYPES: dict[str, tuple[str, dict[str, str]]] = {
    "choice": ("categorical", {"values": "values"}),
    "uniform": ("uniform", {"min_value": "min", "max_value": "max"}),
    "quniform": ("q_uniform", {"min_value": "min", "max_value": "max", "q": "q"}),
    "loguniform": ("log_uniform", {"min_value": "min", "max_value": "max"}),  # natural-log exponents
    "qloguniform": ("q_log_uniform", {"min_value": "min", "max_value": "max", "q": "q"}),
    "normal": ("normal", {"mu": "mu", "sigma": "sigma"}),
    "qnormal": ("q_normal", {"mu": "mu", "sigma": "sigma", "q": "q"}),
    "lognormal": ("log_normal", {"mu": "mu", "sigma": "sigma"}),
    "qlognormal": ("q_log_normal", {"mu": "mu", "sigma": "sigma", "q": "q"}),
}
_AZUREML_ELSEWHERE = {
    "trial": "hpopipe trains with its own loop (params.yaml model and train sections)",
    "compute": "hpopipe runs where it is started (hpo.n_workers, hpo.backend)",
    "inputs": "params.yaml data section says what hpopipe trains on",
    "outputs": "hpopipe's outputs are the pipeline's (README: where things land)",
    **dict.fromkeys(
        ("name", "display_name", "experiment_name", "description", "tags", "properties"),
        "AzureML job metadata (hpopipe names a study after its configuration)",
    ),
}
_AZUREML_STRUCTURE = frozenset({"$schema", "type"})  # what makes it a sweep job, not a setting


def _azureml_param(spec: Any, label: str, path: Path) -> tuple[dict[str, Any], str]:
    if not isinstance(spec, dict):
        raise _fail(path, label, f"must be a mapping, got {_text(spec)}")
    kind = spec.get("type")
    if kind == "randint":
        if set(spec) != {"type", "upper"}:
            raise _fail(path, label, "randint takes upper")
        upper = _count(spec["upper"], f"{label}.upper", path)
        return {"distribution": "int_uniform", "min": 0, "max": upper - 1}, "randint"
    if kind not in _AZUREML_TYPES:
        raise _fail(
            path, label, f"unknown type {kind!r} (AzureML's are randint, {', '.join(_AZUREML_TYPES)})"
        )
    twin, keys = _AZUREML_TYPES[kind]
    unknown = sorted(set(spec) - set(keys) - {"type"})
    if unknown:
        raise _fail(path, label, f"{kind} takes {', '.join(keys)}, not {', '.join(unknown)}")
    return {"distribution": twin, **{keys[k]: v for k, v in spec.items() if k != "type"}}, str(kind)


def _azureml(doc: dict[str, Any], path: Path, imported: Imported, current: HpoConfig) -> None:
    space = _mapping(doc, "search_space", path)
    if not space:
        raise _fail(path, "search_space", "an AzureML sweep job needs at least one parameter")
    for name, spec in space.items():
        label = f"search_space.{name}"
        twin, kind = _azureml_param(spec, label, path)
        _parameter(imported, path, label, str(name), twin, kind)
    _azureml_sampling(doc.get("sampling_algorithm", "random"), path, imported)
    _metric(imported, path, _mapping(doc, "objective", path), "objective", current)
    _azureml_early_termination(doc.get("early_termination"), path, imported)
    _azureml_limits(_mapping(doc, "limits", path), path, imported, current)
    for key in sorted(
        set(doc) - {"search_space", "sampling_algorithm", "objective", "early_termination", "limits"}
    ):
        if key not in _AZUREML_STRUCTURE:
            imported.skipped(key, _AZUREML_ELSEWHERE.get(key, "no hpopipe counterpart"))


def _azureml_sampling(sampling: Any, path: Path, imported: Imported) -> None:
    spec = {"type": sampling} if isinstance(sampling, str) else sampling
    if not isinstance(spec, dict) or spec.get("type") not in ("random", "grid", "bayesian"):
        raise _fail(path, "sampling_algorithm", f"must be random, grid or bayesian, got {_text(sampling)}")
    kind = spec["type"]
    if kind == "bayesian":
        imported.hpo["sampler"] = {"name": "tpe"}
        imported.mapped(
            "sampling_algorithm bayesian", "hpo.sampler {name: tpe}", _BAYES.replace("W&B", "AzureML")
        )
    elif kind == "random" and spec.get("rule") == "sobol":
        imported.hpo["sampler"] = {"name": "qmc", "qmc_type": "sobol"}
        imported.mapped("sampling_algorithm random (rule sobol)", "hpo.sampler {name: qmc, qmc_type: sobol}")
    else:
        imported.hpo["sampler"] = {"name": kind}
        imported.mapped(f"sampling_algorithm {kind}", f"hpo.sampler {{name: {kind}}}")
    for key in sorted(set(spec) - {"type", "rule"}):
        why = (
            "hpopipe seeds every sampler from params.yaml's seed"
            if key == "seed"
            else "no hpopipe counterpart"
        )
        imported.skipped(f"sampling_algorithm.{key}", why)


_POLICY_KEYS = {
    "bandit": {"slack_factor", "slack_amount"},
    "median_stopping": set(),
    "truncation_selection": {"truncation_percentage", "exclude_finished_jobs"},
}


def _azureml_early_termination(policy: Any, path: Path, imported: Imported) -> None:
    if policy is None:
        imported.hpo["pruner"] = {"name": "none"}
        imported.mapped("early_termination (absent)", "hpo.pruner {name: none}")
        return
    kind = policy.get("type") if isinstance(policy, dict) else None
    if kind not in _POLICY_KEYS:
        raise _fail(
            path,
            "early_termination",
            f"type must be bandit, median_stopping or truncation_selection, got {_text(kind)}",
        )
    unknown = sorted(set(policy) - _POLICY_KEYS[kind] - {"type", "evaluation_interval", "delay_evaluation"})
    if unknown:
        raise _fail(path, f"early_termination.{unknown[0]}", f"not a key of AzureML's {kind} policy")
    timing = {
        "n_warmup_steps": _count(
            policy.get("delay_evaluation") or 0, "early_termination.delay_evaluation", path, 0
        ),
        "interval_steps": max(
            1,
            _count(policy.get("evaluation_interval") or 1, "early_termination.evaluation_interval", path, 0),
        ),
    }
    if kind == "truncation_selection":
        percentage = policy.get("truncation_percentage")
        if (
            isinstance(percentage, bool)
            or not isinstance(percentage, int | float)
            or not 0 < percentage < 100
        ):
            raise _fail(
                path,
                "early_termination.truncation_percentage",
                f"must be between 0 and 100, got {_text(percentage)}",
            )
        pruner = {"name": "percentile", "percentile": float(percentage), **timing}
        note = "Optuna's percentile rule prunes the same worst share at the same steps"
    else:
        pruner = {"name": "median", **timing}
        note = _MEDIAN if kind == "median_stopping" else _BANDIT
    imported.hpo["pruner"] = pruner
    imported.mapped(f"early_termination {_text(policy)}", f"hpo.pruner {_text(pruner)}", note)
    if policy.get("exclude_finished_jobs"):
        imported.skipped(
            "early_termination.exclude_finished_jobs",
            "Optuna compares with every trial that reached the step",
        )


_MEDIAN = "AzureML compares running averages, Optuna's median rule the values at the same step"
_BANDIT = (
    "slack dropped: no built-in Optuna pruner compares with the best trial, "
    "so trials below the median at the same step are stopped instead"
)


def _azureml_limits(limits: dict[str, Any], path: Path, imported: Imported, current: HpoConfig) -> None:
    if "max_total_trials" in limits:
        n = _count(limits["max_total_trials"], "limits.max_total_trials", path)
        imported.hpo["n_trials"] = n
        imported.mapped(f"limits.max_total_trials {n}", f"hpo.n_trials {n}")
    else:
        imported.skipped("limits.max_total_trials (absent)", f"hpo.n_trials stays {current.n_trials}")
    if "timeout" in limits:
        timeout = limits["timeout"]
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise _fail(path, "limits.timeout", f"must be a number of seconds > 0, got {_text(timeout)}")
        imported.hpo["timeout"] = timeout
        imported.mapped(f"limits.timeout {timeout}", f"hpo.timeout {timeout}")
    if "max_concurrent_trials" in limits:
        imported.skipped(
            "limits.max_concurrent_trials",
            "hpo.n_workers needs a storage several workers share (docs/distributed.md): set both by hand",
        )
    for key in sorted(set(limits) - {"max_total_trials", "timeout", "max_concurrent_trials"}):
        imported.skipped(f"limits.{key}", "no hpopipe counterpart")
