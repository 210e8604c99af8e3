"""The metric catalogue end to end: every entry is checked here without naming it.

A new entry in :data:`hpopipe.metrics.CATALOGUE` is accepted by config for its
task and refused for the other, scores in its direction, computes a finite
value, and shows up in the test-split evaluation when it says so, with no edit here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hpopipe import metrics
from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.metrics import CATALOGUE, MODEL_SIZE, MetricSpec
from tests.conftest import scikit_learn_loaded_after

REPO = Path(__file__).resolve().parents[1]
SPECS = [pytest.param(spec, id=name) for name, spec in CATALOGUE.items()]
OTHER_TASK = {"classification": "regression", "regression": "classification"}

# Tiny examples: a perfect output and a poor one (every class wrong, the values reversed).
Y_BINARY = np.array([0, 1, 0, 1, 1, 0])
Y_MULTI = np.array([0, 1, 2, 0, 1, 2])
Y_REG = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


def _onehot(y: np.ndarray, n_classes: int, right: bool) -> np.ndarray:
    target = y if right else (y + 1) % n_classes
    return np.where(np.eye(n_classes)[target] == 1, 0.9, 0.1 / (n_classes - 1))


def examples(spec: MetricSpec) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(n_classes, y_true, perfect output, poor output) for the metric's task."""
    if spec.task == "regression":
        return [(0, Y_REG, Y_REG.copy(), Y_REG[::-1].copy())]
    return [(n, y, _onehot(y, n, True), _onehot(y, n, False)) for n, y in ((2, Y_BINARY), (3, Y_MULTI))]


def _raw(task: str, metric: str) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["data"]["task"] = task
    raw["hpo"]["metric"] = metric
    return raw


@pytest.mark.parametrize("spec", SPECS)
def test_config_accepts_a_metric_for_its_task(spec: MetricSpec) -> None:
    for task in (spec.task, "auto"):
        hpo = parse_params(_raw(task, spec.name)).hpo
        assert hpo.metric == spec.name
        assert hpo.direction == spec.direction == ("maximize" if spec.maximize else "minimize")


@pytest.mark.parametrize("spec", SPECS)
def test_config_refuses_a_metric_for_the_other_task(spec: MetricSpec) -> None:
    other = OTHER_TASK[spec.task]
    with pytest.raises(HpopipeError) as info:
        parse_params(_raw(other, spec.name))
    assert str(info.value) == (
        f"params.yaml: hpo.metric: {spec.name!r} is for {spec.task}, but data.task is {other}"
    )


@pytest.mark.parametrize("spec", SPECS)
def test_a_metric_computes_a_finite_value_and_prefers_the_perfect_output(spec: MetricSpec) -> None:
    for n_classes, y, perfect, poor in examples(spec):
        good, bad = (
            metrics.score(spec.name, y, perfect, n_classes),
            metrics.score(spec.name, y, poor, n_classes),
        )
        assert math.isfinite(good) and math.isfinite(bad), (n_classes, good, bad)
        assert metrics.is_better(spec.name, good, bad), f"{spec.name} ({spec.direction}): {good} vs {bad}"
        assert not metrics.is_better(spec.name, bad, good)


@pytest.mark.parametrize("spec", SPECS)
def test_a_metric_is_in_the_test_split_evaluation_when_it_says_so(spec: MetricSpec) -> None:
    for n_classes, y, perfect, _ in examples(spec):
        reported = metrics.evaluation_metrics(spec.task, y, perfect, n_classes)
        assert (spec.name in reported) == spec.on_test(n_classes)
        if spec.name in reported:
            assert reported[spec.name] == metrics.score(spec.name, y, perfect, n_classes)
    other_task = OTHER_TASK[spec.task]
    other = next(s for s in CATALOGUE.values() if s.task == other_task)
    for n_classes, y, perfect, _ in examples(other):
        assert spec.name not in metrics.evaluation_metrics(other_task, y, perfect, n_classes)


def test_test_json_keys_keep_their_order() -> None:
    """metrics/test.json is compared byte for byte between runs: its keys come in catalogue order."""
    binary = metrics.evaluation_metrics("classification", Y_BINARY, _onehot(Y_BINARY, 2, True), 2)
    multi = metrics.evaluation_metrics("classification", Y_MULTI, _onehot(Y_MULTI, 3, True), 3)
    regression = metrics.evaluation_metrics("regression", Y_REG, Y_REG, 0)
    assert list(binary) == ["accuracy", "macro_f1", "log_loss", "roc_auc"]
    assert list(multi) == ["accuracy", "macro_f1", "log_loss"]
    assert list(regression) == ["rmse", "mae", "r2"]


def test_model_size_is_a_minimised_objective_but_not_a_metric() -> None:
    assert metrics.objective_direction(MODEL_SIZE) == "minimize"
    assert MODEL_SIZE not in CATALOGUE and MODEL_SIZE in metrics.OBJECTIVE_NAMES
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        metrics.objective_direction("f1")


def test_reading_params_yaml_does_not_import_scikit_learn() -> None:
    # The catalogue imports scikit-learn (and with it scipy) only to compute a score.
    assert (
        scikit_learn_loaded_after("from hpopipe.config import load_params; load_params('params.yaml')") == []
    )


# The per-epoch metrics are numpy, not scikit-learn (speed); scikit-learn stays the reference.
FAST_METRICS = ("accuracy", "macro_f1", "rmse", "mae")


def _sklearn_reference(name: str, y: np.ndarray, out: np.ndarray, n_classes: int) -> float:
    from sklearn import metrics as sk

    if name == "accuracy":
        return float(sk.accuracy_score(y, out.argmax(axis=1)))
    if name == "macro_f1":
        labels = list(range(n_classes))
        return float(sk.f1_score(y, out.argmax(axis=1), average="macro", labels=labels, zero_division=0))
    if name == "rmse":
        return math.sqrt(sk.mean_squared_error(y, out))
    return float(sk.mean_absolute_error(y, out))


@pytest.mark.parametrize("name", FAST_METRICS)
@pytest.mark.parametrize("n_classes", [2, 3, 7])
@pytest.mark.parametrize("seed", range(4))
def test_the_numpy_metrics_equal_scikit_learns(name: str, n_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(1, 60))
    if CATALOGUE[name].task == "classification":
        # Few rows and many classes: some classes are never true, never predicted, or neither.
        y = rng.integers(0, n_classes, rows)
        out = rng.dirichlet(np.ones(n_classes), rows)
    else:
        y = rng.normal(1000.0, 300.0, rows).astype(np.float32 if seed % 2 else np.float64)
        out = rng.normal(1000.0, 300.0, rows)
    expected = _sklearn_reference(name, y, out, n_classes)
    assert metrics.score(name, y, out, n_classes) == pytest.approx(expected, rel=1e-12, abs=1e-12)
