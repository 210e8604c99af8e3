"""CV's folds and prepare's test split are scikit-learn's, row for row, without it.

:mod:`hpopipe.training.kfold` re-implements ``KFold`` / ``StratifiedKFold`` (``shuffle=True``)
and :func:`hpopipe.data.train_test_frames` takes ``train_test_split``'s rows of a DataFrame
(:mod:`hpopipe.training.shuffle_split`), so the cv and prepare stages and the cv pool processes
never import scikit-learn or scipy. scikit-learn stays the reference here: the same indices in
the same order and dtype, the same frames and index labels, the same errors and warnings.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

from hpopipe.cv import folds
from hpopipe.data import train_test_frames
from hpopipe.training.kfold import kfold, stratified_kfold
from hpopipe.training.loop import Task
from tests.conftest import scikit_learn_loaded_after

SEEDS = (0, 1, 42, 2**32 - 1)
KS = tuple(range(2, 11))
CLASSIFICATION = Task("classification", 3, "accuracy")
REGRESSION = Task("regression", 0, "rmse")


def _outcome(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What ``call`` returns (or the ValueError it raises, as text) and the warnings it gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except ValueError as err:
            result = f"ValueError: {err}"
    return result, [f"{w.category.__name__}: {w.message}" for w in caught]


def _assert_same_folds(mine: Callable[[], Any], theirs: Callable[[], Any]) -> None:
    got, got_warnings = _outcome(mine)
    expected, expected_warnings = _outcome(theirs)
    assert got_warnings == expected_warnings
    if isinstance(expected, str):
        assert got == expected
        return
    assert len(got) == len(expected)
    for (train, test), (train_ref, test_ref) in zip(got, expected, strict=True):
        for a, b in ((train, train_ref), (test, test_ref)):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def _class_counts() -> list[list[int]]:
    """Balanced, imbalanced, tied, and too-small-for-k class counts; 2 to 5 classes."""
    rng = np.random.default_rng(0)
    cases = [[n] * c for c in range(2, 6) for n in (2, 5, 10, 31)]
    cases += [[2, 50], [3, 97], [40, 5, 5], [9, 9, 2], [7, 7, 7, 3], [100, 20, 20, 2, 2], [4, 4, 6, 6, 8]]
    cases += [[1, 1, 1], [600, 300, 100]]
    cases += [rng.integers(1, 80, size=c).tolist() for c in (2, 3, 4, 5) for _ in range(4)]
    return cases


def _label_kinds(codes: np.ndarray) -> list[np.ndarray]:
    """The same classes as ints, integral floats and strings whose sorted order is not the order of
    first appearance (so scikit-learn's re-encoding by appearance is exercised)."""
    names = np.array(["delta", "alpha", "echo", "bravo", "charlie"])
    return [
        codes.astype(np.int64),
        (10 - 3 * codes).astype(np.int64),
        (codes * -2.0 + 1.0).astype(np.float64),
        names[codes],
        names[codes].astype(object),
    ]


def _sklearn_folds(splitter: type[KFold] | type[StratifiedKFold], k: int, seed: int, x: Any, y: Any) -> Any:
    """scikit-learn's shuffled folds (made inside the call: a bad ``k`` fails in the constructor)."""
    return list(splitter(k, shuffle=True, random_state=seed).split(x, y))


@pytest.mark.parametrize("k", KS)
def test_stratified_folds_are_scikit_learns(k: int) -> None:
    rng = np.random.default_rng(k)
    for counts, seed in itertools.product(_class_counts(), SEEDS):
        codes = rng.permutation(np.repeat(np.arange(len(counts)), counts))
        for y in _label_kinds(codes):
            x = np.zeros((len(y), 2), np.float32)
            _assert_same_folds(
                partial(stratified_kfold, y, k, seed), partial(_sklearn_folds, StratifiedKFold, k, seed, x, y)
            )


@pytest.mark.parametrize("k", KS)
def test_plain_folds_are_scikit_learns(k: int) -> None:
    for n_rows, seed in itertools.product((1, k - 1, k, k + 1, 2 * k + 3, 17, 100, 569, 1000), SEEDS):
        x = np.zeros((n_rows, 3), np.float32)
        _assert_same_folds(partial(kfold, n_rows, k, seed), partial(_sklearn_folds, KFold, k, seed, x, None))


def test_cv_folds_are_scikit_learns_for_both_tasks() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(455, 4)).astype(np.float32)
    codes = rng.integers(0, 3, size=455)
    values = rng.normal(size=455).astype(np.float32)
    for k, seed in itertools.product((3, 5), (0, 42)):
        _assert_same_folds(
            partial(folds, x, codes, CLASSIFICATION, k, seed),
            partial(_sklearn_folds, StratifiedKFold, k, seed, x, codes),
        )
        _assert_same_folds(
            partial(folds, x, values, REGRESSION, k, seed), partial(_sklearn_folds, KFold, k, seed, x, values)
        )


