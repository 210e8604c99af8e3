"""A W&B sweep parameter (``distribution: ...``) rewritten in hpopipe's search-space form (``type: ...``)."""

from __future__ import annotations

import math
from typing import Any

_WANDB_KEYS = {"distribution", "min", "max", "values", "value", "q", "mu", "sigma", "when"}


def from_wandb(spec: dict[str, Any]) -> dict[str, Any]:
    """Normalise a W&B sweep parameter (``distribution: ...``) into hpopipe's form.

    W&B's ``log_uniform`` takes natural-log exponents as min/max;
    ``log_uniform_values`` takes the values themselves.
    """
    unknown = set(spec) - _WANDB_KEYS
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in a W&B-style parameter")
    when = {"when": spec["when"]} if "when" in spec else {}
    dist = spec.get("distribution", "categorical" if "values" in spec or "value" in spec else None)
    if dist == "categorical" or dist == "constant":
        values = spec["values"] if "values" in spec else [spec["value"]]
        return {"type": "choice", "values": values, **when}
    if dist == "uniform":
        return {"type": "uniform", "min": spec["min"], "max": spec["max"], **when}
    if dist == "q_uniform":
        return {"type": "uniform", "min": spec["min"], "max": spec["max"], "step": spec.get("q", 1.0), **when}
    if dist == "int_uniform":
        return {"type": "int_uniform", "min": spec["min"], "max": spec["max"], **when}
    if dist == "log_uniform":
        return {"type": "log_uniform", "min": math.exp(spec["min"]), "max": math.exp(spec["max"]), **when}
    if dist == "log_uniform_values":
        return {"type": "log_uniform", "min": spec["min"], "max": spec["max"], **when}
    if dist == "normal":
        return {"type": "normal", "mu": spec.get("mu", 0.0), "sigma": spec.get("sigma", 1.0), **when}
    raise ValueError(f"unsupported W&B distribution {dist!r}")
