"""The metric catalogue: the one place that says what each metric is, and the scoring built on it.

An entry names the metric, its task, its direction and how to compute it, and
says when it is reported on the untouched test split. Config validates names
against it, the sweep, CV, the refit, the retrain gate and the report read the
direction from it; adding a metric is one entry here (plus its test).

This module imports nothing of hpopipe (config imports it), and scikit-learn
and numpy only inside the compute functions: loading params.yaml stays light.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np

Task = Literal["classification", "regression"]
Direction = Literal["maximize", "minimize"]
# The model's trainable parameter count: an extra objective of a multi-objective sweep, minimised.
MODEL_SIZE = "n_params"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: everything hpopipe knows about it."""

    name: str
    task: Task
    maximize: bool  # higher is better
    # (y_true, output, n_classes) -> score; output is class probabilities or predicted values.
    compute: Callable[[np.ndarray, np.ndarray, int], float]
    # Reported in metrics/test.json for a task with this many classes (0 for regression)?
    on_test: Callable[[int], bool] = lambda n_classes: True
    # The best score the metric can take (perfect predictions), None if it has no finite one:
    # the cv stage stops a candidate whose remaining folds, all at this score, could not win.
    best: float | None = None

    @property
    def direction(self) -> Direction:
        return "maximize" if self.maximize else "minimize"


def _proba(output: np.ndarray) -> np.ndarray:
    # Clip so log_loss stays finite for overconfident models, then renormalise rows.
    import numpy as np

    clipped = np.clip(output, 1e-7, 1.0)
    return clipped / clipped.sum(axis=1, keepdims=True)


def _accuracy(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    # numpy, not scikit-learn: it is scored after every epoch of every trial (sklearn's checks
    # cost ~1 ms a call); tests/test_metrics.py holds it equal to sklearn.metrics.accuracy_score.
    import numpy as np

    return float(np.mean(np.asarray(y_true) == output.argmax(axis=1)))


def _macro_f1(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    # F1 of each class, 2 tp / (2 tp + fp + fn), 0 for a class neither true nor predicted, then
    # their unweighted mean: sklearn's f1_score(average="macro", labels=range(n), zero_division=0).
    import numpy as np

    truth = np.asarray(y_true).astype(np.int64, copy=False)
    pred = output.argmax(axis=1)
    n = max(n_classes, int(truth.max(initial=-1)) + 1, int(pred.max(initial=-1)) + 1)
    tp = np.bincount(truth[truth == pred], minlength=n).astype(np.float64)
    denom = np.bincount(truth, minlength=n) + np.bincount(pred, minlength=n).astype(np.float64)
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(n), where=denom > 0)
    return float(np.mean(f1[:n_classes] if n_classes else f1))


def _log_loss(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y_true, _proba(output), labels=list(range(n_classes))))


def _roc_auc(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y_true)) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y_true, output[:, 1]))
    return float(roc_auc_score(y_true, _proba(output), multi_class="ovr", labels=list(range(n_classes))))


