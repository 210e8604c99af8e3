"""The quality gate: the new test metric against the one committed at ``HEAD``.

A retrain pushes and commits only a model that passed; a failed gate is a failed run
(:data:`EXIT_GATE_FAILED` for ``hpopipe retrain``, a failed state for the Prefect flow).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from hpopipe import artifacts, baselines
from hpopipe.config import Params, RetrainConfig
from hpopipe.errors import HpopipeError
from hpopipe.metrics import objective_direction
from hpopipe.retrain.commands import git

# The default threshold has one owner, the params.yaml model; this is its value for help texts.
DEFAULT_MAX_REGRESSION: float = RetrainConfig.model_fields["max_regression"].default
EXIT_GATE_FAILED = 1  # 2 is taken by user errors (hpopipe.entry)
TEST_METRICS = artifacts.metrics_file("test")


@dataclass(frozen=True)
class GateResult:
    """The new test metric against the committed one; ``passed`` decides push and commit."""

    metric: str
    direction: Literal["maximize", "minimize"]
    new: float
    old: float | None
    max_regression: float
    passed: bool
    reason: str


def check_max_regression(value: float) -> float:
    """A threshold is a non-negative number; checked before an hour of training, not after."""
    if not math.isfinite(value) or value < 0:
        raise HpopipeError(f"--max-regression: must be a number >= 0, got {value}")
    return value


def max_regression_for(params: Params, override: float | None) -> float:
    """The gate's threshold: the flag if given, else ``retrain.max_regression`` from params.yaml."""
    if override is not None:
        return check_max_regression(override)
    return check_max_regression(float(params.retrain.max_regression))


def gate_direction(metric: str) -> Literal["maximize", "minimize"]:
    """Which way is better for ``metric``, from the metric catalogue: macro_f1 must not drop."""
    return objective_direction(metric)


def quality_gate(
    metric: str,
    new_metrics: Mapping[str, Any],
    old_metrics: Mapping[str, Any] | None,
    max_regression: float,
    beat_baseline: bool = False,
) -> GateResult:
    """Pass unless ``metric`` got worse than ``old_metrics`` by more than ``max_regression``.

    The threshold is absolute, in the metric's units; the direction follows the metric
    (:func:`gate_direction`). Without a committed value (the first retrain) there is nothing
    to regress from, so the gate passes. With ``beat_baseline`` (``retrain.beat_baseline``)
    the network must also beat the gradient-boosting baseline of the same run, strictly.
    """
    gate = _regression_gate(metric, new_metrics, old_metrics, max_regression)
    if not beat_baseline or not gate.passed:
        return gate
    verdict = baselines.verdict(new_metrics, metric)
    if verdict is None:
        reason = f"{TEST_METRICS} has no gradient-boosting baseline for {metric} (re-run the refit stage)"
        return replace(gate, passed=False, reason=f"{gate.reason}; but {reason}")
    return replace(gate, passed=verdict.beats, reason=f"{gate.reason}; {verdict.sentence()}")


def _regression_gate(
    metric: str, new_metrics: Mapping[str, Any], old_metrics: Mapping[str, Any] | None, max_regression: float
) -> GateResult:
    check_max_regression(max_regression)
    direction = gate_direction(metric)
    new = _metric(new_metrics, metric, str(TEST_METRICS))

    def result(old: float | None, passed: bool, reason: str) -> GateResult:
        return GateResult(metric, direction, new, old, max_regression, passed, reason)

    if not math.isfinite(new):
        return result(None, False, f"new {metric} is {new}")
    if old_metrics is None or metric not in old_metrics:
        return result(None, True, f"no committed {metric} to compare with; new {metric} {new:.4f}")
    old = _metric(old_metrics, metric, f"HEAD:{TEST_METRICS}")
    regression = old - new if direction == "maximize" else new - old
    passed = regression <= max_regression
    verdict = "within" if passed else "beyond"
    return result(
        old,
        passed,
        f"{metric} {old:.4f} -> {new:.4f}: regression {max(regression, 0.0):.4f}, "
        f"{verdict} the allowed {max_regression:g}",
    )


def _metric(metrics: Mapping[str, Any], metric: str, source: str) -> float:
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HpopipeError(f"{source}: no numeric '{metric}' (the metric named by hpo.metric)")
    return float(value)


def committed_metrics(root: Path, rev: str = "HEAD") -> dict[str, Any] | None:
    """``metrics/test.json`` as committed at ``rev``; ``None`` if it was never committed."""
    proc = git(root, "show", f"{rev}:./{TEST_METRICS.as_posix()}", check=False)
    if proc.returncode != 0:
        if "not a git repository" in proc.stderr:
            raise HpopipeError(f"{root}: not a git repository (retrain compares with and commits to git)")
        return None
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise HpopipeError(f"{rev}:{TEST_METRICS}: not valid JSON") from None
    return data if isinstance(data, dict) else None
