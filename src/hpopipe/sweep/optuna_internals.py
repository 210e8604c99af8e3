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
- :func:`pin_to_position` (``GPSampler._gprs_cache_list`` and ``_constraints_gprs_cache_list``,
  ``QMCSampler._find_sample_id``): a sampler's proposal must be a function of the study and
  the trial's sweep position alone. GPSampler starts each fit from the kernel parameters of
  the fit before it in this process (a resumed process starts from defaults: the last digits
  differ); it is made to start from defaults every time. QMCSampler takes the next point of
  its sequence from a counter in the study that every attempt advances (a retry shifted every
  later point); :class:`PositionalQMC` takes the point at the trial's sweep position.
- :class:`PositionalGrid` and :class:`PositionalCmaEs` (``GridSampler.before_trial`` gives
  the trial numbered n grid point n; ``CmaEsSampler.sample_relative`` seeds each ask with
  ``rng + trial.number``): both read the trial's number, which a retry shifts; they are
  shown the trial renumbered to its sweep position (:func:`renumbered`).
- :func:`inherit_sampler_state` (``FrozenTrial.system_attrs``, ``_system_attrs``): what a
  sampler wrote on an interrupted attempt (NSGA-II's generation, CMA-ES's solution) is
  copied to its retry, which the sampler never samples for.
- :class:`PositionalSuccessiveHalving` (``SuccessiveHalvingPruner.prune`` reads every trial's
  ``completed_rung_*`` system attributes): an interrupted attempt's rungs would compete with
  its own retry's; the override hides the trials ``counts`` rejects.
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
- :func:`same_trial` (``FrozenTrial.system_attrs``): a trial created from a template whose
  commit looked lost (the connection died) is found before it is created again
  (:mod:`hpopipe.sweep.outage`); a queued retry's parameters are system attributes.
- :func:`write_intermediate_values` (``RDBStorage._set_trial_intermediate_value_without_commit``,
  ``optuna.storages._rdb.storage._create_scoped_session``, ``Trial._cached_frozen_trial``):
  the epochs between a pruner's decision steps are written in one transaction, not one
  commit each; the live trial's cache learns them as ``Trial.report`` would have told it.
- :func:`own_copy` and :func:`set_system_attr` (``FrozenTrial.system_attrs``): the storage's
  read memo (:mod:`hpopipe.sweep.read_memo`) writes this process's writes to a trial into the
  trials it remembers, on a copy whose dicts are its own, as a re-read would return them.
- :data:`TRIAL_DETAIL_OPS` and :data:`CREATE_TRIAL_OP`
  (``optuna.storages.journal._storage.JournalOperation``): the journal's operation codes for a
  running trial's start and details (a parameter, an epoch's value, an attribute), which the
  study journal appends without an ``fsync`` of their own (:mod:`hpopipe.sweep.journal_file`).
- :func:`optimize_loop_window` and :func:`stop_requested` (``Study._stop_flag``,
  ``Study._thread_local.in_optimize_loop``): ``study.stop()`` only works inside
  ``study.optimize``; hpopipe runs its own trial loop and opens the same window
  around the after-trial hooks, so user hooks written for Optuna may call it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Container, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

CHECKED_WITH = "5.0.0"  # the Optuna version this module was last checked against

# Journal operations that only add to a running trial: made durable by the trial's end or the
# next study write, which is synced (a later fsync covers every earlier byte).
TRIAL_DETAIL_OPS = frozenset(
    op.value
    for op in (
        JournalOperation.SET_TRIAL_PARAM,
        JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
        JournalOperation.SET_TRIAL_USER_ATTR,
        JournalOperation.SET_TRIAL_SYSTEM_ATTR,
    )
)
CREATE_TRIAL_OP = JournalOperation.CREATE_TRIAL.value  # a trial from a template carries its "state"


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes through (for an RDB storage, Optuna's cache around it)."""
    storage: optuna.storages.BaseStorage = study._storage
    return storage


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (not its number): what ``BaseStorage`` methods take."""
    return int(trial._trial_id)


def own_copy(trial: FrozenTrial) -> FrozenTrial:
    """A shallow copy of ``trial`` with its own dicts: changing them leaves ``trial`` as it was."""
    new = copy.copy(trial)
    new.params, new.distributions = dict(trial.params), dict(trial.distributions)
    new.user_attrs, new.system_attrs = dict(trial.user_attrs), dict(trial.system_attrs)
    new.intermediate_values = dict(trial.intermediate_values)
    return new


def set_system_attr(trial: FrozenTrial, key: str, value: Any) -> None:
    """Set a system attribute on a (copied) frozen trial, as the storage stores it: through JSON."""
    trial.system_attrs[key] = json.loads(json.dumps(value))


def rdb_of(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage under Optuna's trial cache; ``storage`` itself when it has no cache around it."""
    inner: optuna.storages.BaseStorage = getattr(storage, "_backend", storage)
    return inner


def write_intermediate_values(
    trial: optuna.Trial, points: Sequence[tuple[int, float]], storage: optuna.storages.BaseStorage
) -> bool:
    """Write several intermediate values of the live ``trial`` in one transaction.

    ``storage`` is the RDB storage (or Optuna's cache around one) to write through; False,
    with nothing written, when it is not an RDB storage (a journal): the caller reports the
    values one by one. Steps the trial already holds are overwritten with the same value
    (an upsert, so a retried call is harmless). Afterwards the live trial knows them as if
    ``Trial.report`` had been called for each.
    """
    rdb = rdb_of(storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return False
    from optuna.storages._rdb.storage import _create_scoped_session

    tid = trial_id(trial)
    with _create_scoped_session(rdb.scoped_session, True) as session:
        for step, value in points:
            rdb._set_trial_intermediate_value_without_commit(session, tid, int(step), float(value))
    trial._cached_frozen_trial.intermediate_values.update({int(s): float(v) for s, v in points})
    return True


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


def pin_to_position(sampler: BaseSampler, position: int) -> None:
    """Make ``sampler``'s next proposal depend on nothing but the study and ``position``.

    Called before every trial, after the random states are re-seeded: drops a GP
    sampler's cached fits and points a QMC sampler at the position's point (also inside
    wrapping samplers, as :func:`random_states` finds them).
    """
    if isinstance(sampler, optuna.samplers.GPSampler):
        sampler._gprs_cache_list = None
        sampler._constraints_gprs_cache_list = None
    if isinstance(sampler, Positional):
        sampler.position = position
    for inner in vars(sampler).values():
        if isinstance(inner, BaseSampler):
            pin_to_position(inner, position)


class Positional:
    """A sampler told the sweep position of the trial it is sampling for (by :func:`pin_to_position`)."""

    position = 0


def renumbered(trial: FrozenTrial, number: int) -> FrozenTrial:
    """The same trial (same storage id, attributes and parameters) under another ``number``."""
    twin = copy.copy(trial)
    twin.number = number
    return twin


class PositionalQMC(Positional, optuna.samplers.QMCSampler):
    """``QMCSampler`` whose n-th point is the trial at sweep position n (see the module docstring)."""

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, BaseDistribution]) -> int:
        return self.position


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


