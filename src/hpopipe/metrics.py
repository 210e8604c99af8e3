"""Scoring functions shared by the sweep, CV and the test evaluation."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

from hpopipe.config import MAXIMIZED_METRICS


def _proba(output: np.ndarray) -> np.ndarray:
    # Clip so log_loss stays finite for overconfident models, then renormalise rows.
    clipped = np.clip(output, 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def score(metric: str, y_true: np.ndarray, output: np.ndarray, n_classes: int = 0) -> float:
    """Score model outputs: class probabilities (classification) or values (regression)."""
    if metric == "rmse":
        return float(math.sqrt(skm.mean_squared_error(y_true, output)))
    if metric == "mae":
        return float(skm.mean_absolute_error(y_true, output))
    if metric == "r2":
        return float(skm.r2_score(y_true, output))
    labels = list(range(n_classes))
    pred = output.argmax(axis=1)
    if metric == "accuracy":
        return float(skm.accuracy_score(y_true, pred))
    if metric == "macro_f1":
        return float(skm.f1_score(y_true, pred, average="macro", labels=labels, zero_division=0))
    if metric == "log_loss":
        return float(skm.log_loss(y_true, _proba(output), labels=labels))
    if metric == "roc_auc":
        if len(np.unique(y_true)) < 2:
            return float("nan")
        if n_classes == 2:
            return float(skm.roc_auc_score(y_true, output[:, 1]))
        return float(skm.roc_auc_score(y_true, _proba(output), multi_class="ovr", labels=labels))
    raise ValueError(f"unknown metric {metric!r}")


def evaluation_metrics(task: str, y_true: np.ndarray, output: np.ndarray, n_classes: int) -> dict[str, float]:
    """The full set reported for the untouched test split."""
    if task == "regression":
        names = ["rmse", "mae", "r2"]
    else:
        names = ["accuracy", "macro_f1", "log_loss"] + (["roc_auc"] if n_classes == 2 else [])
    return {name: score(name, y_true, output, n_classes) for name in names}


def is_better(metric: str, new: float, old: float, min_delta: float = 0.0) -> bool:
    """True when ``new`` beats ``old`` by more than ``min_delta`` in the metric's direction."""
    if math.isnan(old):
        return not math.isnan(new)
    if metric in MAXIMIZED_METRICS:
        return new > old + min_delta
    return new < old - min_delta
