"""The sweep's validation split is scikit-learn's ``train_test_split``, row for row, without it.

:mod:`hpopipe.training.shuffle_split` re-implements the split in numpy so the hpo stage and
its worker processes never import scikit-learn or scipy; scikit-learn stays the reference here
(as tests/test_metrics.py does for the numpy metrics): the same rows in the same order, the
same errors, over balanced, imbalanced and tied classes, regression, small and large tables.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sklearn.utils.extmath import _approximate_mode

from hpopipe.training.loop import Task
from hpopipe.training.shuffle_split import approximate_mode
from hpopipe.training.split import split_validation, validation_rows
from tests.conftest import scikit_learn_loaded_after

VAL_SIZES = (0.1, 0.2, 0.25, 0.33, 0.5)
SEEDS = (0, 1, 7, 42, 2**32 - 1)


def _labels(counts: list[int], rng: np.random.Generator) -> np.ndarray:
    """Class codes with these counts per class, shuffled, as encode_target writes them."""
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int64)


def _class_counts() -> list[list[int]]:
    """Balanced (every remainder tied), imbalanced and partly tied class counts, 2 to 5 classes."""
    rng = np.random.default_rng(0)
    cases = [[n] * k for k in range(2, 6) for n in (2, 3, 5, 10, 33)]
    cases += [[2, 50], [3, 97], [40, 5, 5], [9, 9, 2], [7, 7, 7, 3], [100, 20, 20, 2, 2], [4, 4, 6, 6, 8]]
    cases += [rng.integers(2, 60, size=k).tolist() for k in (2, 3, 4, 5) for _ in range(6)]
    return cases


def _assert_same_split(x: np.ndarray, y: np.ndarray, task: Task, val_size: float, seed: int) -> None:
    stratify = y if task.kind == "classification" else None
    try:
        expected = train_test_split(x, y, test_size=val_size, random_state=seed, stratify=stratify)
    except ValueError as err:
        with pytest.raises(ValueError) as raised:
            split_validation(x, y, task, val_size, seed)
        assert str(raised.value) == str(err)
        return
    got = split_validation(x, y, task, val_size, seed)
    for mine, theirs in zip((got.fit[0], got.val[0], got.fit[1], got.val[1]), expected, strict=True):
        assert mine.dtype == theirs.dtype and mine.flags.c_contiguous == theirs.flags.c_contiguous
        assert np.array_equal(mine, theirs)
    assert len(got.val[1]) == validation_rows(len(y), val_size)


@pytest.mark.parametrize("val_size", VAL_SIZES)
def test_stratified_split_is_scikit_learns(val_size: float) -> None:
    rng = np.random.default_rng(1)
    for counts, seed in itertools.product(_class_counts(), SEEDS):
        y = _labels(counts, rng)
        x = rng.normal(size=(len(y), 3)).astype(np.float32)
        _assert_same_split(x, y, Task("classification", len(counts), "accuracy"), val_size, seed)


@pytest.mark.parametrize("val_size", VAL_SIZES)
def test_regression_split_is_scikit_learns(val_size: float) -> None:
    rng = np.random.default_rng(2)
    for n_rows, seed in itertools.product((1, 2, 3, 5, 10, 17, 100, 1001), SEEDS):
        y = rng.normal(size=n_rows).astype(np.float32)
        # a frame's to_numpy is column-major: the rows keep whatever layout scikit-learn gives them
        x = np.asfortranarray(rng.normal(size=(n_rows, 4)).astype(np.float32))
        _assert_same_split(x, y, Task("regression", 0, "rmse"), val_size, seed)


def test_too_small_classes_fail_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(3)
    task = Task("classification", 3, "accuracy")
    for counts in ([1, 10, 10], [2, 2, 2], [10, 10, 1, 1]):  # one-row classes; fewer val rows than classes
        y = _labels(counts, rng)
        _assert_same_split(np.zeros((len(y), 2), np.float32), y, task, 0.2, 0)


def test_approximate_mode_breaks_ties_with_the_same_draws() -> None:
    for counts, n_draws, seed in itertools.product(
        ([2, 2, 2, 1], [5, 5, 5, 5, 5], [4, 2], [10, 3, 3, 3], [1, 1, 1]), (1, 2, 3), range(20)
    ):
        ours, theirs = np.random.RandomState(seed), np.random.RandomState(seed)
        got = approximate_mode(np.array(counts), n_draws, ours)
        assert np.array_equal(got, _approximate_mode(np.array(counts), n_draws, theirs))
        assert ours.randint(2**31) == theirs.randint(2**31)  # the generator advanced alike


def test_the_sweep_splits_rows_without_scikit_learn_or_scipy() -> None:
    # What every sweep worker process does before its first trial: the runner, then the split.
    code = (
        "import sys; import numpy as np; import hpopipe.sweep.runner; "
        "from hpopipe.training.loop import Task; from hpopipe.training.split import split_validation; "
        "y = np.repeat(np.arange(3), 10); "
        "split_validation(np.zeros((30, 2), np.float32), y, Task('classification', 3, 'accuracy'), 0.2, 0); "
        "split_validation(np.zeros((30, 2), np.float32), y * 1.0, Task('regression', 0, 'rmse'), 0.2, 0)"
    )
    assert scikit_learn_loaded_after(code) == []
