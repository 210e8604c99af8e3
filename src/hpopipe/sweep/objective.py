"""The objective one trial runs: sample, seed by sweep position, train, score."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna

from hpopipe.config import Params
from hpopipe.seeding import derive_seed
from hpopipe.space import suggest
from hpopipe.sweep import objectives, pareto
from hpopipe.sweep.recovery import CHECKPOINT, INTERRUPTED, RETRY_OF, mark_interrupted
from hpopipe.sweep.sampling import pruning_steps
from hpopipe.sweep.seeded_sampler import POSITION, sweep_position
from hpopipe.tracking import NullTracker
from hpopipe.training import checkpoints
from hpopipe.training.loop import FitResult, TrainingInterrupted, fit
from hpopipe.training.split import SweepData

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


class Objective:
    """Train one trial on the fit rows and return its best validation score."""

    def __init__(
        self,
        params: Params,
        data: SweepData,
        study: str,
        tracker: NullTracker,
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.params, self.data, self.study = params, data, study
        self.tracker, self.stop = tracker, stop

    def stopped(self) -> bool:
        """True once a graceful stop was requested."""
        return self.stop is not None and self.stop()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        sampled = suggest.suggest(trial, self.params.search_space)
        # Seeded by the trial's place in an uninterrupted run, not its number: a retry
        # inherits its origin's place, and later trials keep theirs despite the extra attempt.
        position = sweep_position(trial.study, trial)
        trial.set_user_attr(POSITION, position)
        seed = derive_seed(self.params.seed, "trial", position)
        phash = checkpoints.params_hash(sampled, seed)
        trial.set_user_attr(CHECKPOINT, phash)
        state, started = "FAIL", time.perf_counter()
        pruned: optuna.TrialPruned | None = None
        reported: list[tuple[int, float]] = []  # the trial's intermediate values, pruned or not
        values: float | tuple[float, ...] | None = None
        with self.tracker.run(run_name(trial.number), params=sampled, nested=True):
            try:
                result = self._fit(trial, sampled, seed, phash, reported)
                self.tracker.log_history(result.history)
                values = objectives.trial_values(
                    self.params,
                    self.data.task,
                    result.model,
                    self.data.val,
                    result.y_scale,
                    result.best_score,
                )
                state = "COMPLETE"
            except optuna.TrialPruned as err:
                state, pruned = "PRUNED", err  # re-raised below: a pruned run finished, it did not fail
            except TrainingInterrupted as err:
                state = INTERRUPTED
                self.tracker.end_as_killed()
                mark_interrupted(trial.study, trial, f"{INTERRUPTED}: {err}")
            except Exception as err:
                trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:500])
                raise
            finally:
                self.tracker.set_tags({"state": state, "trial": str(trial.number)})
                self.tracker.log_series(INTERMEDIATE, reported)
                self.tracker.log_metrics(
                    {
                        "duration_s": time.perf_counter() - started,
                        **tracked_values(self.params, values, reported, state),
                    }
                )
        if pruned is not None:
            raise pruned
        if state == INTERRUPTED or values is None:
            return objectives.interrupted_values(self.params)  # NaN: FAIL, without a traceback
        trial.set_user_attr("best_epoch", result.best_epoch)
        return values

    def _fit(
        self,
        trial: optuna.Trial,
        sampled: dict[str, Any],
        seed: int,
        phash: str,
        reported: list[tuple[int, float]],
    ) -> FitResult:
        return fit(
            self.params.model,
            sampled,
            self.params.train,
            self.data.task,
            self.data.fit,
            self.data.val,
            seed=seed,
            # Optuna refuses intermediate values of a multi-objective trial (it cannot prune one).
            reporter=None
            if pareto.is_multi_objective(self.params)
            else _pruning_reporter(trial, pruning_steps(self.params), reported),
            checkpoint=checkpoints.trial_checkpoint(self.params.hpo.checkpoint_dir, self.study, phash),
            resume=RETRY_OF in trial.user_attrs,
            should_stop=self.stop,
            on_resume=lambda epoch: trial.set_user_attr("resumed_from_epoch", epoch),
        )


def _pruning_reporter(
    trial: optuna.Trial, steps: set[int] | None, reported: list[tuple[int, float]]
) -> Callable[[int, float], None]:
    def report(epoch: int, value: float) -> None:
        trial.report(value, epoch)
        reported.append((epoch, value))
        if (steps is None or epoch in steps) and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    return report
