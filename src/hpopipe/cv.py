"""k-fold cross-validation of the best sweep candidates.

Each fold trains with the same :func:`hpopipe.training.loop.fit` as the sweep; early
stopping uses a validation slice of the fold's training rows, so the held-out
fold only ever scores. With ``hpo.n_workers`` = N > 1 the trainings run on N local workers:
this process, training from the start, and N - 1 spawned processes that join in once they have
imported (:mod:`hpopipe.process_pool`); every training is seeded by its candidate and fold alone,
so the results do not depend on the order they run in or on where.

Fold-aware early stopping (``cv.early_stop``, on by default) drops a candidate as soon as its
folds so far prove it cannot be selected; see :class:`FoldRace` for the rule and why it never
drops the winner.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hpopipe import metrics
from hpopipe.config import Params
from hpopipe.errors import HpopipeError, TaskFailed
from hpopipe.handoffs.cv import CvCandidate, CvSummary
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.process_pool import ordered_map
from hpopipe.seeding import derive_seed
from hpopipe.sweep import objectives, pareto
from hpopipe.tracking import NullTracker
from hpopipe.training.kfold import kfold, stratified_kfold
from hpopipe.training.loop import Task, as_tensor, fit, predict, resolve_device
from hpopipe.training.split import split_validation

log = logging.getLogger(__name__)
RESULT_COLUMNS = ["trial", "fold", "score", "best_epoch"]
# The last column of results.csv, after a multi-objective sweep's further objectives: True on every
# row of a candidate that early stopping dropped (its rows are the folds it ran, in order), False
# for a candidate that ran every fold.
STOPPED = "stopped_early"
# How much worse than the leader's mean the best reachable mean must be to stop: means computed in
# a different order (here fmean, pandas in summarise) may differ in the last bits, never by this.
TOLERANCE = 1e-9


def folds(x: np.ndarray, y: np.ndarray, task: Task, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds for classification, plain shuffled folds for regression.

    scikit-learn's ``StratifiedKFold`` / ``KFold(k, shuffle=True, random_state=seed)`` folds,
    computed without importing it (see :mod:`hpopipe.training.kfold`).
    """
    if task.kind == "classification":
        return stratified_kfold(y, k, seed)
    return kfold(len(x), k, seed)


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


def best_reachable_mean(scores: Sequence[float], k: int, best: float) -> float:
    """The best mean over ``k`` folds a candidate with these first fold ``scores`` can still reach:
    every fold it has not run scoring ``best``, the best score the metric can take."""
    return (math.fsum(scores) + (k - len(scores)) * best) / k


def cannot_win(scores: Sequence[float], k: int, best: float, leader_mean: float, maximize: bool) -> bool:
    """True when even ``best`` on every fold left leaves the mean worse than ``leader_mean``.

    Worse by more than :data:`TOLERANCE`: a tie (or one within rounding) is not a stop, because
    ``summarise`` breaks ties by trial number, so a candidate that ties the leader may still be
    ranked first. A NaN score or leader never stops anything.
    """
    reachable = best_reachable_mean(scores, k, best)
    gap = leader_mean - reachable if maximize else reachable - leader_mean
    return gap > TOLERANCE * max(1.0, abs(leader_mean))


@dataclass
class FoldRace:
    """Fold-aware early stopping: the rule a sequential run applies, fold by fold, in rank order.

    Candidates are taken in rank order (``pareto.candidates``); the leader of candidate ``i`` is
    the best mean of the candidates before it that ran every fold. After each of its folds,
    candidate ``i`` stops when :func:`cannot_win`: its best reachable mean, the folds left at the
    metric's best score (``MetricSpec.best`` in :mod:`hpopipe.metrics`), is worse than the leader's mean.

    Why this never drops the winner: the folds left can only score ``best`` or worse, so the mean
    the stopped candidate would have reached is at most its best reachable mean, worse than the
    leader's; the leader ran every fold, with the same seeds and so the same scores as in a run
    without early stopping. So the stopped candidate cannot be the best mean of that run either,
    every candidate that could be is run in full, and ``summarise`` ranks stopped candidates
    after the complete ones: the selected trial, its mean, std and epochs are those of a run with
    ``cv.early_stop: false``.

    Only the results so far, taken in (candidate, fold) order, decide, so a process pool that
    consults :meth:`wanted` records exactly what the sequential run records. ``best`` is None
    where early stopping is off: every candidate runs every fold.
    """

    k: int
    metric: str
    best: float | None
    scores: dict[int, list[float]]  # candidate position -> its fold scores so far
    stopped: set[int]
    leader: tuple[int, float] | None = None  # (position, mean)

    @classmethod
    def start(cls, params: Params, metric: str, k: int) -> FoldRace:
        """The race of this run: off with ``cv.early_stop: false``, in a multi-objective sweep
        (``cv.select`` weighs every objective, not the first's mean alone), or for a metric with no
        best score."""
        spec = metrics.CATALOGUE.get(metric)
        best = spec.best if params.cv.early_stop and spec is not None else None
        if params.cv.early_stop and pareto.is_multi_objective(params):
            log.info("cv: no early stopping in a multi-objective sweep: cv.select weighs every objective")
            best = None
        elif params.cv.early_stop and best is None:
            log.info("cv: no early stopping: %s has no best score to bound the folds left", metric)
        return cls(k=k, metric=metric, best=best, scores={}, stopped=set())

    @property
    def on(self) -> bool:
        return self.best is not None

    @property
    def maximize(self) -> bool:
        return metrics.objective_direction(self.metric) == "maximize"

    def wanted(self, job: int) -> bool:
        """Whether job ``job`` (candidate ``job // k``, fold ``job % k``) is still to be run."""
        return job // self.k not in self.stopped

    def record(self, position: int, score: float) -> bool:
        """Add the next fold score of candidate ``position``; True once it is done (all folds or stopped)."""
        scores = self.scores.setdefault(position, [])
        scores.append(score)
        if len(scores) == self.k:
            mean = statistics.fmean(scores)
            if metrics.is_better(self.metric, mean, math.nan if self.leader is None else self.leader[1]):
                self.leader = (position, mean)
            return True
        if self.best is None or self.leader is None:
            return False
        if cannot_win(scores, self.k, self.best, self.leader[1], self.maximize):
            self.stopped.add(position)
            return True
        return False


