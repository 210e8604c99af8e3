"""Reproducible sampling across restarts: a sampler re-seeded before every trial.

A resumed sweep must propose exactly what an uninterrupted one would have,
without a pickled sampler to save or trust: the sampler's random state is made
a pure function of the study seed and the trial's place in a straight run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from hpopipe.seeding import derive_seed
from hpopipe.sweep.budget import warm_started
from hpopipe.sweep.optuna_internals import (
    all_trials,
    inherit_sampler_state,
    pin_to_position,
    random_states,
    storage_of,
    trial_id,
)
from hpopipe.sweep.recovery import INTERRUPTED, RETRY_OF

POSITION = "position"  # user attribute: the trial's place in an uninterrupted sweep


def replaced(trial: FrozenTrial) -> bool:
    """An attempt stopped by a kill or a signal: its retry takes its place in the sweep."""
    return trial.state == TrialState.FAIL and bool(trial.user_attrs.get(INTERRUPTED))


def sweep_position(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> int:
    """The trial's place in an uninterrupted run of this sweep (0, 1, 2, ...).

    A retry inherits its origin's place (its ``position`` attribute). Otherwise it is the
    number of earlier trials that hold a place, counted over the whole study, never over
    the bracket-filtered view Optuna hands a sampler under Hyperband (which counted 0, 1,
    0, ... and so proposed the same configuration twice). Trials added from earlier studies
    (warm start) hold no place: the sweep's first own trial is at 0 with or without them.
    """
    if POSITION in trial.user_attrs:
        return int(trial.user_attrs[POSITION])
    return sum(
        1 for t in all_trials(study) if t.number < trial.number and not replaced(t) and not warm_started(t)
    )


def record_position(study: optuna.Study, trial: FrozenTrial, position: int) -> None:
    """Store the new trial's place as soon as it is known, before anything samples for it.

    Counting it means reading every trial of the study, and under Hyperband Optuna asks for a
    trial's bracket (so its place) on every parameter it samples: once stored, each later
    question is answered from the trial itself. ``trial`` is the live trial's own record, so
    it learns the attribute too.
    """
    storage_of(study).set_trial_user_attr(trial_id(trial), POSITION, position)
    trial.user_attrs[POSITION] = position


def counts(trial: FrozenTrial) -> bool:
    """Whether a pruner may compare against this trial: not an attempt a retry replaced."""
    return not replaced(trial)


def bracket_position(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """Hyperband's view: the trial's sweep position, or None for a replaced attempt or a
    warm-started trial (it ran under another pruner's brackets)."""
    return None if replaced(trial) or warm_started(trial) else sweep_position(study, trial)


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
        for index, rng in enumerate(random_states(self.base)):
            rng.seed(derive_seed(self.seed, "sampler", position, index))
        pin_to_position(self.base, position)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        position = sweep_position(study, trial)
        if POSITION not in trial.user_attrs:
            record_position(study, trial, position)
        self._reseed(position)
        if RETRY_OF in trial.user_attrs:
            origin = int(trial.user_attrs[RETRY_OF])
            inherit_sampler_state(study, trial, next(t for t in all_trials(study) if t.number == origin))
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
