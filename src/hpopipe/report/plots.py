"""Matplotlib figures of the report, rendered to inline SVG text.

Figures are built on :class:`matplotlib.figure.Figure` directly, never through
``pyplot``: no global figure registry, no GUI backend, nothing to close. The
SVG is made reproducible (fixed id salt, no date) so that re-running the report
on the same inputs writes the same bytes, and text stays text (``fonttype
none``): smaller files, and the labels can be searched in the page.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial

WIDTH, HEIGHT = 6.4, 3.6
COLOR, MUTED = "#3b6ea8", "#9aa5b1"


_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
# Matplotlib names its groups figure_1, axes_1, ... in every figure; nothing refers to them,
# and five figures in one page would repeat them.
_GROUP_ID = re.compile(r' id="[A-Za-z0-9.]+_\d+"')


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as an ``<svg>`` element; ``salt`` keeps ids unique across the figures of one page.

    No metadata (date, Matplotlib version): the same figure gives the same bytes.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata=_NO_METADATA, bbox_inches="tight")
    text = buffer.getvalue()
    return _GROUP_ID.sub("", text[text.index("<svg") :])


def _figure(width: float = WIDTH, height: float = HEIGHT) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def history(frame: pd.DataFrame, metric: str) -> Figure:
    """Value of every COMPLETE trial by trial number, with the best value so far as a step line."""
    fig, ax = _figure()
    ax.scatter(frame["number"], frame["value"], s=18, color=COLOR, label="trial", zorder=3)
    ax.step(frame["number"], frame["best"], where="post", color="#d1495b", label="best so far")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"validation {metric}")
    ax.legend(loc="best", frameon=False)
    ax.grid(alpha=0.3)
    return fig


def importances(frame: pd.DataFrame) -> Figure:
    """Horizontal bars, the most important parameter on top."""
    ordered = frame.sort_values("importance")
    fig, ax = _figure(height=max(1.6, 0.45 * len(ordered) + 0.8))
    ax.barh(ordered["param"], ordered["importance"], color=COLOR)
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_xlim(0, max(1.0, float(ordered["importance"].max())))
    ax.grid(axis="x", alpha=0.3)
    return fig


def learning_curves(trial_curve: pd.DataFrame, trial: int, metric: str, refit_curve: pd.DataFrame) -> Figure:
    """Validation score per epoch of the selected trial; the refit's training loss beside it when known."""
    panels = 2 if len(refit_curve) else 1
    fig = Figure(figsize=(WIDTH * (1 + 0.5 * (panels - 1)), HEIGHT), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    axes[0].plot(trial_curve["epoch"], trial_curve["value"], marker="o", ms=3, color=COLOR)
    axes[0].set_title(f"sweep trial {trial}: validation {metric}", fontsize=10)
    axes[0].set_xlabel("epoch")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    if panels == 2:
        axes[1].plot(refit_curve["epoch"], refit_curve["train_loss"], marker="o", ms=3, color="#d1495b")
        axes[1].set_title("refit: training loss", fontsize=10)
        axes[1].set_xlabel("epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig


def confusion(frame: pd.DataFrame, classes: Sequence[str]) -> Figure:
    """Counts of (actual, predicted) on the test split, every class on both axes."""
    counts = pd.crosstab(frame["actual"], frame["predicted"]).reindex(
        index=list(classes), columns=list(classes), fill_value=0
    )
    side = max(3.6, 0.55 * len(classes) + 2.2)
    fig, ax = _figure(side + 0.8, side)
    image = ax.imshow(counts.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    peak = counts.to_numpy().max() or 1
    for (row, col), count in np.ndenumerate(counts.to_numpy()):
        ax.text(
            col, row, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black"
        )
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def residuals(frame: pd.DataFrame) -> Figure:
    """Residual (actual - predicted) against the prediction; a good model scatters evenly around zero."""
    fig, ax = _figure()
    ax.scatter(frame["predicted"], frame["residual"], s=10, alpha=0.6, color=COLOR)
    ax.axhline(0.0, color="#d1495b", lw=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual - predicted")
    ax.grid(alpha=0.3)
    return fig


def parallel_coordinates(trials: Sequence[FrozenTrial], metric: str, maximize: bool) -> Figure:
    """One line per COMPLETE trial across every parameter's axis and the objective, coloured by value.

    Each axis spans its distribution's range (log-scaled where the parameter is
    sampled on a log scale; choices evenly spaced), so a line's height shows
    where in the search space the trial sampled, not only where the others did.
    """
    # values[0]: the value of a single-objective trial, the first objective of a multi-objective one
    trials = [t for t in trials if t.values is not None]
    names = sorted({name for t in trials for name in t.params})
    values = np.array([float(t.values[0]) for t in trials if t.values is not None])
    fig, ax = _figure(max(11.0, 1.3 * (len(names) + 1)), 3.8)
    axes = [_param_axis(trials, name) for name in names] + [_value_axis(values, metric)]
    norm = matplotlib.colors.Normalize(float(values.min()), float(values.max()))
    cmap = matplotlib.colormaps["viridis" if maximize else "viridis_r"]
    # Worst first, so the best lines are drawn on top.
    for i in np.argsort(values if maximize else -values):
        ax.plot(
            range(len(axes)), [a.positions[i] for a in axes], color=cmap(norm(values[i])), lw=1.2, alpha=0.8
        )
    for x, axis in enumerate(axes):
        ax.axvline(x, color="black", lw=0.8)
        for position, label in axis.ticks:
            ax.text(x + 0.03, position, label, fontsize=7, va="center")
    ax.set_xticks(range(len(axes)), labels=[a.name for a in axes], rotation=20, ha="right")
    ax.set_yticks([])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlim(-0.2, len(axes) - 0.4)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, label=metric, shrink=0.8)
    return fig


class _Axis:
    """A parallel-coordinates axis: each trial's position in [0, 1] and the labelled ticks."""

    def __init__(self, name: str, positions: list[float], ticks: list[tuple[float, str]]) -> None:
        self.name, self.positions, self.ticks = name, positions, ticks


def _param_axis(trials: Sequence[FrozenTrial], name: str) -> _Axis:
    dist = next(t.distributions[name] for t in trials if name in t.distributions)
    raw = [t.params.get(name) for t in trials]
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices)
        spread = max(len(choices) - 1, 1)
        ticks = [(i / spread, _label(c)) for i, c in enumerate(choices)]
        return _Axis(name, [math.nan if v is None else choices.index(v) / spread for v in raw], ticks)
    low, high, scale = _range(dist)
    positions = [math.nan if v is None else scale(float(v)) for v in raw]
    return _Axis(name, positions, [(0.0, _label(low)), (1.0, _label(high))])


def _range(dist: BaseDistribution) -> tuple[float, float, Any]:
    low, high = float(dist.low), float(dist.high)  # type: ignore[attr-defined]
    transform = math.log10 if getattr(dist, "log", False) else float
    lo, hi = transform(low), transform(high)

    def scale(value: float) -> float:
        return 0.5 if hi == lo else (transform(value) - lo) / (hi - lo)

    return low, high, scale


def _value_axis(values: np.ndarray, metric: str) -> _Axis:
    low, high = float(values.min()), float(values.max())
    positions = [0.5 if high == low else (float(v) - low) / (high - low) for v in values]
    return _Axis(metric, positions, [(0.0, _label(low)), (1.0, _label(high))])


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
