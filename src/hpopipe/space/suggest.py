"""The search space: the one place where specs become Optuna ``suggest_*`` calls."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from hpopipe.config import ChoiceSpec, IntUniformSpec, LogUniformSpec, NormalSpec, ParamSpec, UniformSpec


def active(spec: ParamSpec, sampled: dict[str, Any]) -> bool:
    """Does a conditional parameter apply, given the parameters sampled so far?"""
    for other, wanted in (spec.when or {}).items():
        options = wanted if isinstance(wanted, list) else [wanted]
        if other not in sampled or sampled[other] not in options:
            return False
    return True


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Sample one configuration from ``space`` through ``trial``.

    Parameters whose ``when`` does not hold are not sampled at all, so they are
    absent from the trial and from what the model builder receives.
    """
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if not active(spec, params):
            continue
        if isinstance(spec, LogUniformSpec):
            params[name] = trial.suggest_float(name, spec.min, spec.max, log=True)
        elif isinstance(spec, UniformSpec):
            params[name] = trial.suggest_float(name, spec.min, spec.max, step=spec.step)
        elif isinstance(spec, NormalSpec):
            params[name] = trial.suggest_float(name, *spec.bounds)
        elif isinstance(spec, IntUniformSpec):
            params[name] = trial.suggest_int(name, spec.min, spec.max, step=spec.step, log=spec.log)
        else:
            params[name] = trial.suggest_categorical(name, spec.values)
    return params


def grid(space: dict[str, ParamSpec], points: int) -> dict[str, list[Any]]:
    """Discrete values per parameter for the grid sampler.

    Choices and integer ranges are enumerated; a float range uses its ``step``
    when it has one, otherwise ``points`` evenly spaced values (log-spaced for
    log_uniform).
    """
    out: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if isinstance(spec, ChoiceSpec):
            out[name] = list(spec.values)
        elif isinstance(spec, IntUniformSpec):
            out[name] = list(range(spec.min, spec.max + 1, spec.step))
        elif isinstance(spec, UniformSpec) and spec.step is not None:
            # Like Optuna, stop at the last step that does not pass max.
            n = math.floor((spec.max - spec.min) / spec.step + 1e-9) + 1
            out[name] = [float(round(spec.min + i * spec.step, 12)) for i in range(n)]
        elif isinstance(spec, LogUniformSpec):
            out[name] = [float(v) for v in np.geomspace(spec.min, spec.max, points)]
        elif isinstance(spec, NormalSpec):
            out[name] = [float(v) for v in np.linspace(*spec.bounds, points)]
        else:
            out[name] = [float(v) for v in np.linspace(spec.min, spec.max, points)]
        out[name] = list(dict.fromkeys(out[name]))  # min == max gives one point, not `points` copies
    return out


def grid_size(space: dict[str, ParamSpec], points: int) -> int:
    """Number of distinct configurations a grid search would visit."""
    return int(np.prod([len(v) for v in grid(space, points).values()]))
