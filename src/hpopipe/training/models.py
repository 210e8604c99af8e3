"""Model families: the built-in tabular networks and user factories.

A factory is any ``build(params, n_features, n_outputs) -> torch.nn.Module``;
``params`` holds the sampled hyperparameters merged over ``model.params``, dotted
``model.*`` names nested (:mod:`hpopipe.config.routes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from hpopipe.config import ModelConfig
from hpopipe.config.routes import model_params
from hpopipe.errors import HpopipeError
from hpopipe.plugins import load_callable

Factory = Callable[[dict[str, Any], int, int], nn.Module]


def build_mlp(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Plain MLP: ``n_layers`` blocks of Linear-ReLU-Dropout of ``width`` units."""
    width = int(params.get("width", 128))
    layers: list[nn.Module] = []
    d_in = n_features
    for _ in range(int(params.get("n_layers", 2))):
        layers += [nn.Linear(d_in, width), nn.ReLU(), nn.Dropout(float(params.get("dropout", 0.1)))]
        d_in = width
    layers.append(nn.Linear(d_in, n_outputs))
    return nn.Sequential(*layers)


class _ResidualBlock(nn.Module):
    def __init__(self, d_main: int, d_hidden: int, dropout_hidden: float, dropout_residual: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm1d(d_main),
            nn.Linear(d_main, d_hidden),
            nn.ReLU(),
            nn.Dropout(dropout_hidden),
            nn.Linear(d_hidden, d_main),
            nn.Dropout(dropout_residual),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TabularResNet(nn.Module):
    """The ResNet for tabular data of Gorishniy et al. (2021), "Revisiting Deep
    Learning Models for Tabular Data": a linear stem, residual blocks
    (BatchNorm, Linear, ReLU, Dropout, Linear, Dropout) and a BatchNorm-ReLU-Linear head."""

    def __init__(self, params: dict[str, Any], n_features: int, n_outputs: int) -> None:
        super().__init__()
        d_main = int(params.get("d_main", 128))
        d_hidden = int(d_main * float(params.get("d_hidden_factor", 2.0)))
        self.stem = nn.Linear(n_features, d_main)
        self.blocks = nn.Sequential(
            *[
                _ResidualBlock(
                    d_main,
                    d_hidden,
                    float(params.get("dropout_hidden", 0.2)),
                    float(params.get("dropout_residual", 0.0)),
                )
                for _ in range(int(params.get("n_blocks", 2)))
            ]
        )
        self.head = nn.Sequential(nn.BatchNorm1d(d_main), nn.ReLU(), nn.Linear(d_main, n_outputs))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))


def build_resnet(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Factory wrapper for :class:`TabularResNet`."""
    return TabularResNet(params, n_features, n_outputs)


# What each family reads is declared beside config (hpopipe.config.routes.BUILTIN_MODEL_PARAMS, which
# must not import torch); a tuned name neither it nor the loop reads is refused there.
BUILTIN: dict[str, Factory] = {"mlp": build_mlp, "resnet": build_resnet}


def resolve_factory(cfg: ModelConfig) -> Factory:
    """Find the builder for ``model.name`` or import ``model.factory``."""
    if cfg.name is not None:
        return BUILTIN[cfg.name]
    assert cfg.factory is not None
    return load_callable(cfg.factory, "model.factory")


def build(cfg: ModelConfig, params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Build a model with the sampled ``params`` merged over the fixed ``model.params``.

    ``model.encoder.depth: 3`` reaches the factory as ``{"encoder": {"depth": 3}}``; names for
    the loop alone (``train.*``, ``optimizer.*``) do not reach it.
    """
    merged = model_params({**cfg.params, **params})
    model = resolve_factory(cfg)(merged, n_features, n_outputs)
    if not isinstance(model, nn.Module):
        raise HpopipeError(
            f"model.factory: {cfg.factory!r} returned {type(model).__name__}, not a torch Module"
        )
    return model
