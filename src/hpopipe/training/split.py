"""The validation split shared by the sweep's objective and CV: one function, one seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hpopipe.training.shuffle_split import held_out_rows, train_test_indices

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
    return held_out_rows(n_rows, val_size)


def split_validation(x: np.ndarray, y: np.ndarray, task: Task, val_size: float, seed: int) -> SweepData:
    """Hold out a (stratified) validation slice of the train split for the objective.

    The rows scikit-learn's ``train_test_split(x, y, test_size=val_size, random_state=seed,
    stratify=y if classification)`` picks, without importing it (see :mod:`.shuffle_split`).
    """
    fit, val = train_test_indices(y, val_size, seed, stratify=task.kind == "classification")
    return SweepData((x[fit], y[fit]), (x[val], y[val]), task)
