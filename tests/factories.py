"""User model factories for tests (imported by ``model.factory: tests.factories:...``)."""

from __future__ import annotations

from typing import Any

from torch import nn

import hpopipe


def build_linear(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """A factory as a user writes one: a small net whose size comes from ``params``."""
    hidden = int(params.get("hidden", 8))
    return nn.Sequential(nn.Linear(n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_outputs))


def build_encoder(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """A factory with a nested config, as W&B's nested sweeps give one: ``params["encoder"]["depth"]``."""
    encoder = params["encoder"]
    width, layers = int(encoder["width"]), []
    d_in = n_features
    for _ in range(int(encoder["depth"])):
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    return nn.Sequential(*layers, nn.Linear(d_in, n_outputs))


def build_not_a_module(params: dict[str, Any], n_features: int, n_outputs: int) -> object:
    """A broken factory: returns something that is not a torch Module."""
    return {"n_features": n_features}


NOT_CALLABLE = 3


@hpopipe.consumes("hidden")
def build_declared(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """:func:`build_linear`, declaring what it reads: a tuned name it does not read is refused."""
    return build_linear(params, n_features, n_outputs)