def test_bad_fold_counts_and_labels_fail_as_scikit_learn_does() -> None:
    codes = np.repeat(np.arange(3), [4, 4, 2])
    x = np.zeros((10, 1))
    for k in (1, 0, 11):  # too few folds; more folds than rows
        _assert_same_folds(
            partial(stratified_kfold, codes, k, 0), partial(_sklearn_folds, StratifiedKFold, k, 0, x, codes)
        )
        _assert_same_folds(partial(kfold, 10, k, 0), partial(_sklearn_folds, KFold, k, 0, x, None))
    fractional = np.array([0.5, 1.5] * 5)  # not classes
    _assert_same_folds(
        partial(stratified_kfold, fractional, 2, 0),
        partial(_sklearn_folds, StratifiedKFold, 2, 0, x, fractional),
    )


FRAME_DTYPES = ("int64", "float64", "bool", "object", "str", "string", "category", "Int64")


def _frame(n_rows: int, n_classes: int, dtype: str, rng: np.random.Generator) -> pd.DataFrame:
    """A table with a non-default (shuffled) index and a target of ``dtype``, every class twice at least."""
    codes = rng.permutation(np.r_[np.repeat(np.arange(n_classes), 2), rng.integers(0, n_classes, n_rows)])
    values: Any
    if dtype in ("object", "str", "string", "category"):
        values = pd.array(np.array(["q", "b", "z", "a", "m"])[codes].astype(object), dtype=dtype)
    elif dtype == "bool":
        values = (codes % 2).astype(bool)
    elif dtype == "float64":
        values = 0.5 - codes * 1.5
    else:
        values = pd.array(7 - 2 * codes, dtype=dtype)
    index = rng.permutation(len(codes)) * 3 + 100
    return pd.DataFrame({"a": rng.normal(size=len(codes)), "c": codes.astype(str), "y": values}, index=index)


def _assert_same_frames(df: pd.DataFrame, test_size: float, seed: int, stratify: str | None) -> None:
    try:
        expected = train_test_split(
            df, test_size=test_size, random_state=seed, stratify=df[stratify] if stratify else None
        )
    except ValueError as err:
        with pytest.raises(ValueError) as raised:
            train_test_frames(df, test_size, seed, stratify)
        assert str(raised.value) == str(err)
        return
    got = train_test_frames(df, test_size, seed, stratify)
    for mine, theirs in zip(got, expected, strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
        assert mine.index.equals(theirs.index)


@pytest.mark.parametrize("dtype", FRAME_DTYPES)
def test_prepare_split_of_a_frame_is_scikit_learns(dtype: str) -> None:
    rng = np.random.default_rng(len(dtype))
    n_classes = 2 if dtype == "bool" else 5
    for n_rows, test_size, seed in itertools.product((0, 7, 40, 301), (0.1, 0.2, 0.25, 0.5), SEEDS):
        df = _frame(n_rows, n_classes, dtype, rng)
        _assert_same_frames(df, test_size, seed, "y")  # small tables: fewer test rows than classes
        _assert_same_frames(df, test_size, seed, None)


def test_a_one_row_table_fails_to_split_as_scikit_learn_does() -> None:
    _assert_same_frames(pd.DataFrame({"a": [1.0], "y": [2.0]}, index=[9]), 0.2, 0, None)


def test_cv_and_prepare_split_rows_without_scikit_learn_or_scipy() -> None:
    # What the cv stage (and each of its pool processes) and the prepare stage do.
    code = (
        "import sys; import numpy as np; import pandas as pd; import hpopipe.cv, hpopipe.data; "
        "from hpopipe.training.loop import Task; "
        "x = np.zeros((30, 2), np.float32); y = np.repeat(np.arange(3), 10); "
        "hpopipe.cv.folds(x, y, Task('classification', 3, 'accuracy'), 5, 0); "
        "hpopipe.cv.folds(x, y * 1.5, Task('regression', 0, 'rmse'), 5, 0); "
        "df = pd.DataFrame({'a': np.arange(30.0), 'y': np.array(list('pqr'))[y]}); "
        "hpopipe.data.train_test_frames(df, 0.2, 0, 'y'); hpopipe.data.train_test_frames(df, 0.2, 0, None)"
    )
    assert scikit_learn_loaded_after(code) == []