def _rmse(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    import numpy as np  # numpy, as for _accuracy: equal to sklearn's mean_squared_error, square-rooted

    errors = np.asarray(y_true, dtype=np.float64) - np.asarray(output, dtype=np.float64)
    return float(math.sqrt(np.mean(errors * errors)))


def _mae(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    import numpy as np  # numpy, as for _accuracy: equal to sklearn's mean_absolute_error

    return float(np.mean(np.abs(np.asarray(output, dtype=np.float64) - np.asarray(y_true, dtype=np.float64))))


def _r2(y_true: np.ndarray, output: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y_true, output))


# The order is the order of metrics/test.json's keys.
CATALOGUE: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        # Accuracy, F1 and ROC AUC are at most 1, R^2 = 1 - SS_res/SS_tot too; the losses are at least 0.
        MetricSpec("accuracy", "classification", True, _accuracy, best=1.0),
        MetricSpec("macro_f1", "classification", True, _macro_f1, best=1.0),
        MetricSpec("log_loss", "classification", False, _log_loss, best=0.0),
        # One-vs-rest AUC of several classes is a fine objective, but the test report keeps the binary one.
        MetricSpec(
            "roc_auc", "classification", True, _roc_auc, on_test=lambda n_classes: n_classes == 2, best=1.0
        ),
        MetricSpec("rmse", "regression", False, _rmse, best=0.0),
        MetricSpec("mae", "regression", False, _mae, best=0.0),
        MetricSpec("r2", "regression", True, _r2, best=1.0),
    )
}
METRIC_NAMES = tuple(CATALOGUE)
# Everything a sweep can optimise: a metric, or (a second objective) the model's size.
OBJECTIVE_NAMES = (*METRIC_NAMES, MODEL_SIZE)
CLASSIFICATION_METRICS = tuple(n for n, s in CATALOGUE.items() if s.task == "classification")
REGRESSION_METRICS = tuple(n for n, s in CATALOGUE.items() if s.task == "regression")
MAXIMIZED_METRICS = frozenset(n for n, s in CATALOGUE.items() if s.maximize)
# ``hpo.metric: auto`` (the default) follows the task: what these tables are usually judged by.
AUTO = "auto"
DEFAULT_METRICS: dict[Task, str] = {"classification": "macro_f1", "regression": "rmse"}


def resolve_metric(metric: str, task: str) -> str:
    """``metric`` itself, or for ``auto`` the task's default (:data:`DEFAULT_METRICS`)."""
    if metric != AUTO:
        return metric
    if task not in DEFAULT_METRICS:
        raise ValueError(f"hpo.metric: 'auto' needs a known task, got {task!r}")
    return DEFAULT_METRICS[task]


def objective_direction(name: str) -> Direction:
    """The direction a metric or ``n_params`` (minimised) is optimised in."""
    if name == MODEL_SIZE:
        return "minimize"
    if name == AUTO:  # a caller skipped Params.for_task: a bug, not a user error
        raise ValueError("hpo.metric 'auto' has no direction until the task is known (Params.for_task)")
    if name not in CATALOGUE:
        raise ValueError(f"unknown metric {name!r}: one of {', '.join(OBJECTIVE_NAMES)}")
    return CATALOGUE[name].direction


def check_metric_fits_task(metric: str, task: str, key: str = "hpo.metric:") -> None:
    """Refuse a metric that cannot be computed for the task (e.g. rmse on classes); ``auto`` fits all."""
    if metric == AUTO:
        return
    spec = CATALOGUE.get(metric)
    if spec is None:
        raise ValueError(f"{key} {metric!r} is not a metric: one of {', '.join(METRIC_NAMES)}")
    if task in ("classification", "regression") and spec.task != task:
        raise ValueError(f"{key} {metric!r} is for {spec.task}, but data.task is {task}")


def score(metric: str, y_true: np.ndarray, output: np.ndarray, n_classes: int = 0) -> float:
    """Score model outputs: class probabilities (classification) or values (regression)."""
    if metric not in CATALOGUE:
        raise ValueError(f"unknown metric {metric!r}")
    return CATALOGUE[metric].compute(y_true, output, n_classes)


def evaluation_metrics(task: str, y_true: np.ndarray, output: np.ndarray, n_classes: int) -> dict[str, float]:
    """The full set reported for the untouched test split, in catalogue order."""
    return {
        name: spec.compute(y_true, output, n_classes)
        for name, spec in CATALOGUE.items()
        if spec.task == task and spec.on_test(n_classes)
    }


def is_better(metric: str, new: float, old: float, min_delta: float = 0.0) -> bool:
    """True when ``new`` beats ``old`` by more than ``min_delta`` in the metric's direction."""
    if math.isnan(old):
        return not math.isnan(new)
    if objective_direction(metric) == "maximize":
        return new > old + min_delta
    return new < old - min_delta
