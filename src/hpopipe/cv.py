"""k-fold cross-validation of the best sweep candidates.

Each fold trains with the same :func:`hpopipe.training.loop.fit` as the sweep; early
stopping uses a validation slice of the fold's training rows, so the held-out
fold only ever scores.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from hpopipe import metrics
from hpopipe.config import Params
from hpopipe.handoffs.cv import CvCandidate, CvSummary
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.seeding import derive_seed
from hpopipe.sweep import objectives, pareto
from hpopipe.tracking import NullTracker
from hpopipe.training.loop import Task, as_tensor, fit, predict, resolve_device
from hpopipe.training.split import split_validation

log = logging.getLogger(__name__)
RESULT_COLUMNS = ["trial", "fold", "score", "best_epoch"]


def folds(x: np.ndarray, y: np.ndarray, task: Task, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds for classification, plain shuffled folds for regression."""
    splitter = (
        StratifiedKFold(k, shuffle=True, random_state=seed)
        if task.kind == "classification"
        else KFold(k, shuffle=True, random_state=seed)
    )
    return list(splitter.split(x, y))


def evaluate_candidate(
    params: Params, candidate: RankedTrial, x: np.ndarray, y: np.ndarray, task: Task
) -> list[dict[str, Any]]:
    """Score one candidate on every fold: rows of (trial, fold, score, best_epoch).

    A multi-objective sweep adds a column per further objective (``hpo.metrics[1:]``),
    scored on the same held-out fold.
    """
    rows = []
    device = resolve_device(params.train.device)
    for fold, (train_idx, test_idx) in enumerate(folds(x, y, task, params.cv.folds, params.seed)):
        seed = derive_seed(params.seed, "cv", candidate.seed_position, fold)
        inner = split_validation(x[train_idx], y[train_idx], task, params.data.val_size, seed)
        result = fit(params.model, candidate.params, params.train, task, inner.fit, inner.val, seed=seed)
        x_test = as_tensor(x[test_idx], device)
        output = predict(result.model, x_test, task, result.y_scale)
        value = metrics.score(task.metric, y[test_idx], output, task.n_classes)
        rows.append(
            {"trial": candidate.number, "fold": fold, "score": value, "best_epoch": result.best_epoch}
        )
        others = params.hpo.objectives[1:]
        rows[-1] |= objectives.objective_values(
            others, task, result.model, (x[test_idx], y[test_idx]), result.y_scale
        )
    return rows


def cross_validate(
    params: Params,
    ranked: Sequence[RankedTrial],
    x: np.ndarray,
    y: np.ndarray,
    task: Task,
    tracker: NullTracker,
) -> pd.DataFrame:
    """Evaluate the ``cv.top_k`` best trials (see pareto.candidates); one row per (trial, fold)."""
    candidates = pareto.candidates(params, ranked)
    rows: list[dict[str, Any]] = []
    for candidate in candidates:
        with tracker.run(f"cv-trial-{candidate.number:04d}", params=candidate.params, nested=True):
            fold_rows = evaluate_candidate(params, candidate, x, y, task)
            scores = [r["score"] for r in fold_rows]
            tracker.log_metrics({"cv_mean": statistics.fmean(scores), "cv_std": statistics.pstdev(scores)})
        log.info(
            "trial %d: %s %.4f ± %.4f",
            candidate.number,
            task.metric,
            statistics.fmean(scores),
            statistics.pstdev(scores),
        )
        rows += fold_rows
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *params.hpo.objectives[1:]])


def summarise(results: pd.DataFrame, metric: str) -> CvSummary:
    """metrics/cv.json: mean and std per candidate, ranked by mean (ties: the lower trial number).

    With further objectives (a multi-objective sweep's extra columns), each
    candidate also gets ``objectives``: the CV mean of every objective, which
    ``select`` applies ``cv.select`` to.
    """
    candidates: list[CvCandidate] = []
    others = [c for c in results.columns if c not in RESULT_COLUMNS]
    for trial, group in results.groupby("trial", sort=False):
        mean = float(group["score"].mean())
        objectives = {metric: mean} | {c: float(group[c].mean()) for c in others} if others else None
        candidates.append(
            CvCandidate(
                trial=int(trial),
                mean=mean,
                std=float(group["score"].std(ddof=0)),
                best_epoch_mean=float(group["best_epoch"].mean()),
                objectives=objectives,
            )
        )
    sign = -1.0 if metrics.objective_direction(metric) == "maximize" else 1.0
    candidates.sort(key=lambda c: (sign * c.mean, c.trial))
    return CvSummary(
        metric=metric,
        folds=int(results["fold"].nunique()),
        ranks={str(rank): c for rank, c in enumerate(candidates, start=1)},
    )
