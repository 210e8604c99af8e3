"""Bounded scratch: a finished trial's checkpoint is deleted as soon as nothing can use it.

A trial's checkpoint exists to resume it after a kill. Once the trial is finished for good it
can matter only to the cleanup stage, which keeps the checkpoints of the ``cleanup.keep_best``
best trials; CV, select and refit read none (they retrain from the ranked parameters). So after
every trial the sweep deletes the checkpoints of the configurations whose latest attempt is

- PRUNED, or FAIL with an error (a retry comes only from ``hpopipe resume``, which then
  trains it from the start: same seed, so the same result, at the cost of the epochs), or
  FAIL after its worker died more than ``hpo.max_retry`` times (never retried);
- COMPLETE but outside the study's best ``max(cv.top_k, cleanup.keep_best)``.

A RUNNING attempt (perhaps a dead worker's, which a retry will resume) and an attempt stopped by
a kill or a signal whose retry is queued or about to be keep theirs. Scratch then holds at most
one checkpoint per trial in flight or awaiting its retry, plus those of the best trials: with no
fault, ``hpo.n_workers + max(cv.top_k, cleanup.keep_best)`` configurations.

Several workers decide at once without a lock, because every decision stays true: a finished
state is final, and a single-objective trial that falls outside the best ``k`` never climbs back
(new trials only push it down). The trials are read *before* the ranking, so a trial that just
completed is either unfinished in the first read (kept) or ranked by the second. Only hashes this
reading names are deleted: the files of a trial that started after it are not judged here.

These settings are not the hpo stage's DVC params on purpose: they decide what stays in the
scratch folder, which is no DVC output, and a change of ``cv.top_k`` must not re-run the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe.config import Params
from hpopipe.errors import HpopipeError
from hpopipe.sweep.budget import warm_started
from hpopipe.sweep.exports import ranked_trials
from hpopipe.sweep.optuna_internals import TrialsView
from hpopipe.sweep.recovery import CHECKPOINT, CRASHES, INTERRUPTED
from hpopipe.training import checkpoints

log = logging.getLogger(__name__)


def kept_best(params: Params) -> int:
    """How many of the best trials keep their checkpoints during the sweep."""
    return max(params.cv.top_k, params.cleanup.keep_best)


def bound(params: Params) -> int:
    """The most configurations with a checkpoint in scratch at any moment of a sweep without faults."""
    return params.hpo.n_workers + kept_best(params)


def finished_for_good(trial: FrozenTrial, max_retry: int) -> bool:
    """Whether no retry will resume from this attempt's checkpoint."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    if trial.state != TrialState.FAIL:
        return False  # RUNNING (maybe a dead worker's, failed and retried later) or WAITING
    if not trial.user_attrs.get(INTERRUPTED):
        return True  # an error: only `hpopipe resume` runs it again
    return int(trial.user_attrs.get(CRASHES, 0)) > max_retry  # killed: retried up to hpo.max_retry


def doomed(trials: Sequence[FrozenTrial], best: set[str], max_retry: int) -> set[str]:
    """The checkpoint hashes nothing can use: their latest attempt is finished for good, not best.

    Attempts of one configuration (a trial and its retries) share the hash; only the latest
    one says whether a retry may still come.
    """
    latest: dict[str, FrozenTrial] = {}
    for trial in trials:
        phash = trial.user_attrs.get(CHECKPOINT)
        if phash and (phash not in latest or trial.number > latest[phash].number):
            latest[phash] = trial
    return {h for h, t in latest.items() if h not in best and finished_for_good(t, max_retry)}


class ScratchBound:
    """After-trial hook: delete the checkpoints of the study that nothing can use any more."""

    def __init__(self, checkpoint_dir: Path, keep: int, max_retry: int) -> None:
        self.checkpoint_dir, self.keep, self.max_retry = checkpoint_dir, keep, max_retry
        self.refused = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)  # before the ranking: see the module docstring
        # Trials added from earlier studies (warm start) have no checkpoint here: they take no place.
        ran_here = TrialsView(study, lambda t: not warm_started(t))
        best = {t.checkpoint for t in ranked_trials(ran_here)[: self.keep] if t.checkpoint}
        gone = doomed(trials, best, self.max_retry)
        if not gone or self.refused:
            return
        try:
            folder = checkpoints.study_folder(self.checkpoint_dir, study.study_name)
        except HpopipeError as err:  # a planted link: never delete through it; cleanup says so too
            log.warning("not deleting finished trials' checkpoints: %s", err)
            self.refused = True
            return
        try:
            deleted, freed = checkpoints.discard(folder, gone)
        except OSError as err:  # scratch space is a courtesy: failing to free it never fails the sweep
            log.warning("could not delete finished trials' checkpoints in %s: %s", folder, err)
            return
        if deleted:
            log.debug("scratch: deleted %d checkpoint file(s), %d bytes", deleted, freed)


def scratch_bound(params: Params) -> ScratchBound:
    """The hook for this sweep's settings."""
    return ScratchBound(params.hpo.checkpoint_dir, kept_best(params), params.hpo.max_retry)
