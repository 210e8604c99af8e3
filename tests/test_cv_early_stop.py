"""Fold-aware early stopping in CV (cv.early_stop): a candidate whose folds so far cannot beat the
leader's mean stops; the selected trial is the same with it on or off; the pooled run records
what the sequential run records, and does not run what it knows is not wanted."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hpopipe import artifacts
from hpopipe.config import Params, parse_params
from hpopipe.cv import FoldRace, best_reachable_mean, cannot_win, cross_validate, summarise
from hpopipe.data import prepare, read_table, to_arrays
from hpopipe.errors import TaskFailed
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.metrics import CATALOGUE
from hpopipe.process_pool import ordered_map
from hpopipe.select import best_config
from hpopipe.tracking import NullTracker
from hpopipe.training.loop import task_of
from tests.conftest import REPO, TINY_PARAMS
from tests.failing_models import leaves_a_mark


def raw_params(**cv: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["cv"].update(top_k=4, folds=3, **cv)
    raw["train"].update(max_epochs=2)
    raw["hpo"]["storage"] = "journal"  # several workers refuse SQLite (the cv stage never opens it)
    return raw


# --- the rule, on hand-made scores ---------------------------------------------------------------


def test_the_best_reachable_mean_puts_the_metric_best_on_every_fold_left() -> None:
    assert best_reachable_mean([0.5, 0.5], 5, 1.0) == pytest.approx(0.8)
    assert best_reachable_mean([2.0], 4, 0.0) == pytest.approx(0.5)
    assert best_reachable_mean([0.7, 0.8, 0.9], 3, 1.0) == pytest.approx(0.8)  # all folds run: the mean


@pytest.mark.parametrize(
    ("leader", "stops"),
    [(0.85, True), (0.8 + 1e-6, True), (0.8, False), (0.8 - 1e-6, False), (0.5, False)],
)
def test_a_maximised_metric_stops_only_when_the_best_reachable_mean_is_below_the_leader(
    leader: float, stops: bool
) -> None:
    """macro_f1, 5 folds, 0.5 and 0.5 so far: at best (1 + 3) / 5 = 0.8. A tie runs on."""
    assert cannot_win([0.5, 0.5], 5, 1.0, leader, maximize=True) is stops


@pytest.mark.parametrize(("leader", "stops"), [(0.4, True), (0.5, False), (0.6, False)])
def test_a_minimised_metric_stops_only_when_the_best_reachable_mean_is_above_the_leader(
    leader: float, stops: bool
) -> None:
    """rmse, 4 folds, 2.0 on the first: at best (2 + 3 × 0) / 4 = 0.5."""
    assert cannot_win([2.0], 4, 0.0, leader, maximize=False) is stops


def test_a_nan_score_never_stops() -> None:
    assert not cannot_win([math.nan], 5, 1.0, 0.99, maximize=True)


def race(**cv: Any) -> FoldRace:
    params = parse_params(raw_params(**cv))
    return FoldRace.start(params, "macro_f1", params.cv.folds)


def feed(r: FoldRace, scores: dict[int, list[float]]) -> list[int]:
    """Every candidate's fold scores in (candidate, fold) order, as far as the race wants them; the
    positions of the folds it refused, as job numbers."""
    refused = []
    for position, folds in scores.items():
        for fold, score in enumerate(folds):
            job = position * r.k + fold
            if not r.wanted(job):
                refused.append(job)
                continue
            r.record(position, score)
    return refused


def test_by_default_a_candidate_that_cannot_beat_the_best_complete_mean_before_it_stops() -> None:
    r = race()  # 3 folds
    assert r.on
    scores = {0: [0.1, 0.2, 0.3], 1: [0.9, 0.9, 0.9], 2: [0.6, 0.99, 0.99], 3: [0.8, 0.9, 1.0], 4: [0.95] * 3}
    refused = feed(r, scores)
    # 0 is first: no leader, it runs every fold however bad. 1 leads with 0.9. 2: (0.6 + 2)/3 < 0.9
    # after its first fold. 3: (0.8 + 2)/3 > 0.9, then (1.7 + 1)/3 = 0.9, a tie: it runs on (and a
    # tie does not take the lead). 4 beats 0.9 and leads.
    assert r.stopped == {2} and refused == [7, 8]
    assert r.leader == (4, pytest.approx(0.95))


def test_the_leader_is_only_a_candidate_that_ran_every_fold() -> None:
    r = race()
    r.record(0, 0.95)  # candidate 0 has run one fold: no leader yet
    assert r.leader is None
    assert not r.record(0, 0.95) and r.record(0, 0.95)
    assert r.leader == (0, pytest.approx(0.95))
    assert r.record(1, 0.5) and r.stopped == {1}  # (0.5 + 2)/3 < 0.95


def test_early_stop_false_runs_every_fold() -> None:
    r = race(early_stop=False)
    assert not r.on
    assert feed(r, {0: [0.9, 0.9, 0.9], 1: [0.0, 0.0, 0.0]}) == [] and r.stopped == set()


def test_a_multi_objective_sweep_never_stops_early() -> None:
    """cv.select weighs every objective there, not the first's mean alone."""
    raw = raw_params()
    raw["hpo"]["metrics"] = ["macro_f1", "n_params"]
    raw["hpo"].pop("metric")
    raw["hpo"]["pruner"] = {"name": "none"}
    params = parse_params(raw)
    assert not FoldRace.start(params, "macro_f1", 3).on


