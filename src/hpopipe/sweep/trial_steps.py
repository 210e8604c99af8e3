"""The steps of one trial that need no training code: its parameters and seed, its reports and
pruning decisions, and how MLflow names and scores its run.

hpopipe's own objective (:mod:`hpopipe.sweep.objective`) and external training code
(:mod:`hpopipe.sweep.external`, the ``hpopipe trial`` verbs) share them; kept apart from the
objective so that a process that trains nothing itself never imports torch.
"""

from __future__ import annotations

from typing import Any

import optuna

from hpopipe.config import Params, SweepParams
from hpopipe.seeding import derive_seed
from hpopipe.space import suggest
from hpopipe.sweep.seeded_sampler import POSITION, sweep_position

INTERMEDIATE = "intermediate_value"  # the MLflow step series of what a trial reported to Optuna, per epoch


def run_name(number: int) -> str:
    """A trial's MLflow run name: ``trial-0007`` (zero-padded, so sorting by name is by number)."""
    return f"trial-{number:04d}"


def tracked_values(
    params: Params,
    values: float | tuple[float, ...] | None,
    reported: list[tuple[int, float]],
    state: str,
) -> dict[str, float]:
    """The trial's value as Optuna records it, as MLflow metrics a user can sort runs by.

    ``value`` is what the objective returned (the best epoch's score, not the last epoch's)
    for a COMPLETE trial, and the last reported intermediate value for a PRUNED one (what
    Optuna stores as its value). A multi-objective trial also gets ``value_<objective>``.
    """
    if state == "PRUNED" and reported:
        return {"value": float(reported[-1][1])}
    if values is None:
        return {}
    if isinstance(values, tuple):
        named = {f"value_{name}": float(v) for name, v in zip(params.hpo.objectives, values, strict=True)}
        return {"value": float(values[0]), **named}
    return {"value": float(values)}


def sample_trial(trial: optuna.Trial, params: SweepParams) -> tuple[dict[str, Any], int]:
    """A trial's parameters from the configured space, and its seed: by its place in the sweep.

    Seeded by the trial's place in an uninterrupted run, not its number: a retry
    inherits its origin's place, and later trials keep theirs despite the extra attempt.
    """
    sampled = suggest.suggest(trial, params.search_space)
    position = sweep_position(trial.study, trial)
    trial.set_user_attr(POSITION, position)
    return sampled, derive_seed(params.seed, "trial", position)


def report_and_decide(trial: optuna.Trial, steps: set[int] | None, step: int, value: float) -> bool:
    """Report an intermediate value; True when the configured pruner says stop.

    ``steps`` are the steps at which the pruner can decide (None: every one, see
    :func:`hpopipe.sweep.sampling.pruning_steps`); elsewhere it is not asked.
    """
    trial.report(value, step)
    return (steps is None or step in steps) and trial.should_prune()
