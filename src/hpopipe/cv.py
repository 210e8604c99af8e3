"""k-fold cross-validation of the best sweep candidates.

Each fold trains with the same :func:`hpopipe.training.loop.fit` as the sweep; early
stopping uses a validation slice of the fold's training rows, so the held-out
fold only ever scores. With ``hpo.n_workers`` > 1 the trainings run on that many local
processes; every training is seeded by its candidate and fold alone, so the results do not
depend on the order they run in.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from hpopipe import metrics
from hpopipe.config import Params
from hpopipe.errors import HpopipeError, TaskFailed
from hpopipe.handoffs.cv import CvCandidate, CvSummary
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.process_pool import ordered_map
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


@dataclass(frozen=True)
class FoldData:
    """What every fold training shares: sent once to each pool process."""

    params: Params
    x: np.ndarray
    y: np.ndarray
    task: Task


@dataclass(frozen=True)
class FoldJob:
    """One training: a candidate on one fold's rows."""

    candidate: RankedTrial
    fold: int
    train_idx: np.ndarray
    test_idx: np.ndarray


def score_fold(data: FoldData, job: FoldJob) -> dict[str, Any]:
    """Train a candidate on a fold's rows and score it on the held-out ones: one results.csv row.

    Seeded by (``seed``, candidate position, fold) alone, so the row is the same whichever
    process runs it and in whatever order. A multi-objective sweep adds a column per further
    objective (``hpo.metrics[1:]``), scored on the same held-out fold.
    """
    params, x, y, task = data.params, data.x, data.y, data.task
    train_idx, test_idx = job.train_idx, job.test_idx
    seed = derive_seed(params.seed, "cv", job.candidate.seed_position, job.fold)
    inner = split_validation(x[train_idx], y[train_idx], task, params.data.val_size, seed)
    result = fit(params.model, job.candidate.params, params.train, task, inner.fit, inner.val, seed=seed)
    output = predict(
        result.model, as_tensor(x[test_idx], resolve_device(params.train.device)), task, result.y_scale
    )
    value = metrics.score(task.metric, y[test_idx], output, task.n_classes)
    row = {"trial": job.candidate.number, "fold": job.fold, "score": value, "best_epoch": result.best_epoch}
    others = params.hpo.objectives[1:]
    return row | objectives.objective_values(
        others, task, result.model, (x[test_idx], y[test_idx]), result.y_scale
    )


def cross_validate(
    params: Params,
    ranked: Sequence[RankedTrial],
    x: np.ndarray,
    y: np.ndarray,
    task: Task,
    tracker: NullTracker,
    workers: int = 1,
) -> pd.DataFrame:
    """Evaluate the ``cv.top_k`` best trials (see pareto.candidates); one row per (trial, fold).

    ``workers`` > 1 trains the candidate × fold jobs on that many local processes
    (:mod:`hpopipe.process_pool`); rows, log lines and the nested tracking runs still come
    in candidate order, from this process, so the results are those of a sequential run.
    A failed training raises one HpopipeError naming its trial and fold.
    """
    candidates = pareto.candidates(params, ranked)
    splits = folds(x, y, task, params.cv.folds, params.seed)
    jobs = [FoldJob(c, fold, tr, te) for c in candidates for fold, (tr, te) in enumerate(splits)]
    if workers > 1:
        log.info("cv: %d trainings on %d local processes", len(jobs), min(workers, len(jobs)))
    rows: list[dict[str, Any]] = []
    results = ordered_map(
        score_fold, FoldData(params, x, y, task), jobs, workers
    )  # each fit sets train.threads (auto: one)
    with contextlib.closing(results):
        for candidate in candidates:
            try:
                fold_rows = [next(results) for _ in splits]
            except TaskFailed as err:
                job = jobs[err.index]
                raise HpopipeError(
                    f"cv: trial {job.candidate.number}, fold {job.fold} failed: {err.reason}"
                ) from err
            scores = [r["score"] for r in fold_rows]
            mean, std = statistics.fmean(scores), statistics.pstdev(scores)
            with tracker.run(f"cv-trial-{candidate.number:04d}", params=candidate.params, nested=True):
                tracker.log_metrics({"cv_mean": mean, "cv_std": std})
            log.info("trial %d: %s %.4f ± %.4f", candidate.number, task.metric, mean, std)
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