@pytest.mark.parametrize("value", ["maybe", 2])
def test_early_stop_must_be_true_or_false(value: Any) -> None:
    from hpopipe.errors import HpopipeError

    with pytest.raises(HpopipeError, match=r"^params.yaml: cv.early_stop: "):
        parse_params(raw_params(early_stop=value))


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_every_catalogue_metric_has_a_best_score_no_prediction_beats(name: str) -> None:
    """The bound is safe: perfect predictions reach it (or come within the clipping of log_loss)
    and no random prediction beats it."""
    spec, rng = CATALOGUE[name], np.random.default_rng(0)
    best = CATALOGUE[name].best
    assert best is not None, f"{name}: give it a best score (MetricSpec.best)"
    n_classes = 3 if spec.task == "classification" else 0
    y: np.ndarray
    perfect: np.ndarray
    if spec.task == "classification":
        y = np.arange(60) % n_classes
        perfect = np.eye(n_classes)[y]
        guesses = [rng.dirichlet(np.ones(n_classes), size=60) for _ in range(50)]
    else:
        y = rng.normal(size=60)
        perfect = y.copy()
        guesses = [y + rng.normal(scale=s, size=60) for s in np.linspace(0.01, 3, 50)]
    assert spec.compute(y, perfect, n_classes) == pytest.approx(best, abs=1e-5)
    for output in guesses:
        score = spec.compute(y, output, n_classes)
        assert (score <= best) if spec.maximize else (score >= best)


# --- the pool: what the sequential rule wants, and no more ------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_the_pool_yields_what_the_sequential_consumer_wants_and_never_starts_what_it_refused(
    tmp_path: Path, workers: int
) -> None:
    """Tasks 6 and 7 are refused from the start: no process runs them. Task 5 would fail, but the
    consumer refuses 4 and 5 once it has seen task 0: a pool may have run them ahead (a process
    that would otherwise wait), yet nothing fails and only what was wanted comes out."""
    refused = {6, 7}
    tasks = [0, 1, 2, 3, 4, -5, 6, 7]
    got = []
    for index, value in ordered_map(
        leaves_a_mark, str(tmp_path), tasks, workers, wanted=lambda i: i not in refused
    ):
        got.append((index, value))
        if index == 0:
            refused.update({4, 5})
    assert got == [(0, 0), (1, 1), (2, 4), (3, 9)]
    ran = {int(p.name) for p in tmp_path.iterdir()}
    assert {0, 1, 2, 3} <= ran and not ran & {6, 7}
    if workers == 1:
        assert ran == {0, 1, 2, 3}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_wanted_task_that_fails_still_fails_the_map(tmp_path: Path, workers: int) -> None:
    with pytest.raises(TaskFailed, match="task -1 fails") as caught:
        list(ordered_map(leaves_a_mark, str(tmp_path), [0, -1, 2, 3], workers, wanted=lambda i: True))
    assert caught.value.index == 1


