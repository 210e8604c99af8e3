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
from hpopipe.sweep.optuna_internals import storage_of, write_intermediate_values
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
    if trial.user_attrs.get(POSITION) != position:  # the sampler stored it already (record_position)
        trial.set_user_attr(POSITION, position)
    return sampled, derive_seed(params.seed, "trial", position)


def report_and_decide(trial: optuna.Trial, steps: set[int] | None, step: int, value: float) -> bool:
    """Report an intermediate value; True when the configured pruner says stop.

    ``steps`` are the steps at which the pruner can decide (None: every one, see
    :func:`hpopipe.sweep.sampling.pruning_steps`); elsewhere it is not asked.
    """
    trial.report(value, step)
    return (steps is None or step in steps) and trial.should_prune()


class Reports:
    """A trial's intermediate values, written to the study when a pruner can use them.

    At a step where the pruner decides (every step, for pruners that may decide at any), the
    value goes through ``Trial.report`` and the pruner is asked at once. Values in between
    wait, and are written in one transaction just before the next decision step's, or by
    :meth:`flush` when the trial ends: under the default Hyperband pruner (decision steps
    1, 3, 9, 27, …) a trial costs a few commits instead of one per epoch. Nothing reads a
    running trial's in-between values: successive halving looks only at its rung steps, and
    the exports, the report and warm start read finished trials. A trial killed before its
    flush loses them with the trial, which is retried from its checkpoint and reports again.
    """

    def __init__(self, trial: optuna.Trial, steps: set[int] | None) -> None:
        self.trial, self.steps = trial, steps
        self.reported: list[tuple[int, float]] = []  # every (step, value), written or waiting
        self.pending: list[tuple[int, float]] = []  # those not written yet

    def report(self, step: int, value: float) -> bool:
        """Record ``value`` at ``step``; True when the configured pruner says stop."""
        self.reported.append((step, value))
        if self.steps is not None and step not in self.steps:
            self.pending.append((step, value))
            return False
        self.flush()
        return report_and_decide(self.trial, self.steps, step, value)

    def flush(self) -> None:
        """Write the values still waiting (one transaction on an RDB storage)."""
        if not self.pending:
            return
        points, self.pending = self.pending, []
        storage = storage_of(self.trial.study)
        batched = getattr(storage, "set_trial_intermediate_values", None)  # RetryingStorage's, with retries
        if batched is not None:
            written = batched(self.trial, points)
        else:
            written = write_intermediate_values(self.trial, points, storage)
        if not written:
            for step, value in points:
                self.trial.report(value, step)
