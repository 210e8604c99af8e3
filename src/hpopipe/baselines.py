"""The yardstick of every run: default scikit-learn models scored beside the network.

The refit stage fits a HistGradientBoosting model (scikit-learn's defaults, the run's seed) and a
dummy model (class priors, or the training mean) on the rows the network was refit on, and scores
them on the same untouched test split with the same metrics (``metrics/test.json``, under
``baselines``). They see the same encoded features as the network, not the raw table with
HistGradientBoosting's native categorical support: the split and the transform then exist once
(prepare's), the comparison is of learners on equal inputs, trees are indifferent to the
standardisation, and the missing-value indicator columns carry what native NaN handling would see.
One-hot columns can cost the trees a little on high-cardinality columns; the figures in the docs say
how little on the shipped tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpopipe import metrics

KEY = "baselines"  # where metrics/test.json holds them
GRADIENT_BOOSTING = "hist_gradient_boosting"
DUMMY = "dummy"


def fit_baselines(
    kind: str,
    n_classes: int,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Test-split metrics of each baseline, by name, in the network's metric order."""
    scores = {}
    for name, model in _models(kind, seed).items():
        model.fit(train[0], train[1])
        output = _output(model, test[0], kind, n_classes)
        scores[name] = metrics.evaluation_metrics(kind, test[1], output, n_classes)
    return scores


def _models(kind: str, seed: int) -> dict[str, Any]:
    from sklearn.dummy import DummyClassifier, DummyRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if kind == "classification":
        return {
            GRADIENT_BOOSTING: HistGradientBoostingClassifier(random_state=seed),
            DUMMY: DummyClassifier(),
        }
    return {GRADIENT_BOOSTING: HistGradientBoostingRegressor(random_state=seed), DUMMY: DummyRegressor()}


def _output(model: Any, x: np.ndarray, kind: str, n_classes: int) -> np.ndarray:
    """What the metric catalogue scores: probabilities over every class, or values."""
    if kind == "regression":
        return np.asarray(model.predict(x), dtype=float)
    # Columns follow the classes seen in training; place them among all the schema's classes.
    proba = np.zeros((len(x), n_classes))
    proba[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(x)
    return proba


@dataclass(frozen=True)
class Verdict:
    """The network against the gradient-boosting baseline on one metric."""

    metric: str
    network: float
    baseline: float

    @property
    def beats(self) -> bool:
        """Strictly better in the metric's direction (a tie does not beat it)."""
        return metrics.is_better(self.metric, self.network, self.baseline)

    @property
    def margin(self) -> float:
        """How far the network is ahead (positive) or behind (negative), in the metric's units."""
        ahead = self.network - self.baseline
        return ahead if metrics.objective_direction(self.metric) == "maximize" else -ahead

    def sentence(self) -> str:
        """One sentence for the report and the gate."""
        values = f"{self.metric} {self.network:.4g} against {self.baseline:.4g}"
        if self.beats:
            return f"The network beats the gradient-boosting baseline by {self.margin:.3g} ({values})."
        if self.margin == 0:
            return f"The network ties with the gradient-boosting baseline ({values})."
        return f"The network trails the gradient-boosting baseline by {-self.margin:.3g} ({values})."


def verdict(test_metrics: Mapping[str, Any], metric: str) -> Verdict | None:
    """The comparison ``metrics/test.json`` holds for ``metric``; None when it has no baseline for it."""
    baseline = (test_metrics.get(KEY) or {}).get(GRADIENT_BOOSTING, {}).get(metric)
    network = test_metrics.get(metric)
    if not isinstance(baseline, int | float) or not isinstance(network, int | float):
        return None
    return Verdict(metric, float(network), float(baseline))
