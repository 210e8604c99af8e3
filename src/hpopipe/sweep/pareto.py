"""Multi-objective sweeps: directions, the Pareto front and the selection rules.

With ``hpo.metrics`` the study has one direction per objective and Optuna
keeps the Pareto front (``study.best_trials``: the COMPLETE trials no other
trial beats on every objective). The first objective is also ``hpo.metric``:
early stopping, CV folds and the refit score by it, so everything downstream
of the sweep works unchanged; the others are computed on the same validation
rows (``n_params`` from the trained model; see :mod:`hpopipe.sweep.objectives`).
``cv.select`` then turns the front into one choice: by the first metric, or
by a weighted score. No torch here: ``select`` imports this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpopipe.config import BestFirstMetric, Params, SweepParams, WeightedSelect
from hpopipe.handoffs.cv import CvSummary
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.metrics import objective_direction

Rule = BestFirstMetric | WeightedSelect


def is_multi_objective(params: SweepParams) -> bool:
    """True when ``hpo.metrics`` names several objectives."""
    return params.hpo.metrics is not None


def directions_kwarg(params: SweepParams) -> dict[str, Any]:
    """``optuna.create_study``'s ``direction`` for one objective, ``directions`` for several."""
    if is_multi_objective(params):
        return {"directions": params.hpo.directions}
    return {"direction": params.hpo.direction}


def name_objectives(study: optuna.Study, params: SweepParams) -> None:
    """Store the objective names in the study, where exports and optuna-dashboard read them."""
    if is_multi_objective(params) and study.metric_names != params.hpo.objectives:
        with warnings.catch_warnings():  # set_metric_names is flagged experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(params.hpo.objectives)


def objective_names(study: optuna.Study) -> list[str]:
    """The names a multi-objective study stored; ``objective_<i>`` where it stored none."""
    return study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]


def is_multi_objective_study(study: optuna.Study) -> bool:
    """True for a study with several directions (``study.direction`` would raise)."""
    return len(study.directions) > 1


def lexicographic_key(names: Sequence[str], values: Mapping[str, float]) -> tuple[float, ...]:
    """Sort key, smaller first: the first objective in its direction, ties broken by the next ones."""
    return tuple(-values[n] if objective_direction(n) == "maximize" else values[n] for n in names)


def weighted_score(weights: Mapping[str, float], values: Mapping[str, float]) -> float:
    """Sum of weight x value; higher is better (a minimised objective has a negative weight)."""
    return float(sum(w * values[name] for name, w in weights.items()))


def rule_key(rule: Rule, names: Sequence[str], values: Mapping[str, float]) -> tuple[float, ...]:
    """Sort key of ``cv.select``'s rule, smaller first (callers add the trial number to break ties)."""
    if isinstance(rule, WeightedSelect):
        return (-weighted_score(rule.weights, values),)
    return lexicographic_key(names, values)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front, best first by the first objective, then the next ones, then trial number."""
    directions = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]

    def key(t: FrozenTrial) -> tuple[float, ...]:
        return (*(-v if up else v for v, up in zip(t.values, directions, strict=True)), t.number)

    return sorted(study.best_trials, key=key)


def candidates(params: Params, ranked: Sequence[RankedTrial]) -> list[RankedTrial]:
    """The ``cv.top_k`` trials CV scores: the best of the ranked front by ``cv.select`` on sweep values.

    One objective: the first ``top_k`` of the ranking (best_first_metric is its order).
    """
    if not is_multi_objective(params):
        return list(ranked[: params.cv.top_k])
    names = params.hpo.objectives
    ordered = sorted(ranked, key=lambda t: (*rule_key(params.cv.select, names, t.values or {}), t.number))
    return ordered[: params.cv.top_k]


def choose(params: Params, cv_summary: CvSummary) -> tuple[int, dict[str, Any]]:
    """The candidate ``cv.select`` picks from the CV means, and a record of why.

    Returns:
        (the chosen trial number, the ``source`` entries that explain the choice)
    """
    rule, names = params.cv.select, params.hpo.objectives
    means = {c.trial: c.objectives or {} for c in cv_summary.candidates}
    chosen = min(means, key=lambda t: (*rule_key(rule, names, means[t]), t))
    record: dict[str, Any] = {"rule": rule.rule, "cv_means": means[chosen], "candidates": sorted(means)}
    if isinstance(rule, WeightedSelect):
        scores = {t: weighted_score(rule.weights, m) for t, m in means.items()}
        record |= {"weights": dict(rule.weights), "weighted_score": scores[chosen]}
        record["why"] = (
            f"highest weighted score {scores[chosen]:.6g} (sum of weight x CV mean) "
            f"among {len(scores)} candidate(s)"
        )
    else:
        first = names[0]
        record["why"] = (
            f"best CV mean {first} {means[chosen][first]:.6g} ({objective_direction(first)}d; "
            f"ties broken by {', '.join(names[1:])}) among {len(means)} candidate(s)"
        )
    return chosen, record
