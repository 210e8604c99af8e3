"""Matplotlib figures of the report, rendered to inline SVG text.

The sweep's figures are Optuna's own (``optuna.visualization.matplotlib``): optimisation
history, parameter importances, parallel coordinates and intermediate values. Our code
only adapts them: the same size and labels as the rest of the page, and in the
intermediate values, each curve styled by its trial's state (pruned trials grey, the
selected trial highlighted) where Optuna gives every trial a colour of its own and a
30-line legend. Optuna draws through ``pyplot`` and sets its ``ggplot`` style globally:
:func:`optuna_figure` keeps that style inside the call, and :func:`to_svg` closes the figure.

Our own figures are those Optuna has no equivalent for: the refit's training loss, the
confusion matrix and the residuals of the refit model on the test split. They are built on
:class:`matplotlib.figure.Figure` directly (no global registry, no GUI backend).

The SVG is made reproducible (fixed id salt, no date) so that re-running the report on the
same inputs writes the same bytes, and text stays text (``fonttype none``): smaller files,
and the labels can be searched in the page.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import numpy as np
import optuna
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState

WIDTH, HEIGHT = 6.4, 3.6
COLOR, MUTED, HIGHLIGHT = "#3b6ea8", "#9aa5b1", "#d1495b"


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
    import matplotlib.pyplot as plt

    plt.close(fig)  # Optuna's figures live in pyplot's registry until closed (ours: a no-op)
    text = buffer.getvalue()
    return _GROUP_ID.sub("", text[text.index("<svg") :])


def optuna_figure(draw: Callable[[], Axes], width: float = WIDTH, height: float = HEIGHT) -> Figure:
    """One of ``optuna.visualization.matplotlib``'s figures, at the page's size.

    Optuna's functions call ``plt.style.use("ggplot")``, which would restyle every later
    figure of the process: ``rc_context`` puts the settings back on leaving. They are marked
    experimental, and say so in a warning on every call; it is silenced here.
    """
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # A parameter every complete trial sampled alike gets a zero-height axis; Matplotlib widens it.
        warnings.filterwarnings("ignore", "Attempting to set identical low and high", UserWarning)
        ax = draw()
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    fig.set_size_inches(width, height)
    return fig


def curve_id(number: int, state: TrialState) -> str:
    """The SVG id of a trial's curve in the intermediate-values figure (``curve-7-pruned``)."""
    return f"curve-{number}-{state.name.lower()}"


def intermediate_values(study: optuna.Study, selected: int, metric: str) -> Figure:
    """Every trial's validation score per epoch (Optuna's intermediate values), pruned ones included.

    Optuna's figure with each curve styled by what it is: a pruned trial thin and grey,
    a complete one blue, the selected trial (the one refit) red on top. Each curve's SVG
    id names its trial and state (:func:`curve_id`), so the page can be checked for them.
    """
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    fig = optuna_figure(lambda: optuna.visualization.matplotlib.plot_intermediate_values(study))
    ax = fig.axes[0]
    for line in ax.get_lines():
        number = int(str(line.get_label()).removeprefix("Trial"))  # Optuna labels a curve "Trial<n>"
        state = states[number]
        if number == selected:
            line.set(color=HIGHLIGHT, lw=2.0, alpha=1.0, zorder=3, marker="o", ms=3)
        elif state == TrialState.PRUNED:  # a marker: many are pruned after one epoch, a curve of one point
            line.set(color=MUTED, lw=0.8, alpha=0.8, zorder=1, marker=".", ms=4)
        else:
            line.set(color=COLOR, lw=1.1, alpha=0.8, zorder=2, marker="")
        line.set_gid(curve_id(number, state))
    legend = ax.get_legend()
    if legend is not None:  # one line per trial
        legend.remove()
    handles = [
        Line2D([], [], color=COLOR, lw=1.1, label="complete"),
        Line2D([], [], color=MUTED, lw=0.8, marker=".", ms=4, label="pruned"),
        Line2D([], [], color=HIGHLIGHT, lw=2.0, marker="o", ms=3, label=f"trial {selected} (selected)"),
    ]
    ax.legend(handles=handles, loc="best", frameon=False)
    ax.set_title("")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric}")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_facecolor("white")  # grey curves on ggplot's grey background would vanish
    ax.grid(color="#e4e7eb")
    limits = curve_limits(study)
    if limits is not None:
        ax.set_ylim(*limits)
    return fig


def curve_limits(study: optuna.Study) -> tuple[float, float] | None:
    """The learning curves' value axis: the range of the complete trials' curves, and a margin.

    A trial pruned after one epoch may have scored far below the rest (it is why it was
    pruned): on its scale every other curve would be one flat line. Points outside are
    left out of view; the caption says how many (:func:`off_scale`). None: no complete curve.
    """
    values = [
        v
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for v in t.intermediate_values.values()
    ]
    if not values:
        return None
    low, high = min(values), max(values)
    margin = 0.08 * (high - low) or 0.01 * (abs(high) or 1.0)
    return low - margin, high + margin


def off_scale(study: optuna.Study) -> list[float]:
    """The intermediate values outside :func:`curve_limits` (pruned trials' worst epochs)."""
    limits = curve_limits(study)
    if limits is None:
        return []
    return [
        v
        for t in study.get_trials(deepcopy=False)
        for v in t.intermediate_values.values()
        if not limits[0] <= v <= limits[1]
    ]


def refit_loss(curve: pd.DataFrame) -> Figure:
    """The refit's training loss per epoch (it has no validation rows, so Optuna never saw it)."""
    fig, ax = _figure()
    ax.plot(curve["epoch"], curve["train_loss"], marker="o", ms=3, color=HIGHLIGHT)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig


def _figure(width: float = WIDTH, height: float = HEIGHT) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


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