def cross_validate(
    params: Params,
    ranked: Sequence[RankedTrial],
    x: np.ndarray,
    y: np.ndarray,
    task: Task,
    tracker: NullTracker,
    workers: int = 1,
) -> pd.DataFrame:
    """Evaluate the ``cv.top_k`` best trials (see pareto.candidates); one row per (trial, fold) run.

    ``workers`` > 1 trains the candidate × fold jobs on that many local workers
    (:mod:`hpopipe.process_pool`): this process from the first moment, the others once they have
    started (a process still importing when the work is done is not waited for). Rows, log
    lines and the nested tracking runs still come in candidate order, from this process, so the
    results are those of a sequential run.
    With ``cv.early_stop`` (:class:`FoldRace`) a candidate that cannot win runs no more folds; a
    pool may have started some of them already, and their results are dropped, so the rows are
    still the sequential run's. A failed training raises one HpopipeError naming its trial and fold.
    """
    candidates = pareto.candidates(params, ranked)
    k = params.cv.folds
    splits = folds(x, y, task, k, params.seed)
    jobs = [FoldJob(c, fold, tr, te) for c in candidates for fold, (tr, te) in enumerate(splits)]
    race = FoldRace.start(params, task.metric, k)
    if workers > 1:
        log.info(
            "cv: %d trainings, on this process and up to %d more", len(jobs), min(workers, len(jobs)) - 1
        )
    rows: list[list[dict[str, Any]]] = [[] for _ in candidates]
    results = ordered_map(
        score_fold,
        FoldData(params, x, y, task),
        jobs,
        workers,
        wanted=race.wanted if race.on else None,
    )  # each fit sets train.threads (auto: one)
    with contextlib.closing(results):
        try:
            for index, row in results:
                position = index // k
                rows[position].append(row)
                if race.record(position, row["score"]):
                    _report(candidates, position, race, tracker)
        except TaskFailed as err:
            job = jobs[err.index]
            raise HpopipeError(
                f"cv: trial {job.candidate.number}, fold {job.fold} failed: {err.reason}"
            ) from err
    if race.on:
        run = sum(map(len, rows))
        log.info(
            "cv: early stopping ran %d of %d trainings (%d candidate(s) stopped)",
            run,
            len(jobs),
            len(race.stopped),
        )
    table = [r | {STOPPED: position in race.stopped} for position, done in enumerate(rows) for r in done]
    return pd.DataFrame(table, columns=[*RESULT_COLUMNS, *params.hpo.objectives[1:], STOPPED])


def _report(candidates: Sequence[RankedTrial], position: int, race: FoldRace, tracker: NullTracker) -> None:
    """The log line and the nested tracking run of a candidate that is done, complete or stopped."""
    candidate, scores, metric = candidates[position], race.scores[position], race.metric
    mean, std = statistics.fmean(scores), statistics.pstdev(scores)
    with tracker.run(f"cv-trial-{candidate.number:04d}", params=candidate.params, nested=True):
        tracker.log_metrics({"cv_mean": mean, "cv_std": std, "cv_folds": len(scores)})
    if len(scores) == race.k:
        log.info("trial %d: %s %.4f ± %.4f", candidate.number, metric, mean, std)
        return
    assert race.best is not None and race.leader is not None  # only early stopping leaves folds out
    log.info(
        "trial %d: stopped early after %d of %d folds (%s %s): at best %.4f, worse than trial %d's %.4f",
        candidate.number,
        len(scores),
        race.k,
        metric,
        ", ".join(f"{s:.4f}" for s in scores),
        best_reachable_mean(scores, race.k, race.best),
        candidates[race.leader[0]].number,
        race.leader[1],
    )


def summarise(results: pd.DataFrame, metric: str) -> CvSummary:
    """metrics/cv.json: mean and std per candidate, ranked by mean (ties: the lower trial number).

    A candidate early stopping dropped (``stopped_early``) has the mean of the folds it ran, which
    does not compare with a full mean: it is ranked after every complete candidate.

    With further objectives (a multi-objective sweep's extra columns), each
    candidate also gets ``objectives``: the CV mean of every objective, which
    ``select`` applies ``cv.select`` to.
    """
    candidates: list[CvCandidate] = []
    others = [c for c in results.columns if c not in (*RESULT_COLUMNS, STOPPED)]
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
    stopped = set(results.loc[results[STOPPED], "trial"]) if STOPPED in results else set()
    candidates.sort(key=lambda c: (c.trial in stopped, sign * c.mean, c.trial))
    return CvSummary(
        metric=metric,
        folds=int(results["fold"].nunique()),
        ranks={str(rank): c for rank, c in enumerate(candidates, start=1)},
    )
