"""scikit-learn's ``train_test_split`` row choice, in numpy alone.

The sweep's validation rows used to come from ``sklearn.model_selection.train_test_split``,
whose import (scipy under it) cost every hpo stage and every sweep worker process ~0.5 s of
CPU for one call. These functions mirror scikit-learn's algorithm step for step (sizes from
``_validate_shuffle_split``, ``ShuffleSplit._iter_indices``, ``StratifiedShuffleSplit._iter_indices``
and ``utils.extmath._approximate_mode``), drawing from one ``np.random.RandomState(seed)`` in the
same order, so the rows are bit-identical to scikit-learn's: the sweep's trials, the
reproducibility tests and the committed ``dvc.lock`` depend on that split.
``tests/test_split_equivalence.py`` holds them equal to scikit-learn over many cases.

Only numpy here: scikit-learn or scipy imported by this module would undo its reason to be.
"""

from __future__ import annotations

import math

import numpy as np


def held_out_rows(n_samples: int, test_size: float) -> int:
    """How many of ``n_samples`` rows a float ``test_size`` holds out: scikit-learn rounds up."""
    return math.ceil(test_size * n_samples)


def split_sizes(n_samples: int, test_size: float) -> tuple[int, int]:
    """``(n_train, n_test)`` for a float ``test_size``: the test share rounded up, the rest train.

    scikit-learn's ``_validate_shuffle_split`` with ``train_size=None``; its error for an
    empty train set, word for word (``test_size`` in (0, 1) is the config's to check).
    """
    n_test = held_out_rows(n_samples, test_size)
    n_train = n_samples - n_test
    if n_train == 0:
        raise ValueError(
            f"With n_samples={n_samples}, test_size={test_size} and train_size=None, the "
            "resulting train set will be empty. Adjust any of the aforementioned parameters."
        )
    return n_train, n_test


def approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows per class of ``n_draws`` drawn from ``class_counts``: scikit-learn's ``_approximate_mode``.

    Each class gets the floor of its share; the rows left go to the largest remainders, ties
    broken by ``rng.choice`` exactly as scikit-learn draws them (the draws advance ``rng``,
    so every later permutation depends on doing the same).
    """
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def shuffle_split(n_train: int, n_test: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices of one ``ShuffleSplit``: one permutation, test rows first."""
    permutation = rng.permutation(n_train + n_test)
    return permutation[n_test:], permutation[:n_test]


def stratified_shuffle_split(
    y: np.ndarray, n_train: int, n_test: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices of one ``StratifiedShuffleSplit`` of the 1-d labels ``y``.

    Raises scikit-learn's ``ValueError`` (same words) for a class of one row, or for fewer
    train or test rows than classes.
    """
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    n_classes = classes.shape[0]
    if np.min(class_counts) < 2:
        raise ValueError(
            "The least populated classes in y have only 1 member, which is too few. The minimum "
            "number of groups for any class cannot be less than 2. Classes with too few members "
            f"are: {classes[class_counts < 2].tolist()}"
        )
    if n_train < n_classes:
        raise ValueError(
            f"The train_size = {n_train} should be greater or equal to the number of classes = {n_classes}"
        )
    if n_test < n_classes:
        raise ValueError(
            f"The test_size = {n_test} should be greater or equal to the number of classes = {n_classes}"
        )
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = approximate_mode(class_counts, n_train, rng)
    t_i = approximate_mode(class_counts - n_i, n_test, rng)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for i in range(n_classes):
        rows = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.append(rows[: n_i[i]])
        test.append(rows[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def train_test_indices(
    y: np.ndarray, test_size: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices ``train_test_split(..., test_size, random_state=seed)`` picks.

    ``stratify`` stratifies on ``y`` (scikit-learn's ``stratify=y``); the rows are
    ``a[train]``, ``a[test]`` for every array ``a`` split alongside ``y``, in that order.
    """
    n_train, n_test = split_sizes(len(y), test_size)
    rng = np.random.RandomState(seed)
    if stratify:
        return stratified_shuffle_split(y, n_train, n_test, rng)
    return shuffle_split(n_train, n_test, rng)
