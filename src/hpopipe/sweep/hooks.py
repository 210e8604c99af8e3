"""What runs after every trial: progress lines, graceful stops, backups, the scratch bound, user hooks."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe import metrics, workspace
from hpopipe.config import Params
from hpopipe.plugins import load_callable
from hpopipe.sweep.backup import backup_sqlite
from hpopipe.sweep.scratch import scratch_bound

log = logging.getLogger(__name__)
Callback = Callable[[optuna.Study, FrozenTrial], None]


class TrialLogger:
    """One line per finished trial, and a line for each new best with its improvement.

    "Best" is the study's, not this process's: a resumed sweep or another worker may hold a
    better (or equal) trial already, and only a strictly better value is a new best.
    """

    def __init__(self, metric: str) -> None:
        self.metric = metric  # a single-objective sweep's metric: better is its direction in the catalogue

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if len(study.directions) > 1:  # trial.value and study.direction raise for several objectives
            self._log_values(trial)
            return
        reason = trial.user_attrs.get("fail_reason", "")
        value = "" if trial.value is None else f" value={trial.value:.6g}"
        log.info("trial %d %s%s%s", trial.number, trial.state.name, value, f" ({reason})" if reason else "")
        if trial.state != TrialState.COMPLETE or trial.value is None or math.isnan(trial.value):
            return
        best = self._best_before(study, trial)
        if best is None or metrics.is_better(self.metric, trial.value, best):
            gain = "" if best is None else f" ({trial.value - best:+.6g})"
            log.info("new best: trial %d, %.6g%s", trial.number, trial.value, gain)

    def _best_before(self, study: optuna.Study, trial: FrozenTrial) -> float | None:
        """The best value among the study's other COMPLETE trials (None if there is none)."""
        best: float | None = None
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            value = other.value
            if other.number == trial.number or value is None or math.isnan(value):
                continue
            if best is None or metrics.is_better(self.metric, value, best):
                best = value
        return best

    @staticmethod
    def _log_values(trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get("fail_reason", "")
        values = (
            "" if trial.values is None else " values=(" + ", ".join(f"{v:.6g}" for v in trial.values) + ")"
        )
        log.info("trial %d %s%s%s", trial.number, trial.state.name, values, f" ({reason})" if reason else "")


def after_trial_hooks(
    params: Params, storage_path: Path | None, stop: Callable[[], bool] | None
) -> list[Callback]:
    """The callbacks a sweep runs after each trial, built-in ones first, then ``hpo.callbacks``.

    ``storage_path`` is the SQLite file to back up (``hpo.backup_dir``); None for other storages.
    """
    hooks: list[Callback] = [TrialLogger(params.hpo.metric)]
    if stop is not None:
        # A signal between two trials: do not start the next one.
        hooks.append(lambda study, trial: study.stop() if stop() else None)
    if params.hpo.backup_dir is not None and storage_path is not None:
        source = storage_path
        backup_dir = workspace.state_path(params.hpo.backup_dir)  # not in a DVC experiment's copy

        def backup(study: optuna.Study, trial: FrozenTrial) -> None:
            backup_sqlite(source, backup_dir)

        hooks.append(backup)
    hooks.append(scratch_bound(params))  # before user hooks: they see scratch as bounded
    hooks += [load_callable(ref, "hpo.callbacks") for ref in params.hpo.callbacks]
    return hooks
