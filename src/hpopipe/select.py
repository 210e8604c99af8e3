"""Pick the best configuration by CV mean (or by cv.select's rule) as a complete training config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpopipe.config import Params
from hpopipe.errors import HpopipeError
from hpopipe.handoffs import parse
from hpopipe.handoffs.best import BestConfig
from hpopipe.handoffs.cv import CvSummary
from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.sweep import pareto


def best_config(params: Params, ranked: Sequence[RankedTrial], cv_summary: CvSummary) -> BestConfig:
    """The full configuration ``refit`` needs: model, merged params, training settings, epochs.

    Epochs are the rounded mean of the best epochs the CV folds found, so the
    refit (which has no validation rows) knows when to stop. A multi-objective
    sweep chooses by ``cv.select`` and records the rule and why in ``source``. Validated here,
    so a field refit would not understand fails in select, before anything is written.
    """
    if not ranked or cv_summary.best_trial is None:
        raise HpopipeError("select: no complete trial to choose from (every trial was pruned or failed)")
    chosen, why = cv_summary.best_trial, dict[str, Any]()
    if pareto.is_multi_objective(params):
        chosen, why = pareto.choose(params, cv_summary)
    trial = next((t for t in ranked if t.number == chosen), None)
    stats = cv_summary.of_trial(chosen)
    if trial is None or stats is None:
        raise HpopipeError(f"select: CV chose trial {chosen}, which is not among the complete trials")
    payload = {
        "seed": params.seed,
        "model": params.model,
        "params": {**params.model.params, **trial.params},
        "train": params.train,
        "epochs": max(1, round(stats.best_epoch_mean)),
        "metric": params.hpo.metric,
        "source": {
            "trial": chosen,
            "sweep_value": trial.value,
            "cv_mean": stats.mean,
            "cv_std": stats.std,
            "cv_folds": cv_summary.folds,
            **({"sweep_values": trial.values} if trial.values is not None else {}),
            **why,
        },
    }
    return parse(BestConfig, payload, "select: the best configuration")
