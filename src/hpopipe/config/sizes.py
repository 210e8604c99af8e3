"""Values that would train garbage without an error: sizes below 1, and choice lists that repeat or mix.

A batch size of -5 makes ``range(0, n, -5)`` empty: the trial "completes" without one step,
and ``width: true`` builds a one-unit layer. Whatever sizes the model or its batches must be a
whole number >= 1, wherever it comes from: a search-space range or choice, or ``model.params``.
"""

from __future__ import annotations

import math
import re
from typing import Any

# The sizes the built-in families and the training loop read (see hpopipe.training).
BUILTIN_SIZES = frozenset({"batch_size", "width", "n_layers", "d_main", "n_blocks"})
# A user factory's sizes, by the usual names: n_heads, num_layers, hidden_size, embed_dim, ...
_SIZE_NAME = re.compile(
    r"^(?:n|num)_(?:layers|heads|blocks|units|hidden|channels|filters|neurons|experts)$"
    r"|(?:^|_)(?:size|width|layers|heads|blocks|units|dim|channels|filters|neurons)$"
)


def is_size(name: str) -> bool:
    """Whether a hyperparameter of this name sizes the model or its batches."""
    return name in BUILTIN_SIZES or bool(_SIZE_NAME.search(name))


def size_problem(value: Any) -> str | None:
    """Why ``value`` cannot size a layer or a batch, or None when it can."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if not math.isfinite(value) or value < 1:
        return f"{value!r} is below 1"
    if isinstance(value, float) and not value.is_integer():
        return f"{value!r} is not a whole number"
    return None


def check_size_values(name: str, values: list[Any], what: str) -> None:
    """Refuse the first of ``values`` (a choice's options, a fixed value) that cannot be a size."""
    if not is_size(name):
        return
    for value in values:
        problem = size_problem(value)
        if problem is not None:
            raise ValueError(
                f"{name}: sizes the model or its batches, so {what} must be whole numbers >= 1: {problem}"
            )


def check_size_range(name: str, low: float) -> None:
    """A sampled size is truncated to a whole number: the low end of its range must be >= 1."""
    if is_size(name) and not low >= 1:
        raise ValueError(
            f"{name}: sizes the model or its batches, so its range must start at 1 or more, not {low:g}"
        )


def check_choice_values(values: list[Any]) -> None:
    """One type per choice list and no value twice (``1``, ``1.0`` and ``true`` are one value to Python)."""
    kinds = sorted({_kind(v) for v in values})
    if len(kinds) > 1:
        raise ValueError(f"{values!r} mixes {' and '.join(kinds)}: a choice lists values of one type")
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.append(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "booleans"
    if isinstance(value, int | float):
        return "numbers"
    return "strings"
