"""scikit-learn's shuffled ``KFold`` and ``StratifiedKFold`` folds, in numpy alone.

The cv stage used to take its folds from ``sklearn.model_selection``, whose import (scipy
under it) cost the stage and every one of its pool processes ~0.5 s of CPU for one call.
These functions mirror scikit-learn 1.9's algorithm step for step (``_BaseKFold.split``,
``KFold._iter_test_indices``, ``StratifiedKFold._make_test_folds`` and the masks
``BaseCrossValidator.split`` turns into indices), drawing from one
``np.random.RandomState(seed)`` in the same order, so the folds are bit-identical to
scikit-learn's with ``shuffle=True, random_state=seed``: the CV scores, the selected trial and
the committed ``dvc.lock`` depend on that. ``tests/test_fold_equivalence.py`` holds them
equal to scikit-learn over many cases.

Only numpy here, as in :mod:`.shuffle_split`: scikit-learn or scipy imported by this module
would undo its reason to be.
"""

from __future__ import annotations

import warnings

import numpy as np

Folds = list[tuple[np.ndarray, np.ndarray]]


def _check_splits(n_samples: int, k: int) -> None:
    """scikit-learn's errors for too few folds or too few rows, word for word."""
    if k <= 1:
        raise ValueError(
            "k-fold cross-validation requires at least one train/test split by setting "
            f"n_splits=2 or more, got n_splits={k}."
        )
    if k > n_samples:
        raise ValueError(
            f"Cannot have number of splits n_splits={k} greater than the number of samples: "
            f"n_samples={n_samples}."
        )


def _from_test_folds(test_folds: np.ndarray, k: int) -> Folds:
    """``(train, test)`` row indices per fold, both ascending, from each row's test fold.

    scikit-learn goes through a boolean mask per fold, so the rows come out in row order
    whatever order they were drawn in.
    """
    indices = np.arange(len(test_folds))
    return [(indices[test_folds != fold], indices[test_folds == fold]) for fold in range(k)]


def kfold(n_samples: int, k: int, seed: int) -> Folds:
    """The folds of ``KFold(k, shuffle=True, random_state=seed).split`` over ``n_samples`` rows.

    One shuffle of the row numbers; consecutive runs of it are the test folds,
    ``n_samples // k`` rows each and one more for the first ``n_samples % k``.
    """
    _check_splits(n_samples, k)
    order = np.arange(n_samples)
    np.random.RandomState(seed).shuffle(order)
    fold_sizes = np.full(k, n_samples // k, dtype=int)
    fold_sizes[: n_samples % k] += 1
    test_folds = np.empty(n_samples, dtype=int)
    test_folds[order] = np.repeat(np.arange(k), fold_sizes)
    return _from_test_folds(test_folds, k)


def _encode_by_appearance(y: np.ndarray) -> np.ndarray:
    """Class codes ``0, 1, ...`` in the order the classes first appear in ``y`` (not sorted order)."""
    _, first_row, sorted_codes = np.unique(y, return_index=True, return_inverse=True)
    _, class_perm = np.unique(first_row, return_inverse=True)
    return class_perm[sorted_codes.reshape(-1)]


def _check_labels(y: np.ndarray) -> None:
    """scikit-learn's refusal of a float target with fractional values (not classes)."""
    if y.dtype.kind == "f" and np.any(y != y.astype(int)):
        raise ValueError("Supported target types are: ('binary', 'multiclass'). Got 'continuous' instead.")


def stratified_kfold(y: np.ndarray, k: int, seed: int) -> Folds:
    """The folds of ``StratifiedKFold(k, shuffle=True, random_state=seed).split`` for the labels ``y``.

    Each class's rows are dealt to the folds round-robin over the rows sorted by class, then
    each class's fold numbers (classes in order of first appearance) are shuffled by the one
    generator. Raises scikit-learn's ``ValueError`` when ``k`` exceeds every class's rows and
    warns as it does when it exceeds the smallest's (``data.check_folds`` refuses that first).
    """
    y = np.asarray(y)
    _check_splits(len(y), k)
    rng = np.random.RandomState(seed)
    _check_labels(y)
    encoded = _encode_by_appearance(y)
    n_classes = int(encoded.max()) + 1
    counts = np.bincount(encoded)
    if np.all(k > counts):
        raise ValueError(f"n_splits={k} cannot be greater than the number of members in each class.")
    if k > np.min(counts):
        warnings.warn(
            f"The least populated class in y has only {np.min(counts)} members, which is less "
            f"than n_splits={k}.",
            UserWarning,
            stacklevel=2,
        )
    by_class = np.sort(encoded)
    allocation = np.asarray([np.bincount(by_class[i::k], minlength=n_classes) for i in range(k)])
    test_folds = np.empty(len(y), dtype="i")
    for cls in range(n_classes):
        folds_for_class = np.arange(k).repeat(allocation[:, cls])
        rng.shuffle(folds_for_class)
        test_folds[encoded == cls] = folds_for_class
    return _from_test_folds(test_folds, k)
