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


def count_finished(trials: Iterable[FrozenTrial]) -> int:
    """How many of ``trials`` count toward the budget."""
    return sum(t.state in FINISHED for t in trials)


def count_finished_states(counts: Mapping[str, int]) -> int:
    """How many trials count toward the budget, given trial counts by state name (``"COMPLETE"``: 3)."""
    return sum(counts.get(s.name, 0) for s in FINISHED)


def finished_in(study: optuna.Study) -> int:
    """How many of the study's trials count toward the budget."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


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
