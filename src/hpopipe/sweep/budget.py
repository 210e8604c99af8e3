"""The trial budget: which trials count toward ``hpo.n_trials``, and when it is met.

One owner for the rule, so the worker loop, the sweep's plan and end, the status
table and the summaries can never disagree about whether a sweep is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

# Counted toward hpo.n_trials: a pruned trial used its share of the budget too.
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# User attribute of a trial copied from an earlier study when this one began (warm start):
# ``"<study>#<number>"``. It was not run by this sweep, so it never counts toward the budget.
WARM_START_FROM = "warm_start_from"
WARM_STARTED = "warm_started"  # study user attribute: how many trials the warm start added (once)
REUSED_FROM = "reused_from"  # trial user attribute: the earlier trial whose result this one took


def warm_started(trial: FrozenTrial) -> bool:
    """A trial added from an earlier study: knowledge for the sampler, not one of this sweep's runs."""
    return WARM_START_FROM in trial.user_attrs


def own(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials this sweep ran itself: all but the warm-started ones."""
    return [t for t in trials if not warm_started(t)]


def count_finished(trials: Iterable[FrozenTrial]) -> int:
    """How many of ``trials`` count toward the budget (warm-started trials never do)."""
    return sum(t.state in FINISHED for t in own(trials))


def count_finished_states(counts: Mapping[str, int]) -> int:
    """How many trials count toward the budget, given trial counts by state name (``"COMPLETE"``: 3)."""
    return sum(counts.get(s.name, 0) for s in FINISHED)


def finished_in(study: optuna.Study) -> int:
    """How many of the study's trials count toward the budget."""
    return count_finished(study.get_trials(deepcopy=False, states=FINISHED))


def budget_met(done: int, n_trials: int) -> bool:
    """True once ``done`` counted trials fill a budget of ``n_trials``."""
    return done >= n_trials


def first_positions(
    trials: Iterable[FrozenTrial], n_trials: int, position: Callable[[FrozenTrial], int]
) -> set[int]:
    """Numbers of the trials in the sweep's first ``n_trials`` counted places, and of every
    attempt at those places (a failed or interrupted one too).

    A study can hold more than the budget (an experiment ran with a larger ``n_trials``); what
    the hpo stage exports must depend on ``n_trials`` alone, so it keeps the places up to the
    ``n_trials``-th counted trial, in sweep order.
    """
    trials = list(trials)
    counted = sorted(position(t) for t in trials if t.state in FINISHED)
    if len(counted) <= n_trials:
        return {t.number for t in trials}
    last = counted[n_trials - 1]
    return {t.number for t in trials if position(t) <= last}
