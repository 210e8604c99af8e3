"""User model factories that misbehave on purpose, for the sweep's failure handling."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpopipe.models import build_mlp


def flaky(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Refuses one of the tuned widths, so some trials fail and others complete."""
    if int(params["width"]) == 32:
        raise ValueError("width 32 is not allowed")
    return build_mlp(params, n_features, n_outputs)


def broken(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Fails on every trial."""
    raise RuntimeError("always broken")


class _NanModel(nn.Module):
    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("nan")


def nan_output(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Trains to a NaN loss on the first batch."""
    return _NanModel(n_features, n_outputs)
