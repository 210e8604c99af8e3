"""The objective one trial runs: sample, seed by sweep position, train, score."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna

from hpopipe.config import Params
from hpopipe.sweep import objectives, pareto
from hpopipe.sweep.recovery import CHECKPOINT, INTERRUPTED, RETRY_OF, mark_interrupted
from hpopipe.sweep.sampling import pruning_steps
from hpopipe.sweep.trial_steps import (
    INTERMEDIATE,
    Reports,
    run_name,
    sample_trial,
    tracked_values,
)
from hpopipe.sweep.warm_start import REUSED_FROM, Reuse, Reused
from hpopipe.tracking import NullTracker
from hpopipe.training import checkpoints
from hpopipe.training.loop import FitResult, TrainingInterrupted, fit
from hpopipe.training.split import SweepData


class Objective:
    """Train one trial on the fit rows and return its best validation score."""

    def __init__(
        self,
        params: Params,
        data: SweepData,
        study: str,
        tracker: NullTracker,
        stop: Callable[[], bool] | None = None,
        reuse: Reuse | None = None,
    ) -> None:
        self.params, self.data, self.study = params, data, study
        self.tracker, self.stop, self.reuse = tracker, stop, reuse

    def stopped(self) -> bool:
        """True once a graceful stop was requested."""
        return self.stop is not None and self.stop()

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        sampled, seed = sample_trial(trial, self.params)
        phash = checkpoints.params_hash(sampled, seed)
        trial.set_user_attr(CHECKPOINT, phash)
        reused = self.reuse.find(sampled) if self.reuse is not None else None
        if reused is not None:  # trained before, by an earlier study with the same setting and code
            return self._take(trial, sampled, reused)
        state, started = "FAIL", time.perf_counter()
        pruned: optuna.TrialPruned | None = None
        reports = Reports(trial, pruning_steps(self.params))
        values: float | tuple[float, ...] | None = None
        with self.tracker.run(run_name(trial.number), params=sampled, nested=True):
            try:
                result = self._fit(trial, sampled, seed, phash, _pruning_reporter(reports))
                reports.flush()
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
                reports.flush()
                self.tracker.end_as_killed()
                mark_interrupted(trial.study, trial, f"{INTERRUPTED}: {err}")
            except Exception as err:
                trial.set_user_attr("fail_reason", f"{type(err).__name__}: {err}"[:500])
                raise
            finally:
                self.tracker.set_tags({"state": state, "trial": str(trial.number)})
                self.tracker.log_series(INTERMEDIATE, reports.reported)
                self.tracker.log_metrics(
                    {
                        "duration_s": time.perf_counter() - started,
                        **tracked_values(self.params, values, reports.reported, state),
                    }
                )
        if pruned is not None:
            raise pruned
        if state == INTERRUPTED or values is None:
            return objectives.interrupted_values(self.params)  # NaN: FAIL, without a traceback
        trial.set_user_attr("best_epoch", result.best_epoch)
        return values

    def _take(
        self, trial: optuna.Trial, sampled: dict[str, Any], reused: Reused
    ) -> float | tuple[float, ...]:
        """An earlier trial's result as this trial's: its curve (for the pruner of later trials),
        best epoch and value(s); never pruned, since its whole run is known."""
        trial.set_user_attr(REUSED_FROM, reused.origin)
        if reused.best_epoch is not None:
            trial.set_user_attr("best_epoch", reused.best_epoch)
        if not pareto.is_multi_objective(self.params):
            for step, value in sorted(reused.intermediate_values.items()):
                trial.report(value, step)
        with self.tracker.run(run_name(trial.number), params=sampled, nested=True):
            self.tracker.set_tags(
                {"state": "COMPLETE", "trial": str(trial.number), REUSED_FROM: reused.origin}
            )
        return reused.values[0] if len(reused.values) == 1 else reused.values

    def _fit(
        self,
        trial: optuna.Trial,
        sampled: dict[str, Any],
        seed: int,
        phash: str,
        reporter: Callable[[int, float], None],
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
            reporter=None if pareto.is_multi_objective(self.params) else reporter,
            checkpoint=checkpoints.trial_checkpoint(self.params.hpo.checkpoint_dir, self.study, phash),
            resume=RETRY_OF in trial.user_attrs,
            should_stop=self.stop,
            on_resume=lambda epoch: trial.set_user_attr("resumed_from_epoch", epoch),
        )


def _pruning_reporter(reports: Reports) -> Callable[[int, float], None]:
    def report(epoch: int, value: float) -> None:
        if reports.report(epoch, value):
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    return report
