"""Every use of Optuna's private internals, in one place (checked against Optuna 5.0.0).

Optuna's public API does not cover a few things a multi-process, resumable
sweep needs. Each one reaches through a leading underscore, so an Optuna
upgrade may break it without notice; tests/test_optuna_internals.py pins each
behaviour relied on here against the installed Optuna, so such an upgrade fails
there with a message naming the piece, not deep inside a sweep. Nothing else in
hpopipe touches an underscore name of Optuna.

- :func:`storage_of` (``Study._storage``): the workers write trial attributes and
  states through the study's storage directly, for trials that are not their own
  live ``optuna.Trial`` (a dead worker's RUNNING trial), and read a trial fresh
  past the live trial's cache (an objective may have written through the storage).
- :func:`trial_id` (``Trial._trial_id``, ``FrozenTrial._trial_id``): the storage's
  key for a trial; the storage API takes it, and neither trial class exposes it.
- :func:`rdb_of` (``_CachedStorage._backend``): a study wraps its ``RDBStorage``
  in a cache; the PostgreSQL budget lock needs the engine underneath.
- :func:`random_states` (``optuna.samplers._lazy_random_state.LazyRandomState``
  and samplers' private attributes such as ``_rng`` and ``_random_sampler``): the
  sampler is re-seeded before every trial so a resumed sweep proposes what an
  uninterrupted one would; there is no public way to reach a sampler's random
  state (``reseed_rng`` draws a fresh, unreproducible seed).
- :func:`all_trials` (``Study._study_id`` with the storage): under ``HyperbandPruner``
  Optuna hands the sampler a study filtered to the trial's bracket; a trial's place in
  the sweep must be counted over the whole study.
- :class:`PositionalHyperband` (``HyperbandPruner._get_bracket_id``): Optuna assigns a
  bracket by hashing the trial *number*, which a retry shifts; the override hashes the
  trial's sweep position instead, so a resumed sweep keeps every trial's bracket. The base
  method reads nothing of the trial but ``number``.
- :class:`TrialsView` (``Study._get_trials``, ``_get_best_trial``): the hpo stage exports the
  first ``n_trials`` of a study that may hold more; every Study method the exports use
  (``get_trials``, ``trials``, ``best_trials``) reads trials through ``_get_trials``.
- :func:`queued_params` (``FrozenTrial.system_attrs["fixed_params"]``): a queued (WAITING)
  trial's parameters are not in ``params`` until it runs; ``hpopipe resume`` re-queues them.
- :func:`optimize_loop_window` and :func:`stop_requested` (``Study._stop_flag``,
  ``Study._thread_local.in_optimize_loop``): ``study.stop()`` only works inside
  ``study.optimize``; hpopipe runs its own trial loop and opens the same window
  around the after-trial hooks, so user hooks written for Optuna may call it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager

import numpy as np
import optuna
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.trial import FrozenTrial, TrialState

CHECKED_WITH = "5.0.0"  # the Optuna version this module was last checked against


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (for an RDB storage, Optuna's cache around it)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (not its number): what ``BaseStorage`` methods take."""
    return int(trial._trial_id)


def rdb_of(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage under Optuna's trial cache; ``storage`` itself when it has no cache around it."""
    inner: optuna.storages.BaseStorage = getattr(storage, "_backend", storage)
    return inner


def random_states(sampler: BaseSampler) -> list[np.random.RandomState]:
    """Every random state a sampler (and the fallback samplers inside it) draws from.

    In a stable order: the sampler's own states first, then those of each
    sampler it holds, in attribute order (so a re-seed by index is reproducible).
    """
    return [lazy.rng for lazy in _lazy_states(sampler)]


def _lazy_states(sampler: BaseSampler) -> list[LazyRandomState]:
    states = [v for v in vars(sampler).values() if isinstance(v, LazyRandomState)]
    for inner in vars(sampler).values():
        if isinstance(inner, BaseSampler):
            states += _lazy_states(inner)
    return states


@contextmanager
def optimize_loop_window(study: optuna.Study) -> Iterator[None]:
    """Inside the block, ``study.stop()`` works as in ``study.optimize`` (see :func:`stop_requested`)."""
    study._stop_flag = False
    study._thread_local.in_optimize_loop = True
    try:
        yield
    finally:
        study._thread_local.in_optimize_loop = False


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called since the last :func:`optimize_loop_window` opened."""
    return bool(study._stop_flag)


def all_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study, also when ``study`` is Optuna's bracket-filtered view of it."""
    trials: list[FrozenTrial] = storage_of(study).get_all_trials(study._study_id, deepcopy=False)
    return trials


class _AtPosition:
    """What ``HyperbandPruner._get_bracket_id`` reads of a trial: its ``number``."""

    def __init__(self, number: int) -> None:
        self.number = number


# A trial that belongs to no bracket: an interrupted attempt, whose retry takes its place.
NO_BRACKET = -1


class PositionalHyperband(optuna.pruners.HyperbandPruner):
    """``HyperbandPruner`` with brackets by sweep position (see the module docstring).

    ``position`` maps a trial to its place in an uninterrupted sweep, or to None for an
    attempt that a retry replaced: such a trial sits in no bracket, so no bracket's
    successive halving compares against its partial curve.
    """

    def __init__(
        self,
        min_resource: int,
        max_resource: int,
        reduction_factor: int,
        position: Callable[[optuna.Study, FrozenTrial], int | None],
    ) -> None:
        super().__init__(min_resource, max_resource, reduction_factor)
        self._position = position

    def _get_bracket_id(self, study: optuna.Study, trial: FrozenTrial) -> int:
        position = self._position(study, trial)
        if position is None:
            return NO_BRACKET
        bracket: int = super()._get_bracket_id(study, _AtPosition(position))  # type: ignore[arg-type]
        return bracket


class TrialsView(optuna.Study):
    """A read-only study that shows only the trials whose numbers are in ``keep``."""

    def __init__(self, study: optuna.Study, keep: frozenset[int]) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=study.sampler)
        self._keep = keep

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if t.number in self._keep]

    def _get_best_trial(self, deepcopy: bool) -> FrozenTrial:
        complete = self._get_trials(deepcopy=deepcopy, states=(TrialState.COMPLETE,))
        if not complete:
            raise ValueError("no COMPLETE trial in the view")
        pick = max if self.direction == optuna.study.StudyDirection.MAXIMIZE else min
        return pick(complete, key=lambda t: (float(t.value or 0.0), -t.number))


def queued_params(trial: FrozenTrial) -> dict[str, object]:
    """The parameters a trial runs with: ``params``, or for a queued trial those it was queued with."""
    if trial.state != TrialState.WAITING:
        return dict(trial.params)
    return dict(trial.system_attrs.get("fixed_params", {}))
