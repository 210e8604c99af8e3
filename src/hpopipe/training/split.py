"""The validation split shared by the sweep's objective and CV: one function, one seed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the report counts validation rows without loading torch (training.loop)
    from hpopipe.training.loop import Task


@dataclass
class SweepData:
    """The training split of the sweep, divided once into fit and validation rows."""

    fit: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    task: Task


def validation_rows(n_rows: int, val_size: float) -> int:
    """How many of ``n_rows`` :func:`split_validation` holds out: scikit-learn rounds the share up."""
    return math.ceil(val_size * n_rows)


def split_validation(x: np.ndarray, y: np.ndarray, task: Task, val_size: float, seed: int) -> SweepData:
    """Hold out a (stratified) validation slice of the train split for the objective."""
    from sklearn.model_selection import train_test_split  # scipy too: only where rows are split

    stratify = y if task.kind == "classification" else None
    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=val_size, random_state=seed, stratify=stratify
    )
    return SweepData((x_fit, y_fit), (x_val, y_val), task)