# --- a real cv run --------------------------------------------------------------------------------


def candidates() -> list[RankedTrial]:
    """Four candidates in rank order; the second (trial 2) barely trains (lr 1e-6): the weak one."""
    specs = [(4, 0.01, 16), (2, 1e-6, 16), (1, 0.01, 32), (7, 0.01, 16)]
    return [
        RankedTrial(
            number=n,
            value=0.9,
            params={"lr": lr, "n_layers": 1 + n % 2, "width": width, "dropout": 0.1},
            best_epoch=2,
            checkpoint=None,
            position=n,
        )
        for n, lr, width in specs
    ]


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any, Any]:
    params = parse_params(raw_params())
    prep = prepare(read_table(params.data.path), params.data, params.seed)
    x, y = to_arrays(prep.train)
    return x, y, task_of(prep.schema.plain(), "macro_f1")


def run_cv(data: tuple[Any, Any, Any], workers: int = 1, **cv: Any) -> tuple[Params, pd.DataFrame]:
    params = parse_params(raw_params(**cv))
    return params, cross_validate(params, candidates(), *data, NullTracker(), workers)


def test_a_weak_candidate_stops_after_its_first_fold_and_is_recorded(
    data: tuple[Any, Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hpopipe.cv"):
        params, results = run_cv(data)
    assert list(results.columns) == ["trial", "fold", "score", "best_epoch", "stopped_early"]
    weak = results[results["trial"] == 2]
    assert list(weak["fold"]) == [0] and list(weak["stopped_early"]) == [True]
    assert not results[results["trial"] != 2]["stopped_early"].any()
    assert [(t, len(g)) for t, g in results.groupby("trial", sort=False)] == [(4, 3), (2, 1), (1, 3), (7, 3)]
    assert any(
        r.message.startswith("trial 2: stopped early after 1 of 3 folds (macro_f1 ") for r in caplog.records
    )
    summary = summarise(results, params.hpo.metric)
    assert summary.candidates[-1].trial == 2  # ranked after every complete candidate


def test_the_winner_is_the_same_with_early_stopping_on_and_off(data: tuple[Any, Any, Any]) -> None:
    on_params, on = run_cv(data)
    off_params, off = run_cv(data, early_stop=False)
    assert len(on) < len(off) == 12 and not off["stopped_early"].any()
    on_summary, off_summary = summarise(on, "macro_f1"), summarise(off, "macro_f1")
    assert on_summary.ranks["1"] == off_summary.ranks["1"]
    assert best_config(on_params, candidates(), on_summary) == best_config(
        off_params, candidates(), off_summary
    )
    # every row early stopping kept is the row of the full run
    kept = off.drop(columns="stopped_early").merge(on[["trial", "fold"]])
    pd.testing.assert_frame_equal(kept, on.drop(columns="stopped_early").reset_index(drop=True))


def test_two_workers_record_the_sequential_early_stops_byte_for_byte(
    tmp_path: Path, data: tuple[Any, Any, Any]
) -> None:
    written = []
    for workers in (1, 2):
        _, results = run_cv(data, workers)
        csv = tmp_path / f"{workers}.csv"
        artifacts.write_frame(csv, results)
        written.append(csv.read_bytes())
    assert written[0] == written[1]
    assert b"\n2,0," in written[0] and b"\n2,1," not in written[0]  # the weak candidate stopped in both
