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
from hpopipe.sweep.optuna_internals import storage_of, trial_id

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # user attribute on trials killed or stopped by a signal
CRASHES = "crashes"  # user attribute: how many times this configuration's worker died (hpo.max_retry)


def mark_interrupted(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Record why a trial stopped and queue a retry with the same parameters."""
    storage = storage_of(study)
    frozen = storage.get_trial(trial_id(trial))
    storage.set_trial_user_attr(trial_id(frozen), INTERRUPTED, True)
    storage.set_trial_user_attr(trial_id(frozen), "fail_reason", reason)
    study.enqueue_trial(frozen.params, user_attrs=retry_attrs(frozen), skip_if_exists=False)


def retry_attrs(trial: FrozenTrial, crashes: int | None = None) -> dict[str, Any]:
    """User attributes of a retry: where it came from, its place in a straight run, deaths so far.

    ``retry_of`` and ``position`` point at the first attempt, so a retry of a
    retry still derives the same seed and finds the same checkpoint.
    """
    attrs: dict[str, Any] = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
    if "position" in trial.user_attrs:
        attrs["position"] = trial.user_attrs["position"]
    crashes = int(trial.user_attrs.get(CRASHES, 0)) if crashes is None else crashes
    if crashes:
        attrs[CRASHES] = crashes
    return attrs


def retry_states(
    study_name: str, storage: str | optuna.storages.BaseStorage, states: Sequence[TrialState]
) -> tuple[str, int]:
    """Back the study up, then rebuild it with the trials in ``states`` re-enqueued.

    The rebuilt study keeps every other finished trial as it was; the chosen
    ones run again (as retries of the originals, so their checkpoints are
    found) the next time the sweep runs.

    Returns:
        (the backup's name, how many trials were re-enqueued)
    """
    try:
        old = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise HpopipeError(f"--study: no study named {study_name!r} in {storage}") from None
    backup = backup_name(study_name, storage)
    optuna.copy_study(
        from_study_name=study_name, from_storage=storage, to_storage=storage, to_study_name=backup
    )
    trials = old.get_trials(deepcopy=True)
    keep = [t for t in trials if t.state.is_finished() and t.state not in states]
    # Queued trials are queued again; trials left RUNNING by a dead worker are retried too.
    again = [t for t in trials if t.state in states or not t.state.is_finished()]
    optuna.delete_study(study_name=study_name, storage=storage)
    new = optuna.create_study(study_name=study_name, storage=storage, directions=old.directions)
    new.add_trials(keep)
    for trial in again:
        new.enqueue_trial(trial.params, user_attrs=retry_attrs(trial), skip_if_exists=False)
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
