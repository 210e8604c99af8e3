"""Retrying trials: the interrupted and crash attributes, retries of stopped trials, resume and fresh.

A sweep is hours of compute. A trial stopped by a kill or a signal is retried
with the same parameters (and finds its checkpoint); ``hpopipe resume`` reruns
chosen states; ``hpo.fresh`` starts over with the old study kept as a backup.
Reproducible sampling lives in :mod:`hpopipe.sweep.seeded_sampler`, the graceful
stop in :mod:`hpopipe.sweep.signals`, backups in :mod:`hpopipe.sweep.backup`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe.errors import HpopipeError
from hpopipe.sweep.backup import backup_name
from hpopipe.sweep.lifecycle import refuse_while_running
from hpopipe.sweep.optuna_internals import queued_params, storage_of, trial_id

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # user attribute on trials killed or stopped by a signal
CRASHES = "crashes"  # user attribute: how many times this configuration's worker died (hpo.max_retry)
CHECKPOINT = "checkpoint"  # user attribute: the name of the trial's checkpoint file
RETRY_OF = "retry_of"  # user attribute: the number of the first attempt a retry repeats


def mark_interrupted(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Record why a trial stopped and queue a retry with the same parameters."""
    storage = storage_of(study)
    frozen = storage.get_trial(trial_id(trial))
    storage.set_trial_user_attr(trial_id(frozen), INTERRUPTED, True)
    storage.set_trial_user_attr(trial_id(frozen), "fail_reason", reason)
    queue_retry(study, frozen, retry_attrs(frozen))


def queue_retry(study: optuna.Study, trial: FrozenTrial, attrs: dict[str, Any]) -> None:
    """Queue a retry of ``trial``: with its parameters, so that it finds the trial's checkpoint.

    An attempt stopped before all its parameters were written (killed between two parameter
    writes) is queued without any: the sampler is a function of the study and the sweep
    position, so it proposes the same configuration in full, where fixing the part already
    written made it draw the rest from another random state (or, for GP, condition on it).
    """
    params = queued_params(trial)
    if params and not _cut_short(trial, study.get_trials(deepcopy=False)):
        study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)
    else:  # a plain queued trial: no fixed parameters, so every sampler samples it as usual
        study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=attrs))


def _cut_short(trial: FrozenTrial, trials: list[FrozenTrial]) -> bool:
    """Whether ``trial`` lacks a parameter that every finished trial of the sweep has.

    Conditional parameters are in some trials only, so they never count as missing.
    """
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if not finished:
        return False
    always = set.intersection(*(set(t.params) for t in finished))
    return not always <= set(queued_params(trial))


def retry_attrs(trial: FrozenTrial, crashes: int | None = None) -> dict[str, Any]:
    """User attributes of a retry: where it came from, its place in a straight run, deaths so far.

    ``retry_of`` and ``position`` point at the first attempt, so a retry of a
    retry still derives the same seed and finds the same checkpoint.
    """
    attrs: dict[str, Any] = {RETRY_OF: trial.user_attrs.get(RETRY_OF, trial.number)}
    if "position" in trial.user_attrs:
        attrs["position"] = trial.user_attrs["position"]
    crashes = int(trial.user_attrs.get(CRASHES, 0)) if crashes is None else crashes
    if crashes:
        attrs[CRASHES] = crashes
    return attrs


def to_retry(trials: Sequence[FrozenTrial], states: Sequence[TrialState]) -> list[FrozenTrial]:
    """The attempts to run again: the latest attempt of each configuration, when it is in ``states``
    (or RUNNING, left so by a dead worker).

    An earlier attempt whose retry already finished is history, not work: re-queuing it ran
    the same configuration twice. A configuration whose retry is queued already waits for it.
    """
    latest: dict[int, FrozenTrial] = {}
    for trial in trials:
        origin = int(trial.user_attrs.get(RETRY_OF, trial.number))
        if origin not in latest or trial.number > latest[origin].number:
            latest[origin] = trial
    again = [t for t in latest.values() if t.state in states or t.state == TrialState.RUNNING]
    return sorted(again, key=lambda t: t.number)


def retry_states(study: optuna.Study, states: Sequence[TrialState], grace_s: float) -> tuple[str | None, int]:
    """Back the study up, then rebuild it with the latest attempts in ``states`` re-enqueued.

    The rebuilt study keeps every other finished trial as it was; the chosen
    ones run again (as retries of the originals, so their checkpoints are
    found) the next time the sweep runs. Refused while a worker runs the sweep;
    with nothing to retry nothing is written.

    Returns:
        (the backup's name, or None when nothing was retried; how many trials were re-enqueued)
    """
    refuse_while_running(study, grace_s, "hpopipe resume")
    trials = study.get_trials(deepcopy=True)
    again = to_retry(trials, states)
    if not again:
        return None, 0
    name, storage = study.study_name, storage_of(study)
    backup = backup_name(name, storage)
    optuna.copy_study(from_study_name=name, from_storage=storage, to_storage=storage, to_study_name=backup)
    retried = {t.number for t in again}
    keep = [t for t in trials if t.state.is_finished() and t.number not in retried]
    # Read before the delete: the sweep's lifecycle and worker records, the objectives' names.
    attrs, metric_names, directions = study.user_attrs, study.metric_names, study.directions
    optuna.delete_study(study_name=name, storage=storage)
    new = optuna.create_study(study_name=name, storage=storage, directions=directions)
    for key, value in attrs.items():
        new.set_user_attr(key, value)
    if metric_names:
        new.set_metric_names(metric_names)
    new.add_trials(keep)
    waiting = [t for t in trials if t.state == TrialState.WAITING]  # queued before: queued again
    for trial in sorted([*waiting, *again], key=lambda t: t.number):
        queue_retry(new, trial, retry_attrs(trial))
    return backup, len(again)


def start_fresh(
    study_name: str, storage: str | optuna.storages.BaseStorage, checkpoint_dir: Path
) -> str | None:
    """``hpo.fresh``: move the study aside as a backup and drop its checkpoints."""
    if study_name not in optuna.study.get_all_study_names(storage):
        return None
    backup = backup_name(study_name, storage)
    optuna.copy_study(
        from_study_name=study_name, from_storage=storage, to_storage=storage, to_study_name=backup
    )
    optuna.delete_study(study_name=study_name, storage=storage)
    if checkpoint_dir.is_dir():
        shutil.rmtree(checkpoint_dir)
    log.info("hpo.fresh: study %s moved to %s; starting over", study_name, backup)
    return backup


def parse_states(text: str) -> list[TrialState]:
    """``fail,pruned`` -> [TrialState.FAIL, TrialState.PRUNED], naming a bad entry."""
    allowed = {"fail": TrialState.FAIL, "pruned": TrialState.PRUNED, "complete": TrialState.COMPLETE}
    out = []
    for item in (s.strip().lower() for s in text.split(",") if s.strip()):
        if item not in allowed:
            raise HpopipeError(f"--states: {item!r} is not one of {', '.join(allowed)}")
        out.append(allowed[item])
    if not out:
        raise HpopipeError("--states: name at least one state")
    return out
