"""User model factories for tests (imported by ``model.factory: tests.factories:...``)."""

from __future__ import annotations

from typing import Any

from torch import nn


def build_linear(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """A factory as a user writes one: a small net whose size comes from ``params``."""
    hidden = int(params.get("hidden", 8))
    return nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_outputs))


def build_not_a_module(params: dict[str, Any], n_features: int, n_outputs: int) -> object:
    """A broken factory: returns something that is not a torch Module."""
    return {"n_features": n_features}


NOT_CALLABLE = 3
