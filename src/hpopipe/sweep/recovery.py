"""Keeping a sweep alive: reproducible sampling across restarts, graceful stops, backups, retries.

A sweep is hours of compute. These pieces make sure a kill, a signal or a
bad disk never loses it, and that a resumed sweep proposes exactly what an
uninterrupted one would have.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

from hpopipe.atomic import temp_path
from hpopipe.errors import HpopipeError
from hpopipe.seeding import derive_seed

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # user attribute on trials killed or stopped by a signal
CRASHES = "crashes"  # user attribute: how many times this configuration's worker died (hpo.max_retry)


def sampler_position(study: optuna.Study, number: int) -> int:
    """How many sampler draws a straight run would have made before trial ``number``.

    Trials that died to a kill or a signal do not count: their retry (which
    reuses their parameters) takes their place.
    """
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.number < number and not (t.state == TrialState.FAIL and t.user_attrs.get(INTERRUPTED))
    )


def _random_states(sampler: BaseSampler) -> list[LazyRandomState]:
    """Every random state a sampler (and the fallback samplers inside it) draws from."""
    states = [v for v in vars(sampler).values() if isinstance(v, LazyRandomState)]
    for inner in vars(sampler).values():
        if isinstance(inner, BaseSampler):
            states += _random_states(inner)
    return states


class SeededSampler(BaseSampler):
    """Wraps a sampler and re-seeds its random state before every trial.

    The seed is derived from the study seed and the trial's position in an
    uninterrupted run, so the sampler's state is a pure function of the study's
    history: a sweep killed after trial 4 and resumed proposes the same
    parameter sets as one that ran straight through, with no pickled sampler
    to save or trust.
    """

    def __init__(self, base: BaseSampler, seed: int) -> None:
        self.base, self.seed = base, seed

    def _reseed(self, position: int) -> None:

        for index, rng in enumerate(_random_states(self.base)):
            rng.rng.seed(derive_seed(self.seed, "sampler", position, index))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._reseed(sampler_position(study, trial.number))
        self.base.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


class GracefulStop:
    """Turns SIGINT/SIGTERM into a request the training loop honours after its epoch.

    The running trial saves its checkpoint, is failed as interrupted with a
    retry queued, and the stage writes its exports before exiting 128+signum.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: stopping after the current epoch", signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """Install the handlers for the duration of the block."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        """Shell convention for death by signal; 0 when no signal came."""
        return 128 + self.signum if self.signum is not None else 0


def mark_interrupted(study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str) -> None:
    """Record why a trial stopped and queue a retry with the same parameters."""
    frozen = study._storage.get_trial(trial._trial_id)
    study._storage.set_trial_user_attr(frozen._trial_id, INTERRUPTED, True)
    study._storage.set_trial_user_attr(frozen._trial_id, "fail_reason", reason)
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


def backup_sqlite(source: Path, target_dir: Path) -> Path | None:
    """Copy a live SQLite study consistently (online backup API) into ``target_dir``.

    A failed backup is a warning, never a failed trial: returns None.
    """
    target = target_dir / source.name
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with temp_path(target) as tmp:
            _sqlite_copy(source, tmp)
    except (OSError, sqlite3.Error) as err:
        log.warning("backup of %s to %s failed: %s", source, target_dir, err)
        return None
    return target


def _sqlite_copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


def restore_sqlite(backup_dir: Path, target: Path) -> Path | None:
    """Bring a backed-up study file back; the current one is kept beside it first."""
    source = backup_dir / target.name
    if not source.is_file():
        raise HpopipeError(f"--from: {backup_dir}: no {target.name} in it")
    try:
        _sqlite_copy(source, backup_dir / f".{target.name}.check")  # refuses a corrupt file
    except sqlite3.Error as err:
        raise HpopipeError(f"--from: {source}: not a readable SQLite study ({err})") from None
    finally:
        (backup_dir / f".{target.name}.check").unlink(missing_ok=True)
    kept = None
    if target.exists():
        kept = target.with_name(f"{target.name}.before-restore")
        shutil.copy2(target, kept)
    target.parent.mkdir(parents=True, exist_ok=True)
    with temp_path(target) as tmp:
        _sqlite_copy(source, tmp)
    return kept


def backup_name(study_name: str, storage: str | optuna.storages.BaseStorage) -> str:
    """The next free ``<name>_backup-<n>`` in a storage."""
    existing = set(optuna.study.get_all_study_names(storage))
    n = 0
    while f"{study_name}_backup-{n}" in existing:
        n += 1
    return f"{study_name}_backup-{n}"


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
