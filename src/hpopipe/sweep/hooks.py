"""What runs after every trial (progress lines, graceful stops, backups, the scratch bound, user
hooks, new-best hooks) and once when the sweep ends (``hpo.on_sweep_end``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe import metrics, workspace
from hpopipe.config import Params, SweepParams
from hpopipe.plugins import load_callable
from hpopipe.sweep.backup import backup_study
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
        found, best = new_best(study, trial, self.metric)
        if found and trial.value is not None:
            gain = "" if best is None else f" ({trial.value - best:+.6g})"
            log.info("new best: trial %d, %.6g%s", trial.number, trial.value, gain)

    @staticmethod
    def _log_values(trial: FrozenTrial) -> None:
        reason = trial.user_attrs.get("fail_reason", "")
        values = (
            "" if trial.values is None else " values=(" + ", ".join(f"{v:.6g}" for v in trial.values) + ")"
        )
        log.info("trial %d %s%s%s", trial.number, trial.state.name, values, f" ({reason})" if reason else "")


def new_best(study: optuna.Study, trial: FrozenTrial, metric: str) -> tuple[bool, float | None]:
    """Whether ``trial`` strictly betters the study's best, and the best before it (None: none).

    Single-objective studies only; a tie, a failed or pruned trial is no new best.
    """
    if len(study.directions) > 1 or trial.state != TrialState.COMPLETE:
        return False, None
    if trial.value is None or math.isnan(trial.value):
        return False, None
    best: float | None = None
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        value = other.value
        if other.number == trial.number or value is None or math.isnan(value):
            continue
        if best is None or metrics.is_better(metric, value, best):
            best = value
    return best is None or metrics.is_better(metric, trial.value, best), best


class NewBestHooks:
    """``hpo.on_new_best``: each hook is called as ``fn(study, trial, improvement)`` on a new best.

    ``improvement`` is how far the trial betters the study's best before it (a positive
    number, in either direction), None for the study's first complete trial.
    """

    def __init__(self, metric: str, hooks: list[Callable[..., object]]) -> None:
        self.metric, self.hooks = metric, hooks

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        found, best = new_best(study, trial, self.metric)
        if not found or trial.value is None:
            return
        improvement = None if best is None else abs(trial.value - best)
        for hook in self.hooks:
            hook(study, trial, improvement)


def sweep_end_hooks(params: Params) -> list[Callable[[optuna.Study], object]]:
    """``hpo.on_sweep_end``, imported (a bad one fails before the first trial, not after the last)."""
    return [load_callable(ref, "hpo.on_sweep_end") for ref in params.hpo.on_sweep_end]


def after_trial_hooks(
    params: SweepParams, storage_path: Path | None, stop: Callable[[], bool] | None
) -> list[Callback]:
    """The callbacks a sweep runs after each trial: built-in ones, ``hpo.callbacks``, ``hpo.on_new_best``.

    ``storage_path`` is the study file (SQLite or journal) to back up (``hpo.backup_dir``); None
    for a database.
    """
    hooks: list[Callback] = [TrialLogger(params.hpo.metric)]
    if stop is not None:
        # A signal between two trials: do not start the next one.
        hooks.append(lambda study, trial: study.stop() if stop() else None)
    if params.hpo.backup_dir is not None and storage_path is not None:
        source = storage_path
        backup_dir = workspace.state_path(params.hpo.backup_dir)  # not in a DVC experiment's copy

        def backup(study: optuna.Study, trial: FrozenTrial) -> None:
            backup_study(source, backup_dir)

        hooks.append(backup)
    if isinstance(params, Params):  # external code (SweepParams) keeps no checkpoints of ours
        hooks.append(scratch_bound(params))  # before user hooks: they see scratch as bounded
    hooks += [load_callable(ref, "hpo.callbacks") for ref in params.hpo.callbacks]
    if params.hpo.on_new_best:
        on_best = [load_callable(ref, "hpo.on_new_best") for ref in params.hpo.on_new_best]
        hooks.append(NewBestHooks(params.hpo.metric, on_best))
    return hooks
