"""The search space (suggest, grid) and the scoring functions."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import optuna
import pytest
from pydantic import TypeAdapter
from sklearn import metrics as skm

from hpopipe import metrics
from hpopipe.config import MAXIMIZED_METRICS, ParamSpec
from hpopipe.space import suggest

SPACE_ADAPTER = TypeAdapter(dict[str, ParamSpec])

RAW_SPACE: dict[str, Any] = {
    "lr": {"type": "log_uniform", "min": 1e-4, "max": 3e-2},
    "dropout": {"type": "uniform", "min": 0.0, "max": 0.5, "step": 0.05},
    "momentum": {"type": "uniform", "min": 0.8, "max": 0.99},
    "n_layers": {"type": "int_uniform", "min": 1, "max": 3},
    "units": {"type": "int_uniform", "min": 8, "max": 40, "step": 8},
    "batch": {"type": "int_uniform", "min": 16, "max": 512, "log": True},
    "activation": {"type": "choice", "values": ["relu", "gelu", "tanh"]},
    "width": {"type": "choice", "values": [32, 64, 128]},
    "flag": {"type": "choice", "values": [True, False]},
}


def make_space(raw: dict[str, Any]) -> dict[str, Any]:
    return SPACE_ADAPTER.validate_python(raw)


def assert_in_space(params: dict[str, Any], raw: dict[str, Any]) -> None:
    assert set(params) == set(raw)
    for name, spec in raw.items():
        value = params[name]
        if spec["type"] == "choice":
            assert value in spec["values"]
            assert type(value) is type(spec["values"][spec["values"].index(value)])
            continue
        assert spec["min"] <= value <= spec["max"], (name, value)
        if spec["type"] == "int_uniform":
            assert isinstance(value, int) and not isinstance(value, bool)
            assert (value - spec["min"]) % spec.get("step", 1) == 0
        else:
            assert isinstance(value, float)
        if spec["type"] == "uniform" and spec.get("step"):
            k = (value - spec["min"]) / spec["step"]
            assert abs(k - round(k)) < 1e-9, (name, value)


# --- suggest ------------------------------------------------------------------------------------------


def test_suggest_with_fixed_trial_returns_the_fixed_values() -> None:
    fixed = {
        "lr": 1e-3,
        "dropout": 0.25,
        "momentum": 0.9,
        "n_layers": 2,
        "units": 24,
        "batch": 64,
        "activation": "gelu",
        "width": 128,
        "flag": False,
    }
    params = suggest.suggest(optuna.trial.FixedTrial(fixed), make_space(RAW_SPACE))  # type: ignore[arg-type]
    assert params == fixed
    assert list(params) == list(RAW_SPACE)


def test_suggest_with_fixed_trial_missing_a_parameter_fails() -> None:
    with pytest.raises(ValueError, match="width"):
        suggest.suggest(
            optuna.trial.FixedTrial({"lr": 1e-3}),  # type: ignore[arg-type]
            make_space({"lr": RAW_SPACE["lr"], "width": RAW_SPACE["width"]}),
        )


@pytest.mark.parametrize(
    "sampler",
    [optuna.samplers.RandomSampler(seed=0), optuna.samplers.TPESampler(seed=0, n_startup_trials=5)],
    ids=["random", "tpe"],
)
def test_suggest_in_a_real_study_stays_in_bounds(sampler: optuna.samplers.BaseSampler) -> None:
    sp = make_space(RAW_SPACE)
    seen: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest.suggest(trial, sp)
        seen.append(params)
        return params["lr"] * params["n_layers"]

    study = optuna.create_study(sampler=sampler, direction="minimize")
    study.optimize(objective, n_trials=25)
    assert len(seen) == 25
    for trial, params in zip(study.trials, seen, strict=True):
        assert_in_space(params, RAW_SPACE)
        assert trial.params == params
    # The sampler really explores: not every trial is the same point.
    assert len({p["lr"] for p in seen}) > 1
    assert len({p["activation"] for p in seen}) > 1
    # Distributions recorded by Optuna are those the space declares.
    dist = study.trials[0].distributions
    assert dist["lr"] == optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True)
    assert dist["dropout"] == optuna.distributions.FloatDistribution(0.0, 0.5, step=0.05)
    assert dist["units"] == optuna.distributions.IntDistribution(8, 40, step=8)
    assert dist["batch"] == optuna.distributions.IntDistribution(16, 512, log=True)
    assert dist["width"] == optuna.distributions.CategoricalDistribution([32, 64, 128])


def test_same_sampler_seed_same_suggestions() -> None:
    sp = make_space(RAW_SPACE)

    def run() -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7, n_startup_trials=3))
        study.optimize(lambda t: suggest.suggest(t, sp)["momentum"], n_trials=8)
        return [t.params for t in study.trials]

    assert run() == run()


# --- grid ----------------------------------------------------------------------------------------------


def test_grid_enumerates_each_kind() -> None:
    grid = suggest.grid(
        make_space(
            {
                "c": {"type": "choice", "values": ["b", "a", "c"]},
                "i": {"type": "int_uniform", "min": 1, "max": 3},
                "s": {"type": "int_uniform", "min": 8, "max": 40, "step": 8},
                "odd": {"type": "int_uniform", "min": 1, "max": 5, "step": 2},
                "f": {"type": "uniform", "min": 0.0, "max": 0.5, "step": 0.1},
                "u": {"type": "uniform", "min": 0.0, "max": 1.0},
                "lg": {"type": "log_uniform", "min": 1e-4, "max": 1e-2},
            }
        ),
        points=3,
    )
    assert grid["c"] == ["b", "a", "c"]
    assert grid["i"] == [1, 2, 3]
    assert grid["s"] == [8, 16, 24, 32, 40]
    assert grid["odd"] == [1, 3, 5]
    assert grid["f"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]  # exact: no 0.30000000000000004
    assert grid["u"] == [0.0, 0.5, 1.0]
    assert grid["lg"] == pytest.approx([1e-4, 1e-3, 1e-2], rel=1e-12)
    assert all(isinstance(v, float) for v in grid["f"] + grid["u"] + grid["lg"])


@pytest.mark.parametrize("points", [2, 5, 9])
def test_log_uniform_grid_is_geometric(points: int) -> None:
    values = suggest.grid(make_space({"lr": {"type": "log_uniform", "min": 1e-5, "max": 1e-1}}), points)["lr"]
    assert len(values) == points
    assert values[0] == pytest.approx(1e-5) and values[-1] == pytest.approx(1e-1)
    ratios = np.array(values[1:]) / np.array(values[:-1])
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)
    assert ratios[0] > 1


def test_grid_size_is_the_product() -> None:
    sp = make_space(
        {
            "c": {"type": "choice", "values": [1, 2, 3]},
            "i": {"type": "int_uniform", "min": 1, "max": 4},
            "lg": {"type": "log_uniform", "min": 1e-3, "max": 1e-1},
        }
    )
    assert suggest.grid_size(sp, points=5) == 3 * 4 * 5
    assert suggest.grid_size(sp, points=2) == 3 * 4 * 2


def test_grid_sampler_visits_every_configuration() -> None:
    sp = make_space(
        {
            "c": {"type": "choice", "values": ["x", "y"]},
            "i": {"type": "int_uniform", "min": 1, "max": 5, "step": 2},
            "f": {"type": "uniform", "min": 0.0, "max": 0.2, "step": 0.1},
            "lg": {"type": "log_uniform", "min": 1e-3, "max": 1e-1},
        }
    )
    grid = suggest.grid(sp, points=2)
    n = suggest.grid_size(sp, points=2)
    assert n == 2 * 3 * 3 * 2
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid, seed=0))
    study.optimize(lambda t: float(suggest.suggest(t, sp)["i"]), n_trials=n)
    visited = {tuple(t.params[k] for k in grid) for t in study.trials}
    assert visited == set(itertools.product(*grid.values()))


def test_grid_of_a_normal_spans_three_sigma() -> None:
    values = suggest.grid(make_space({"d": {"type": "normal", "mu": 1.0, "sigma": 0.5}}), 3)["d"]
    assert values == [-0.5, 1.0, 2.5]


def test_grid_size_counts_distinct_configurations() -> None:
    sp = make_space(
        {"u": {"type": "uniform", "min": 0.5, "max": 0.5}, "c": {"type": "choice", "values": [1, 2]}}
    )
    assert suggest.grid_size(sp, points=4) == 2


# --- metrics -----------------------------------------------------------------------------------------

Y3 = np.array([0, 1, 2, 2, 1, 0, 2, 1])
P3 = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.6, 0.3],
        [0.2, 0.2, 0.6],
        [0.1, 0.5, 0.4],  # wrong: predicts 1
        [0.3, 0.4, 0.3],
        [0.5, 0.1, 0.4],
        [0.0, 0.0, 1.0],  # a hard zero: log_loss must stay finite
        [0.4, 0.35, 0.25],  # wrong: predicts 0
    ]
)
Y2 = np.array([0, 1, 1, 0, 1, 0])
P2 = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.1, 0.9], [0.9, 0.1]])
YR = np.array([3.0, -0.5, 2.0, 7.0])
PR = np.array([2.5, 0.0, 2.0, 8.0])


def test_accuracy_and_macro_f1_match_sklearn() -> None:
    pred = P3.argmax(axis=1)
    assert metrics.score("accuracy", Y3, P3, 3) == pytest.approx(6 / 8)
    assert metrics.score("accuracy", Y3, P3, 3) == pytest.approx(skm.accuracy_score(Y3, pred))
    assert metrics.score("macro_f1", Y3, P3, 3) == pytest.approx(skm.f1_score(Y3, pred, average="macro"))


def test_macro_f1_counts_a_class_absent_from_the_batch() -> None:
    # Class 2 exists (n_classes=3) but neither occurs nor is predicted: it scores 0 and drags the mean.
    value = metrics.score("macro_f1", Y2, P2, 3)
    assert value == pytest.approx(skm.f1_score(Y2, P2.argmax(axis=1), average="macro") * 2 / 3)


def test_log_loss_matches_sklearn_and_stays_finite() -> None:
    value = metrics.score("log_loss", Y3, P3, 3)
    assert math.isfinite(value)
    assert value == pytest.approx(
        skm.log_loss(Y3, np.clip(P3, 1e-7, 1.0) / np.clip(P3, 1e-7, 1.0).sum(1, keepdims=True))
    )
    assert value == pytest.approx(skm.log_loss(Y3, P3), rel=1e-3)
    zero_on_truth = P3.copy()
    zero_on_truth[0] = [0.0, 0.5, 0.5]
    assert math.isfinite(metrics.score("log_loss", Y3, zero_on_truth, 3))
    assert metrics.score("log_loss", Y3, zero_on_truth, 3) > value


def test_roc_auc_binary_and_multiclass_match_sklearn() -> None:
    assert metrics.score("roc_auc", Y2, P2, 2) == pytest.approx(skm.roc_auc_score(Y2, P2[:, 1]))
    assert metrics.score("roc_auc", Y2, P2, 2) == pytest.approx(8 / 9)
    assert metrics.score("roc_auc", Y3, P3, 3) == pytest.approx(
        skm.roc_auc_score(Y3, P3, multi_class="ovr"), rel=1e-6
    )


def test_roc_auc_of_a_single_class_is_nan() -> None:
    assert math.isnan(metrics.score("roc_auc", np.array([1, 1, 1]), P2[:3], 2))


def test_regression_metrics_match_sklearn() -> None:
    assert metrics.score("rmse", YR, PR) == pytest.approx(math.sqrt(skm.mean_squared_error(YR, PR)))
    assert metrics.score("rmse", YR, PR) == pytest.approx(math.sqrt(0.375))
    assert (
        metrics.score("mae", YR, PR) == pytest.approx(skm.mean_absolute_error(YR, PR)) == pytest.approx(0.5)
    )
    assert metrics.score("r2", YR, PR) == pytest.approx(skm.r2_score(YR, PR))


def test_perfect_predictions() -> None:
    onehot = np.eye(3)[Y3]
    assert metrics.score("accuracy", Y3, onehot, 3) == 1.0
    assert metrics.score("macro_f1", Y3, onehot, 3) == 1.0
    assert metrics.score("roc_auc", Y3, onehot, 3) == 1.0
    assert metrics.score("log_loss", Y3, onehot, 3) == pytest.approx(0.0, abs=1e-5)
    assert metrics.score("rmse", YR, YR) == 0.0
    assert metrics.score("r2", YR, YR) == 1.0


def test_unknown_metric() -> None:
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        metrics.score("f1", Y3, P3, 3)


def test_evaluation_metrics_sets() -> None:
    assert set(metrics.evaluation_metrics("regression", YR, PR, 0)) == {"rmse", "mae", "r2"}
    assert set(metrics.evaluation_metrics("classification", Y2, P2, 2)) == {
        "accuracy",
        "macro_f1",
        "log_loss",
        "roc_auc",
    }
    multi = metrics.evaluation_metrics("classification", Y3, P3, 3)
    assert set(multi) == {"accuracy", "macro_f1", "log_loss"}
    assert multi["accuracy"] == metrics.score("accuracy", Y3, P3, 3)


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy", "roc_auc", "r2"])
def test_is_better_when_maximised(metric: str) -> None:
    assert metric in MAXIMIZED_METRICS
    assert metrics.is_better(metric, 0.75, 0.5)
    assert not metrics.is_better(metric, 0.5, 0.75)
    assert not metrics.is_better(metric, 0.5, 0.5)
    assert not metrics.is_better(metric, 0.75, 0.5, min_delta=0.25)  # must beat by MORE than min_delta
    assert metrics.is_better(metric, 0.875, 0.5, min_delta=0.25)


@pytest.mark.parametrize("metric", ["log_loss", "rmse", "mae"])
def test_is_better_when_minimised(metric: str) -> None:
    assert metric not in MAXIMIZED_METRICS
    assert metrics.is_better(metric, 0.5, 0.75)
    assert not metrics.is_better(metric, 0.75, 0.5)
    assert not metrics.is_better(metric, 0.5, 0.5)
    assert not metrics.is_better(metric, 0.5, 0.75, min_delta=0.25)
    assert metrics.is_better(metric, 0.25, 0.75, min_delta=0.25)


@pytest.mark.parametrize("metric", ["accuracy", "rmse"])
def test_is_better_with_nan(metric: str) -> None:
    nan = float("nan")
    assert metrics.is_better(metric, 0.5, nan)  # anything beats "no score yet"
    assert metrics.is_better(metric, 0.5, nan, min_delta=10.0)
    assert not metrics.is_better(metric, nan, nan)
    assert not metrics.is_better(metric, nan, 0.5)
