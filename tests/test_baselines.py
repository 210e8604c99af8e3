"""The baselines every run is scored against, the sentence that compares, and the gate that can require it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpopipe import baselines
from hpopipe.config import RefitConfig
from hpopipe.handoffs.best import BestConfig
from hpopipe.handoffs.schema import PreparedSchema
from hpopipe.refit import refit
from hpopipe.retrain.gate import quality_gate
from hpopipe.retrain.sequence import RetrainOptions, retrain
from hpopipe.retrain.stages import StageOutcome
from tests.conftest import REPO, TINY_PARAMS, params_variant, subprocess_env


def split(
    problem: dict[str, Any], target: str
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, y = problem["x"], problem[target]
    return (x[:240], y[:240]), (x[240:], y[240:])


def test_gradient_boosting_beats_the_dummy_on_a_learnable_problem(problem: dict[str, Any]) -> None:
    train, test = split(problem, "y_cls")
    scores = baselines.fit_baselines("classification", 2, train, test, seed=0)
    assert list(scores) == ["hist_gradient_boosting", "dummy"]
    assert list(scores["dummy"]) == ["accuracy", "macro_f1", "log_loss", "roc_auc"]  # the network's keys
    assert scores["hist_gradient_boosting"]["accuracy"] > scores["dummy"]["accuracy"] + 0.2
    assert scores["dummy"]["roc_auc"] == 0.5  # class priors: no ranking at all
    train, test = split(problem, "y_reg")
    again = baselines.fit_baselines("regression", 0, train, test, seed=0)
    assert list(again["hist_gradient_boosting"]) == ["rmse", "mae", "r2"]
    assert again["hist_gradient_boosting"]["rmse"] < again["dummy"]["rmse"] / 2
    assert again == baselines.fit_baselines("regression", 0, train, test, seed=0)  # same seed, same numbers


def test_a_class_missing_from_training_keeps_every_probability_column(problem: dict[str, Any]) -> None:
    # Three classes in the schema, two in the training rows: probabilities still line up with the labels.
    (x, y), (x_test, y_test) = split(problem, "y_cls")
    y_test = y_test.copy()
    y_test[:3] = 2
    scores = baselines.fit_baselines("classification", 3, (x, y), (x_test, y_test), seed=0)
    assert 0 < scores["hist_gradient_boosting"]["accuracy"] < 1


def test_refit_scores_the_baselines_on_the_same_split(problem: dict[str, Any]) -> None:
    schema = PreparedSchema.model_validate(
        json.loads((REPO / "tests/data/handoffs/schema_breast_cancer.json").read_text())
        | {"feature_columns": [f"f{i}" for i in range(5)]}
    )
    best = BestConfig.model_validate(
        {
            "seed": 3,
            "model": {"name": "mlp"},
            "params": {"width": 8},
            "train": {"max_epochs": 2},
            "epochs": 2,
            "metric": "macro_f1",
            "source": {"trial": 0, "sweep_value": 0.9, "cv_mean": 0.9, "cv_std": 0.0, "cv_folds": 2},
        }
    )
    train, test = split(problem, "y_cls")
    fitted = refit(best, RefitConfig(), schema, train, test)
    written = fitted.metrics_file()
    assert {k: v for k, v in written.items() if k != "baselines"} == fitted.test_metrics  # keys as before
    assert written["baselines"] == baselines.fit_baselines("classification", 2, train, test, seed=3)
    assert "hist_gradient_boosting_test_macro_f1" in fitted.tracked_metrics()


@pytest.mark.parametrize(
    ("metric", "network", "baseline", "sentence"),
    [
        (
            "macro_f1",
            0.97,
            0.95,
            "The network beats the gradient-boosting baseline by 0.02 (macro_f1 0.97 against 0.95).",
        ),
        (
            "macro_f1",
            0.93,
            0.95,
            "The network trails the gradient-boosting baseline by 0.02 (macro_f1 0.93 against 0.95).",
        ),
        (
            "rmse",
            280.0,
            300.0,
            "The network beats the gradient-boosting baseline by 20 (rmse 280 against 300).",
        ),
        (
            "rmse",
            312.5,
            300.0,
            "The network trails the gradient-boosting baseline by 12.5 (rmse 312.5 against 300).",
        ),
        (
            "accuracy",
            0.9,
            0.9,
            "The network ties with the gradient-boosting baseline (accuracy 0.9 against 0.9).",
        ),
    ],
)
def test_the_sentence_says_who_wins_and_by_how_much(
    metric: str, network: float, baseline: float, sentence: str
) -> None:
    verdict = baselines.verdict(
        {metric: network, "baselines": {"hist_gradient_boosting": {metric: baseline}}}, metric
    )
    assert verdict is not None and verdict.sentence() == sentence
    assert verdict.beats == ("beats" in sentence)


def test_no_baseline_no_verdict() -> None:
    assert baselines.verdict({"macro_f1": 0.9}, "macro_f1") is None
    assert baselines.verdict({"macro_f1": 0.9, "baselines": {"dummy": {"macro_f1": 0.3}}}, "macro_f1") is None


# ---------------------------------------------------------------- the gate


def metrics(network: float, boosted: float | None) -> dict[str, Any]:
    found: dict[str, Any] = {"macro_f1": network}
    if boosted is not None:
        found["baselines"] = {"hist_gradient_boosting": {"macro_f1": boosted}, "dummy": {"macro_f1": 0.3}}
    return found


def test_the_gate_requires_beating_the_baseline_only_when_asked() -> None:
    assert quality_gate("macro_f1", metrics(0.90, 0.95), None, 0.02).passed  # not asked: as before
    losing = quality_gate("macro_f1", metrics(0.90, 0.95), None, 0.02, beat_baseline=True)
    assert not losing.passed and "trails the gradient-boosting baseline by 0.05" in losing.reason
    tie = quality_gate("macro_f1", metrics(0.95, 0.95), None, 0.02, beat_baseline=True)
    assert not tie.passed
    winning = quality_gate("macro_f1", metrics(0.97, 0.95), {"macro_f1": 0.96}, 0.02, beat_baseline=True)
    assert winning.passed and winning.reason.endswith(
        "beats the gradient-boosting baseline by 0.02 (macro_f1 0.97 against 0.95)."
    )
    missing = quality_gate("macro_f1", metrics(0.97, None), None, 0.02, beat_baseline=True)
    assert not missing.passed and "has no gradient-boosting baseline for macro_f1" in missing.reason
    regressed = quality_gate("macro_f1", metrics(0.90, 0.80), {"macro_f1": 0.99}, 0.02, beat_baseline=True)
    assert not regressed.passed and "beyond the allowed" in regressed.reason


def test_retrain_beat_baseline_in_params_yaml_makes_the_retrain_gate_require_it(tmp_path: Path) -> None:
    # The pipeline's outputs as a finished run left them; every stage is cached, only the gate decides.
    root = tmp_path
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    for name, text in {
        "metrics/test.json": json.dumps(metrics(0.93, 0.95)),
        "metrics/cv.json": json.dumps({"metric": "macro_f1", "folds": 2, "ranks": {}}),
        "artifacts/best/params.json": "{}",
        "artifacts/best/config.yaml": "{}\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, env=subprocess_env(), check=True)

    def cached(stage: str) -> StageOutcome:
        return StageOutcome(stage, "cached", 0.0, "cached")

    options = RetrainOptions(push=False, commit=False)
    for beat, passed in ((False, True), (True, False)):
        (root / "params.yaml").write_text(params_variant(TINY_PARAMS, {"retrain": {"beat_baseline": beat}}))
        report = retrain(root, options, cached)
        assert report.gate.passed is passed, report.gate.reason
    assert "trails the gradient-boosting baseline by 0.02 (macro_f1 0.93 against 0.95)" in report.gate.reason