class PositionalGrid(Positional, optuna.samplers.GridSampler):
    """``GridSampler`` that gives the trial at sweep position n grid point n (see the module docstring)."""

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().before_trial(study, renumbered(trial, self.position))

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        """Nothing: Optuna's calls ``study.stop()`` once the grid is used up, which raises outside
        ``study.optimize`` (our workers tell there). ``hpo.n_trials`` ends a grid sweep."""


class PositionalCmaEs(Positional, optuna.samplers.CmaEsSampler):
    """``CmaEsSampler`` that seeds each ask by sweep position, not trial number (see the module docstring)."""

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return super().sample_relative(study, renumbered(trial, self.position), search_space)


def inherit_sampler_state(study: optuna.Study, retry: FrozenTrial, origin: FrozenTrial) -> None:
    """Give a retry queued with its origin's parameters what the sampler wrote on the origin (its
    generation, grid point, CMA-ES solution...), in the storage and on ``retry`` itself.

    Such a retry is never sampled for, so the sampler writes nothing on it: NSGA-II then
    counted one member short in its generation, CMA-ES told one solution fewer, and every
    later trial moved. A retry queued without parameters is sampled as usual and inherits
    nothing.
    """
    if not retry.system_attrs.get("fixed_params"):
        return
    storage = storage_of(study)
    for key, value in origin.system_attrs.items():
        # Not the parameters it was queued with, not a pruner's record (successive halving's
        # rungs: the retry replays its epochs and earns them again), and not what TPE and GP
        # note as a running trial's proposal (they would count it as a pending point).
        if key == "fixed_params" or key.startswith("completed_rung_") or ":relative_params" in key:
            continue
        if key not in retry.system_attrs:
            storage.set_trial_system_attr(trial_id(retry), key, value)
            retry._system_attrs[key] = value


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
    """A study that shows only the trials ``keep`` accepts (writes go to the study as usual)."""

    def __init__(self, study: optuna.Study, keep: Callable[[FrozenTrial], bool]) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=study.sampler)
        self._keep = keep

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if self._keep(t)]

    def _get_best_trial(self, deepcopy: bool) -> FrozenTrial:
        complete = self._get_trials(deepcopy=deepcopy, states=(TrialState.COMPLETE,))
        if not complete:
            raise ValueError("no COMPLETE trial in the view")
        pick = max if self.direction == optuna.study.StudyDirection.MAXIMIZE else min
        return pick(complete, key=lambda t: (float(t.value or 0.0), -t.number))


class PositionalSuccessiveHalving(optuna.pruners.SuccessiveHalvingPruner):
    """``SuccessiveHalvingPruner`` that compares a trial only with the trials ``counts`` accepts.

    ``counts`` rejects interrupted attempts: a retry replays its origin's epochs and
    rungs, and must not also compete with the origin's (see the module docstring).
    """

    def __init__(
        self,
        min_resource: int,
        reduction_factor: int,
        min_early_stopping_rate: int,
        counts: Callable[[FrozenTrial], bool],
    ) -> None:
        super().__init__(min_resource, reduction_factor, min_early_stopping_rate)
        self._counts = counts

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return bool(super().prune(TrialsView(study, self._counts), trial))


def queued_params(trial: FrozenTrial) -> dict[str, object]:
    """The parameters a trial runs with: ``params``, or for a queued trial those it was queued with."""
    if trial.state != TrialState.WAITING:
        return dict(trial.params)
    return dict(trial.system_attrs.get("fixed_params", {}))


def same_trial(trial: FrozenTrial, template: FrozenTrial) -> bool:
    """Whether ``trial`` holds what creating ``template`` writes (its number and id aside)."""
    return (
        trial.state == template.state
        and trial.params == template.params
        and trial.user_attrs == template.user_attrs
        and trial.system_attrs == template.system_attrs
        and trial.values == template.values
        and trial.intermediate_values == template.intermediate_values
        and trial.datetime_start == template.datetime_start
        and trial.datetime_complete == template.datetime_complete
    )
