"""Model families: the built-in tabular networks and user factories.

A factory is any ``build(params, n_features, n_outputs) -> torch.nn.Module``;
``params`` holds the sampled hyperparameters merged over ``model.params``, dotted
``model.*`` names nested (:mod:`hpopipe.config.routes`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from hpopipe.config import ModelConfig
from hpopipe.config.routes import model_params
from hpopipe.errors import HpopipeError
from hpopipe.plugins import load_callable

Factory = Callable[[dict[str, Any], int, int], nn.Module]


NORMS = ("none", "batch", "layer")


def _norm_layer(kind: str, width: int) -> list[nn.Module]:
    if kind not in NORMS:
        raise HpopipeError(f"model.norm: {kind!r} is not one of {', '.join(NORMS)}")
    if kind == "batch":
        return [nn.BatchNorm1d(width)]
    return [nn.LayerNorm(width)] if kind == "layer" else []


EMBEDDINGS = ("none", "periodic")
# Per column: frequencies, and the width of its vector. Fixed: ``embedding_scale`` is the knob that
# matters (Gorishniy et al. tune it over decades; these two they keep near 16-48 and 16-24).
N_FREQUENCIES, D_EMBEDDING = 16, 16


class PeriodicEmbedding(nn.Module):
    """Each input column as a small vector: ReLU(Linear([cos(2πcx), sin(2πcx)])) with trained
    frequencies ``c`` (initialised from N(0, ``scale``²)) and one Linear per column.

    The PLR embedding of Gorishniy et al. (2022), "On Embeddings for Numerical Features in
    Tabular Deep Learning": it lets an MLP draw the sharp, non-monotone functions of a single
    column that trees draw with splits (one table in docs/baselines.md closes most of its gap to
    gradient boosting with it). A one-hot column gets a vector for 0 and one for 1, which is
    what an embedding of that category is.
    """

    def __init__(self, n_features: int, n_frequencies: int, d_embedding: int, scale: float) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, n_frequencies) * scale)
        bound = 1 / math.sqrt(2 * n_frequencies)
        self.weight = nn.Parameter(
            torch.empty(n_features, 2 * n_frequencies, d_embedding).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(n_features, d_embedding).uniform_(-bound, bound))

        self.scale = scale

    def extra_repr(self) -> str:
        n_features, n_frequencies, d_embedding = self.weight.shape
        return (
            f"{n_features}, n_frequencies={n_frequencies // 2}, d_embedding={d_embedding}, scale={self.scale}"
        )

    def forward(self, x: Tensor) -> Tensor:
        angles = 2 * math.pi * self.frequencies[None] * x[..., None]
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        out = torch.relu(torch.einsum("bfi,fio->bfo", periodic, self.weight) + self.bias[None])
        return out.flatten(1)


def _embedding(params: dict[str, Any], n_features: int) -> tuple[list[nn.Module], int]:
    """The input layer ``embedding`` names, and the width it hands on."""
    kind = str(params.get("embedding", "none"))
    if kind not in EMBEDDINGS:
        raise HpopipeError(f"model.embedding: {kind!r} is not one of {', '.join(EMBEDDINGS)}")
    if kind == "none":
        return [], n_features
    scale = float(params.get("embedding_scale", 1.0))
    embedding = PeriodicEmbedding(n_features, N_FREQUENCIES, D_EMBEDDING, scale)
    return [embedding], n_features * D_EMBEDDING


def build_mlp(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """MLP: ``n_layers`` blocks of Linear-[norm]-ReLU-Dropout of ``width`` units.

    ``norm`` (``none``, ``batch`` or ``layer``) normalises each block's pre-activations; a
    one-hot categorical column needs no embedding layer of its own, because the first Linear
    layer already holds one vector per category (its weight column) and sums them.
    """
    width = int(params.get("width", 128))
    norm = str(params.get("norm", "none"))
    layers, d_in = _embedding(params, n_features)
    for _ in range(int(params.get("n_layers", 2))):
        layers += [nn.Linear(d_in, width), *_norm_layer(norm, width), nn.ReLU()]
        layers.append(nn.Dropout(float(params.get("dropout", 0.1))))
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
