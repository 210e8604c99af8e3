"""The values a trial of a multi-objective sweep returns: validation metrics and the model's size.

The first objective is the score training already computed (early stopping
chose the epoch by it); the others are scored on the same rows with the
restored best weights, and ``n_params`` is counted on the model itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from hpopipe import metrics
from hpopipe.config import MODEL_SIZE, Params, check_metric_fits_task
from hpopipe.errors import HpopipeError
from hpopipe.sweep.pareto import is_multi_objective
from hpopipe.training.loop import Task, as_tensor, predict


def check_objectives_fit(params: Params, task: Task) -> None:
    """Refuse a secondary metric the prepared task cannot compute (``data.task: auto`` decides late)."""
    for name in params.hpo.objectives[1:]:
        if name == MODEL_SIZE:
            continue
        try:
            check_metric_fits_task(name, task.kind, key="hpo.metrics:")
        except ValueError as err:
            raise HpopipeError(f"{err} (data.task {task.kind!r} comes from the prepared data)") from None


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters: what ``n_params`` minimises."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def objective_values(
    names: Sequence[str],
    task: Task,
    model: nn.Module,
    rows: tuple[np.ndarray, np.ndarray],
    y_scale: tuple[float, float],
) -> dict[str, float]:
    """Each named objective of a trained model on ``rows`` (a metric) or of the model (n_params)."""
    out: dict[str, float] = {}
    output: np.ndarray | None = None
    for name in names:
        if name == MODEL_SIZE:
            out[name] = float(count_parameters(model))
            continue
        if output is None:  # predicted once, whatever the number of metrics
            device = next(model.parameters()).device
            output = predict(model, as_tensor(rows[0], device), task, y_scale)
        out[name] = metrics.score(name, rows[1], output, task.n_classes)
    return out


def trial_values(
    params: Params,
    task: Task,
    model: nn.Module,
    val: tuple[np.ndarray, np.ndarray],
    y_scale: tuple[float, float],
    first: float,
) -> float | tuple[float, ...]:
    """What the objective returns: ``first`` alone, or it and the other objectives' values."""
    if not is_multi_objective(params):
        return first
    rest = objective_values(params.hpo.objectives[1:], task, model, val, y_scale)
    return (first, *rest.values())


def interrupted_values(params: Params) -> float | tuple[float, ...]:
    """NaN per objective: Optuna records it as FAIL without a traceback (a clean stop)."""
    nan = float("nan")
    return tuple(nan for _ in params.hpo.objectives) if is_multi_objective(params) else nan
