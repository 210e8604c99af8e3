"""Multi-objective sweeps: config checks, the Pareto front in real studies, exports, CV and select rules."""

from __future__ import annotations

import importlib
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from hpopipe.config import ModelConfig, parse_params
from hpopipe.cv import cross_validate, summarise
from hpopipe.data import to_arrays
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.cv import CvCandidate, CvSummary
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.retrain.summary import read_results
from hpopipe.select import best_config
from hpopipe.space.formats import export_space
from hpopipe.sweep import pareto
from hpopipe.sweep.exports import export_trials, pareto_front, ranked_trials, statistics, summary
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.status import format_status, read_status
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.sweep.study import study_name
from hpopipe.tracking import NullTracker
from hpopipe.training.loop import task_of
from hpopipe.training.models import build
from tests.conftest import DROP, REPO, TINY_PARAMS, dvc_repro, make_project, params_variant, subprocess_env

OBJECTIVES = ["macro_f1", "n_params"]


def raw_params(tmp_path: Path, **hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    del raw["hpo"]["metric"], raw["hpo"]["pruner"]
    raw["hpo"].update({"n_trials": 6, "metrics": OBJECTIVES, "checkpoint_dir": str(tmp_path / "ckpt"), **hpo})
    raw["train"].update(max_epochs=2)
    return raw


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(HpopipeError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- configuration ------------------------------------------------------------------------------


def test_metrics_set_the_first_metric_directions_and_no_pruner(tmp_path: Path) -> None:
    params = parse_params(raw_params(tmp_path))
    assert params.hpo.metric == "macro_f1" and params.hpo.objectives == OBJECTIVES
    assert params.hpo.directions == ["maximize", "minimize"]
    assert params.hpo.pruner.name == "none"
    assert params.cv.select.rule == "best_first_metric"
    same = raw_params(tmp_path, metric="macro_f1", pruner={"name": "none"})
    assert parse_params(same) == params


@pytest.mark.parametrize(
    ("hpo", "cv_select", "expected"),
    [
        ({"metric": "accuracy"}, None, "params.yaml: hpo.metric: 'accuracy' must be left out or equal"),
        ({"pruner": {"name": "median"}}, None, "params.yaml: hpo.pruner: 'median' cannot be used"),
        ({"sampler": {"name": "cmaes"}}, None, "params.yaml: hpo.sampler: 'cmaes' optimises a single"),
        ({"metrics": ["macro_f1"]}, None, "params.yaml: hpo.metrics: list two or more"),
        (
            {"metrics": ["macro_f1", "macro_f1"]},
            None,
            "params.yaml: hpo.metrics: ['macro_f1', 'macro_f1'] names",
        ),
        (
            {"metrics": ["n_params", "macro_f1"]},
            None,
            "params.yaml: hpo.metrics: the first objective must be",
        ),
        ({"metrics": ["macro_f1", "size"]}, None, "params.yaml: hpo.metrics.1: Input should be"),
        (
            {"metrics": ["macro_f1", "rmse"]},
            None,
            "params.yaml: hpo.metrics: 'rmse' is for regression, but data.task",
        ),
        ({}, "best_metric", "params.yaml: cv.select.rule: 'best_metric' is not one of"),
        ({}, {"rule": "weighted"}, "params.yaml: cv.select.weights: Field required"),
        (
            {},
            {"rule": "weighted", "weights": {"macro_f1": 1.0}},
            "params.yaml: cv.select.weights: name exactly",
        ),
        (
            {},
            {"rule": "weighted", "weights": {"macro_f1": 1.0, "n_params": 1.0e-5}},
            "params.yaml: cv.select.weights.n_params: n_params is minimized, so its weight must be negative",
        ),
        (
            {},
            {"rule": "weighted", "weights": {"macro_f1": 0.0, "n_params": -1.0}},
            "params.yaml: cv.select.weights: macro_f1: weight must be a finite non-zero number",
        ),
        (
            {"metrics": None},
            {"rule": "weighted", "weights": {"macro_f1": 1.0}},
            "params.yaml: cv.select.rule: 'weighted' needs hpo.metrics",
        ),
    ],
)
def test_bad_combinations_fail_in_one_line(tmp_path: Path, hpo: dict, cv_select: Any, expected: str) -> None:
    raw = raw_params(tmp_path, **hpo)
    if hpo.get("metrics", "") is None:
        del raw["hpo"]["metrics"]
    if "rmse" in str(hpo):
        raw["data"]["task"] = "classification"
    if cv_select is not None:
        raw["cv"]["select"] = cv_select
    assert error_of(raw).startswith(expected)


def test_study_identity_includes_the_metrics_and_single_objective_names_stay(tmp_path: Path) -> None:
    single = parse_params(yaml.safe_load(TINY_PARAMS))
    assert study_name(single, "fp") == "mlp-705c7283"  # the name studies made before hpo.metrics had
    multi = parse_params(raw_params(tmp_path))
    swapped = parse_params(raw_params(tmp_path, metrics=["macro_f1", "log_loss"]))
    names = {study_name(single, "fp"), study_name(multi, "fp"), study_name(swapped, "fp")}
    assert len(names) == 3


# --- real multi-objective sweeps ----------------------------------------------------------------


def dominates(a: list[float], b: list[float], maximize: list[bool]) -> bool:
    better = [x > y if up else x < y for x, y, up in zip(a, b, maximize, strict=True)]
    no_worse = [x >= y if up else x <= y for x, y, up in zip(a, b, maximize, strict=True)]
    return all(no_worse) and any(better)


@pytest.fixture(scope="module", params=[{"name": "nsga2", "population_size": 2}, {"name": "tpe"}], ids=str)
def swept(request: pytest.FixtureRequest, prepared: tuple, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    tmp = tmp_path_factory.mktemp("mo")
    params = parse_params(raw_params(tmp, sampler=request.param))
    study = sweep(params, prepared[0], prepared[1], sqlite_spec(tmp / "study.db"), NullTracker())
    return params, study, tmp


def test_the_front_is_every_non_dominated_complete_trial(swept: tuple) -> None:
    params, study, _ = swept
    assert study.metric_names == OBJECTIVES
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6  # no pruning in a multi-objective sweep
    maximize = [True, False]
    expected = {
        t.number for t in complete if not any(dominates(o.values, t.values, maximize) for o in complete)
    }
    front = pd.DataFrame(pareto_front(study, list(params.search_space)))
    assert set(front["number"]) == expected
    rows = front[["value_macro_f1", "value_n_params"]].to_numpy().tolist()
    assert not any(dominates(a, b, maximize) for a in rows for b in rows)
    # ranked best first by the first metric, then the next objective
    assert list(front["value_macro_f1"]) == sorted(front["value_macro_f1"], reverse=True)
    assert [r.number for r in ranked_trials(study)] == list(front["number"])


def test_n_params_is_the_trainable_parameter_count(swept: tuple) -> None:
    _, study, _ = swept
    by_shape: dict[tuple, set[float]] = {}
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.values[1] == int(t.values[1]) > 0
        by_shape.setdefault((t.params["n_layers"], t.params["width"]), set()).add(t.values[1])
    assert all(len(counts) == 1 for counts in by_shape.values())
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        model = build(ModelConfig(name="mlp"), t.params, n_features=30, n_outputs=2)
        assert t.values[1] == sum(p.numel() for p in model.parameters())


def test_exports_of_a_multi_objective_study(swept: tuple) -> None:
    params, study, tmp = swept
    trials = export_trials(study, list(params.search_space))
    assert list(trials.columns[:6]) == [
        "number",
        "state",
        "value_macro_f1",
        "value_n_params",
        "duration_s",
        "best_epoch",
    ]
    stats, hpo = statistics(study), summary(study)
    assert stats["directions"] == {"macro_f1": "maximize", "n_params": "minimize"}
    assert stats["front_size"] == hpo["front_size"] == len(study.best_trials)
    assert hpo["best_trial"] == ranked_trials(study)[0].number
    text = format_status(read_status(tmp / "study.db"))
    assert re.search(rf"pareto front +{len(study.best_trials)} trials", text) and "maximize, minimize" in text


def test_a_second_objective_the_prepared_task_cannot_score_is_refused(
    tmp_path: Path, prepared: tuple
) -> None:
    params = parse_params(raw_params(tmp_path, metrics=["macro_f1", "rmse"]))
    with pytest.raises(
        HpopipeError,
        match=r"^hpo.metrics: 'rmse' is for regression, but data.task is classification \(data.task",
    ):
        sweep(params, prepared[0], prepared[1], sqlite_spec(tmp_path / "s.db"), NullTracker())


# --- CV and select ------------------------------------------------------------------------------


def cv_summary(objectives: dict[int, dict[str, float]]) -> CvSummary:
    """metrics/cv.json as the cv stage writes it for a multi-objective sweep (ranked by the first)."""
    order = sorted(objectives, key=lambda t: (-objectives[t]["macro_f1"], t))
    ranks = {
        str(rank): CvCandidate(
            trial=t, mean=objectives[t]["macro_f1"], std=0.0, best_epoch_mean=2.0, objectives=objectives[t]
        )
        for rank, t in enumerate(order, start=1)
    }
    return CvSummary(metric="macro_f1", folds=2, ranks=ranks)


def ranked_of(numbers: list[int]) -> list[RankedTrial]:
    values = {"macro_f1": 0.9, "n_params": 1.0}
    return [
        RankedTrial(number=n, value=0.9, values=values, params={"lr": 0.01}, best_epoch=1, checkpoint=None)
        for n in numbers
    ]


@pytest.mark.parametrize(
    ("select", "chosen"),
    [
        ("best_first_metric", 3),
        ({"rule": "weighted", "weights": {"macro_f1": 1.0, "n_params": -1.0e-4}}, 5),
        ({"rule": "weighted", "weights": {"macro_f1": 1.0, "n_params": -1.0e-6}}, 3),
    ],
)
def test_select_applies_the_rule_and_says_why(tmp_path: Path, select: Any, chosen: int) -> None:
    raw = raw_params(tmp_path)
    raw["cv"]["select"] = select
    params = parse_params(raw)
    # trial 3: best F1 but 10x the parameters; the weighted score 1e-4/param prefers trial 5
    summary_ = cv_summary(
        {3: {"macro_f1": 0.96, "n_params": 5000.0}, 5: {"macro_f1": 0.93, "n_params": 500.0}}
    )
    best = best_config(params, ranked_of([3, 5]), summary_)
    source = best.plain()["source"]
    assert source["trial"] == chosen and best.params == {"lr": 0.01}
    assert source["rule"] == params.cv.select.rule and source["candidates"] == [3, 5]
    assert source["cv_means"] == (summary_.of_trial(chosen) or pytest.fail()).objectives
    if source["rule"] == "weighted":
        assert source["weighted_score"] == pytest.approx(
            0.96 - 5000 * 1e-6 if chosen == 3 else 0.93 - 500 * 1e-4
        )
    assert "among 2 candidate(s)" in source["why"]


def test_ties_on_the_first_metric_go_to_the_next_objective(tmp_path: Path) -> None:
    params = parse_params(raw_params(tmp_path))
    summary_ = cv_summary(
        {3: {"macro_f1": 0.95, "n_params": 900.0}, 5: {"macro_f1": 0.95, "n_params": 500.0}}
    )
    assert best_config(params, ranked_of([3, 5]), summary_).source.trial == 5


def test_cv_scores_the_top_k_of_the_front_by_the_rule(swept: tuple, prepared: tuple) -> None:
    params, study, tmp = swept
    raw = raw_params(tmp)
    raw["cv"].update(top_k=2, select={"rule": "weighted", "weights": {"macro_f1": 1.0, "n_params": -1.0}})
    weighted = parse_params(raw)
    ranked = ranked_trials(study)
    # weight -1 per parameter: the smallest models of the front come first
    by_size = sorted(ranked, key=lambda t: ((t.values or {})["n_params"], t.number))
    picked = pareto.candidates(weighted, ranked)
    assert [t.number for t in picked] == [t.number for t in by_size[:2]]
    assert [t.number for t in pareto.candidates(params, ranked)] == [t.number for t in ranked[:2]]
    x, y = to_arrays(prepared[0])
    results = cross_validate(weighted, ranked, x, y, task_of(prepared[1], "macro_f1"), NullTracker())
    assert list(results.columns) == ["trial", "fold", "score", "best_epoch", "n_params", "stopped_early"]
    assert not results["stopped_early"].any()  # no early stopping in a multi-objective sweep
    cv = summarise(results, "macro_f1")
    for stats in cv.candidates:
        assert stats.objectives is not None and stats.objectives["macro_f1"] == stats.mean
        sweep_size = next((t.values or {})["n_params"] for t in ranked if t.number == stats.trial)
        assert stats.objectives["n_params"] == sweep_size  # the same architecture in every fold
    for rule_params in (params, weighted):
        best = best_config(rule_params, ranked, cv)
        means = {c.trial: c.objectives or {} for c in cv.candidates}
        if rule_params is weighted:
            expected = max(means, key=lambda t: (means[t]["macro_f1"] - means[t]["n_params"], -t))
        else:
            expected = max(means, key=lambda t: (means[t]["macro_f1"], -means[t]["n_params"], -t))
        assert best.source.trial == expected


# --- single-objective outputs -------------------------------------------------------------------


def test_single_objective_pareto_csv_holds_the_best_trial(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path, n_trials=3)
    del raw["hpo"]["metrics"]
    params = parse_params(raw)
    study = sweep(params, prepared[0], prepared[1], sqlite_spec(tmp_path / "s.db"), NullTracker())
    front = pareto_front(study, list(params.search_space))
    assert list(front.columns) == ["number", "value"] + [f"params_{n}" for n in params.search_space]
    assert front["number"].tolist() == [study.best_trial.number]
    assert math.isclose(front["value"].iloc[0], study.best_value)
    assert "front_size" not in statistics(study) and "front_size" not in summary(study)
    assert "value" in export_trials(study, list(params.search_space)).columns
    assert not pareto.is_multi_objective_study(study)
    assert isinstance(study, optuna.Study)


# --- the whole pipeline -------------------------------------------------------------------------

MO_PARAMS = params_variant(
    TINY_PARAMS,
    {
        "hpo.metric": DROP,
        "hpo.metrics": ["macro_f1", "n_params"],
        "hpo.pruner": DROP,
        "hpo.sampler": {"name": "nsga2", "population_size": 2},
        "cv.select": {"rule": "weighted", "weights": {"macro_f1": 1.0, "n_params": -1.0e-4}},
    },
)


def test_every_stage_runs_on_a_multi_objective_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hpo = yaml.safe_load(MO_PARAMS)["hpo"]
    assert hpo["metrics"] == ["macro_f1", "n_params"] and "pruner" not in hpo
    (tmp_path / "data/raw").mkdir(parents=True)
    shutil.copy(REPO / "data/raw/breast_cancer.csv", tmp_path / "data/raw")
    (tmp_path / "params.yaml").write_text(MO_PARAMS)
    monkeypatch.chdir(tmp_path)
    for name in ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]:
        importlib.import_module(f"stages.{name}").main()
    front = pd.read_csv(tmp_path / "artifacts/hpo/pareto.csv")
    ranked = json.loads((tmp_path / "artifacts/hpo/ranked_trials.json").read_text())["trials"]
    assert list(front["number"]) == [t["number"] for t in ranked] and len(front) >= 1
    best = yaml.safe_load((tmp_path / "artifacts/best/config.yaml").read_text())
    source = best["source"]
    assert source["rule"] == "weighted" and source["weights"] == {"macro_f1": 1.0, "n_params": -1.0e-4}
    cv = json.loads((tmp_path / "metrics/cv.json").read_text())
    scores = {
        c["trial"]: c["objectives"]["macro_f1"] - 1e-4 * c["objectives"]["n_params"]
        for c in cv["ranks"].values()
    }
    assert source["trial"] == max(scores, key=lambda t: (scores[t], -t))
    assert source["weighted_score"] == pytest.approx(scores[source["trial"]])
    assert read_results(tmp_path).cv_trial == source["trial"]  # the retrain summary shows select's choice
    page = (tmp_path / "reports/index.html").read_text()
    assert "Multi-objective (macro_f1, n_params)" in page and "<code>weighted</code>" in page
    assert json.loads((tmp_path / "metrics/test.json").read_text())["accuracy"] > 0.5


def test_space_export_keeps_the_objectives_where_the_format_can(tmp_path: Path) -> None:
    params = parse_params(raw_params(tmp_path))
    doc = json.loads(export_space(params, "optuna"))
    assert doc["metrics"] == OBJECTIVES and doc["directions"] == ["maximize", "minimize"]
    for fmt in ("wandb", "azureml"):
        with pytest.raises(HpopipeError, match=f"^space export: {fmt} cannot express hpo.metrics"):
            export_space(params, fmt)


@pytest.mark.slow
def test_dvc_runs_a_multi_objective_pipeline_and_a_new_rule_reruns_from_cv(tmp_path: Path) -> None:
    root = make_project(tmp_path, MO_PARAMS)
    env = subprocess_env(HPOPIPE_TRACKING="off")

    def repro() -> list[str]:
        return dvc_repro(root, env=env)[0]

    assert repro() == ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]
    assert (root / "artifacts/hpo/pareto.csv").exists()
    (root / "params.yaml").write_text(params_variant(MO_PARAMS, {"cv.select": DROP}))
    ran = repro()
    assert ran[:2] == ["cv", "select"] and "hpo" not in ran
    best = yaml.safe_load((root / "artifacts/best/config.yaml").read_text())
    assert best["source"]["rule"] == "best_first_metric"
