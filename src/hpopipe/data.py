"""Load a user's table, validate it, split it and turn it into model-ready numbers.

The transform is fitted on the training split only and written out as a plain
JSON schema, so that ``predict`` can apply exactly the same steps to new rows
without unpickling anything.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpopipe.config import DataConfig, Params
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.schema import PreparedSchema
from hpopipe.metrics import AUTO, CATALOGUE
from hpopipe.training.shuffle_split import train_test_indices

log = logging.getLogger(__name__)

TARGET = "__target__"
MISSING = "__missing__"
OTHER = "__other__"
# Column names the prepared frames use themselves: a feature by one of these names would be overwritten.
RESERVED_COLUMNS = frozenset({TARGET})
# The largest magnitude a float32 holds: features and targets become float32 tensors.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# An integer target with at most this many distinct values is read as classes.
MAX_AUTO_CLASSES = 20


@dataclass(frozen=True)
class Prepared:
    """The two splits (features + encoded target) and the fitted schema."""

    train: pd.DataFrame
    test: pd.DataFrame
    schema: PreparedSchema


def read_table(path: Path, field: str = "data.path") -> pd.DataFrame:
    """Read a CSV or Parquet file, turning every failure into a one-line error naming ``field``."""
    if not path.exists():
        raise HpopipeError(f"{field}: {path}: file not found")
    if path.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise HpopipeError(f"{field}: {path}: must be a .csv or .parquet file")
    if path.is_file() and path.stat().st_size == 0:
        raise HpopipeError(f"{field}: {path}: the file is empty (0 bytes)")
    is_csv = path.suffix.lower() == ".csv"
    try:
        header = _csv_header(path) if is_csv else []
        df = pd.read_csv(path) if is_csv else pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError, csv.Error) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HpopipeError(f"{field}: {path}: cannot read table ({first})") from None
    # pandas renames a repeated CSV header to 'a.1' without a word: count the names as written.
    names = header if is_csv else [str(c) for c in df.columns]
    repeated = sorted(n for n, k in Counter(names).items() if k > 1 and n.strip())
    if repeated:
        raise HpopipeError(f"{field}: {path}: column name(s) {repeated} appear more than once in the header")
    if df.empty or df.shape[1] == 0:
        raise HpopipeError(f"{field}: {path}: the table is empty")
    return df


def _csv_header(path: Path) -> list[str]:
    """The first non-blank row of a CSV file, as written (pandas would de-duplicate it)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        for row in csv.reader(handle):
            if any(cell.strip() for cell in row):
                return row
    return []


def _drop_index_columns(df: pd.DataFrame) -> pd.DataFrame:
    # pandas names a header-less column 'Unnamed: N'; it is almost always an exported row index.
    unnamed = [c for c in df.columns if str(c).strip() == "" or str(c).startswith("Unnamed: ")]
    if unnamed:
        log.info("dropping %d column(s) with an empty header: %s", len(unnamed), unnamed)
    return df.drop(columns=unnamed)


def infer_task(y: pd.Series) -> str:
    """Classes for text, booleans and small sets of integers; otherwise regression."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.to_numpy(dtype=float)
    if np.all(np.mod(values, 1) == 0) and y.nunique() <= MAX_AUTO_CLASSES:
        return "classification"
    return "regression"


def target_task(df: pd.DataFrame, cfg: DataConfig) -> str:
    """The task prepare gives this table: ``data.task``, or inferred from the target's values.

    ``hpopipe validate`` and ``hpopipe space export`` use it to resolve ``hpo.metric: auto`` and
    to name a missing target or a metric that does not fit, before anything is prepared.
    """
    if cfg.target not in df.columns:
        raise HpopipeError(f"data.target: column {cfg.target!r} is not in {cfg.path}")
    # As prepare: rows without a target are dropped before the task is inferred.
    return cfg.task if cfg.task != "auto" else infer_task(df[cfg.target].dropna())


def for_data(params: Params, df: pd.DataFrame) -> Params:
    """``params`` with ``hpo.metric: auto`` resolved for the task of ``df``, the table ``data.path`` names.

    Refuses a metric (or a further objective) that cannot score that task, naming the key.
    """
    task = target_task(df, params.data)
    resolved = params.for_task(task)
    named = [("hpo.metric", resolved.hpo.metric)]
    named += [("hpo.metrics", name) for name in resolved.hpo.objectives[1:] if name in CATALOGUE]
    for key, name in named:
        if CATALOGUE[name].task != task:
            fits = ", ".join(n for n, spec in CATALOGUE.items() if spec.task == task)
            raise HpopipeError(
                f"{key}: {name!r} is for {CATALOGUE[name].task}, but {params.data.target!r} in "
                f"{params.data.path} is a {task} target (use auto or one of {fits})"
            )
    return resolved


def with_metric(params: Params) -> Params:
    """``hpo.metric: auto`` resolved without a prepared schema: from ``data.task``, else from the table."""
    if params.hpo.metric != AUTO:
        return params
    if params.data.task != "auto":
        return params.for_task(params.data.task)
    return for_data(params, read_table(params.data.path))


def data_fingerprint(train: pd.DataFrame, schema: dict[str, Any]) -> str:
    """Content hash of the prepared training rows and their schema (the study's and the model's data id)."""
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(train, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _clean(df: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    df = _drop_index_columns(df)
    if cfg.target not in df.columns:
        raise HpopipeError(f"data.target: column {cfg.target!r} is not in {cfg.path}")
    reserved = sorted(str(c) for c in df.columns if c in RESERVED_COLUMNS and c != cfg.target)
    if reserved:
        raise HpopipeError(
            f"data.path: {cfg.path}: column name(s) {reserved} are reserved for hpopipe's own use; "
            "rename them"
        )
    missing_drops = [c for c in cfg.drop_columns if c not in df.columns]
    if missing_drops:
        raise HpopipeError(f"data.drop_columns: {missing_drops} not in {cfg.path}")
    if cfg.target in cfg.drop_columns:
        raise HpopipeError("data.drop_columns: cannot drop the target column")
    df = df.drop(columns=list(cfg.drop_columns))
    n_missing = int(df[cfg.target].isna().sum())
    if n_missing == len(df):
        raise HpopipeError(f"data.target: every value of {cfg.target!r} is missing")
    if n_missing:
        log.info("dropped %d row(s) with a missing target", n_missing)
        df = df[df[cfg.target].notna()].reset_index(drop=True)
    if df.shape[1] < 2:
        raise HpopipeError(f"data.path: {cfg.path}: no feature columns besides the target")
    return df


def _check_target(y: pd.Series, task: str, cfg: DataConfig) -> None:
    if y.nunique() < 2:
        raise HpopipeError(f"data.target: {cfg.target!r} is constant ({y.iloc[0]!r})")
    if task == "regression" and not pd.api.types.is_numeric_dtype(y):
        raise HpopipeError(f"data.target: {cfg.target!r} is not numeric, so it cannot be regressed")
    if task == "regression":
        problem = _out_of_range(y.to_numpy(dtype=float)) or _unscalable(y.to_numpy(dtype=np.float32))
        if problem:
            raise HpopipeError(f"data.target: {cfg.target!r} has {problem} in {cfg.path}")
    if task == "classification":
        counts = y.value_counts()
        # Stratification and k-fold CV both need every class in every split.
        if counts.min() < 2:
            raise HpopipeError(
                f"data.target: class {counts.idxmin()!r} has {counts.min()} row(s); "
                "at least 2 are needed to stratify the split"
            )


def _out_of_range(values: np.ndarray) -> str | None:
    """What a float32 tensor cannot hold: infinities, and magnitudes past float32's range.

    NaN is a missing value (imputed for features, dropped for the target), not this.
    """
    present = values[~np.isnan(values)]
    n_inf = int(np.isinf(present).sum())
    if n_inf:
        return f"{n_inf} infinite value(s)"
    n_big = int((np.abs(present) > FLOAT32_MAX).sum())
    if n_big:
        return f"{n_big} value(s) beyond float32's range (|x| > {FLOAT32_MAX:.3g})"
    return None


def _unscalable(y: np.ndarray) -> str | None:
    # The training loop standardises the target with float32 statistics (hpopipe.training.loop).
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(np.mean(y)) and np.isfinite(np.std(y))
    return (
        None
        if ok
        else f"values too large to standardise in float32 (up to {np.abs(y).max():.3g}; rescale it)"
    )


def _check_features(df: pd.DataFrame, cfg: DataConfig) -> None:
    """Refuse numeric features a model cannot train on, naming the column (a missing value is fine)."""
    for name in df.columns:
        col = df[name]
        if name == cfg.target or pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            continue
        problem = _out_of_range(col.to_numpy(dtype=float))
        if problem:
            raise HpopipeError(
                f"data.path: column {str(name)!r} has {problem} in {cfg.path} "
                "(drop the column with data.drop_columns, or clean it)"
            )


def train_test_frames(
    df: pd.DataFrame, test_size: float, seed: int, stratify: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``train_test_split(df, test_size=test_size, random_state=seed, stratify=df[stratify])``, without it.

    The rows scikit-learn picks, computed in numpy (:mod:`hpopipe.training.shuffle_split`: importing
    scikit-learn and scipy for one split cost the prepare stage ~0.5 s) and taken as it takes them
    (``DataFrame.take``): same rows, order and index labels, same ``ValueError`` words.
    ``stratify`` names the column whose classes each part keeps in proportion (None: plain shuffle).
    """
    # Unstratified, only the number of rows counts.
    labels = df[stratify].to_numpy() if stratify is not None else np.arange(len(df))
    train, test = train_test_indices(labels, test_size, seed, stratify=stratify is not None)
    return df.take(train), df.take(test)


def _split(df: pd.DataFrame, task: str, cfg: DataConfig, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    stratify = cfg.target if task == "classification" else None
    try:
        train, test = train_test_frames(df, cfg.test_size, seed, stratify)
    except ValueError as err:
        raise HpopipeError(f"data.test_size: cannot split {len(df)} rows ({err})") from None
    return train.reset_index(drop=True), test.reset_index(drop=True)


def _fit_numeric(col: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(col, errors="coerce")
    fill = float(values.median()) if values.notna().any() else 0.0
    filled = values.fillna(fill)
    std = float(filled.std(ddof=0))
    return {
        "fill": fill,
        "mean": float(filled.mean()),
        "std": std if std > 0 else 1.0,
        "indicator": bool(values.isna().any()),
    }


def _fit_categorical(col: pd.Series, max_categories: int) -> dict[str, Any]:
    counts = col.astype("string").fillna(MISSING).value_counts(sort=True)
    # Ties broken by name so the encoding does not depend on row order.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = (
        [str(k) for k, _ in ranked[: max_categories - 1]]
        if len(ranked) > max_categories
        else [str(k) for k, _ in ranked]
    )
    return {"categories": sorted(kept), "other": len(ranked) > max_categories}


def fit_schema(train: pd.DataFrame, task: str, cfg: DataConfig, n_test: int) -> PreparedSchema:
    """Learn the feature transform from the training split only (``n_test`` is recorded with it)."""
    features = [c for c in train.columns if c != cfg.target]
    numeric, categorical = {}, {}
    for name in features:
        col = train[name]
        if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            categorical[str(name)] = _fit_categorical(col, cfg.max_categories)
        else:
            numeric[str(name)] = _fit_numeric(col)
    y = train[cfg.target]
    classes = sorted(y.unique().tolist(), key=lambda v: (str(type(v)), v)) if task == "classification" else []
    columns = feature_names(numeric, categorical)
    clashes = sorted({n for n in columns if columns.count(n) > 1})
    if clashes:
        raise HpopipeError(f"data.path: derived feature name(s) {clashes} clash with a column; rename it")
    return PreparedSchema.model_validate(
        {
            "version": 1,
            "target": cfg.target,
            "task": task,
            "classes": [_jsonable(c) for c in classes],
            "input_columns": [str(c) for c in features],
            "numeric": numeric,
            "categorical": categorical,
            "feature_columns": columns,
            "n_rows": {"train": len(train), "test": n_test},
        }
    )


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def feature_names(numeric: dict[str, dict[str, Any]], categorical: dict[str, dict[str, Any]]) -> list[str]:
    """Output column order of :func:`transform`, from the fitted numeric and categorical specs."""
    names: list[str] = []
    for name, spec in numeric.items():
        names.append(name)
        if spec["indicator"]:
            names.append(f"{name}__missing")
    for name, spec in categorical.items():
        names += [f"{name}={c}" for c in spec["categories"]]
        if spec["other"]:
            names.append(f"{name}={OTHER}")
    return names


def transform(df: pd.DataFrame, schema: PreparedSchema, source: str = "input") -> pd.DataFrame:
    """Apply a fitted schema to rows; refuses missing or unexpected columns."""
    expected = schema.input_columns
    missing = [c for c in expected if c not in df.columns]
    extra = [c for c in df.columns if c not in expected and c != schema.target]
    if missing:
        raise HpopipeError(f"{source}: missing column(s) {missing}")
    if extra:
        raise HpopipeError(f"{source}: unexpected column(s) {extra}")
    out: dict[str, np.ndarray] = {}
    for name, num in schema.numeric.items():
        values = pd.to_numeric(df[name], errors="coerce")
        out[name] = ((values.fillna(num.fill) - num.mean) / num.std).to_numpy(np.float32)
        if num.indicator:
            out[f"{name}__missing"] = values.isna().to_numpy(np.float32)
    for name, cat_spec in schema.categorical.items():
        col = df[name].astype("string").fillna(MISSING)
        known = set(cat_spec.categories)
        for cat in cat_spec.categories:
            out[f"{name}={cat}"] = (col == cat).to_numpy(np.float32)
        if cat_spec.other:
            out[f"{name}={OTHER}"] = (~col.isin(known)).to_numpy(np.float32)
    return pd.DataFrame(out, columns=list(schema.feature_columns), index=df.index)


def encode_target(y: pd.Series, schema: PreparedSchema) -> np.ndarray:
    """Class index for classification, float value for regression."""
    if schema.task == "regression":
        return y.to_numpy(dtype=np.float32)
    index = {c: i for i, c in enumerate(schema.classes)}
    return np.array([index[_jsonable(v)] for v in y], dtype=np.int64)


def decode_target(codes: np.ndarray, schema: PreparedSchema) -> list[Any]:
    """Inverse of :func:`encode_target` for classification outputs."""
    return [schema.classes[int(i)] for i in codes]


def prepare(df: pd.DataFrame, cfg: DataConfig, seed: int) -> Prepared:
    """Clean, split and transform a raw table (see the README for every step)."""
    df = _clean(df, cfg)
    y = df[cfg.target]
    task = infer_task(y) if cfg.task == "auto" else cfg.task
    _check_target(y, task, cfg)
    _check_features(df, cfg)
    train_raw, test_raw = _split(df, task, cfg, seed)
    schema = fit_schema(train_raw, task, cfg, len(test_raw))
    splits = []
    for part in (train_raw, test_raw):
        frame = transform(part.drop(columns=[cfg.target]), schema)
        frame[TARGET] = encode_target(part[cfg.target], schema)
        splits.append(frame)
    return Prepared(train=splits[0], test=splits[1], schema=schema)


def check_folds(y: np.ndarray, schema: PreparedSchema, folds: int, source: str) -> None:
    """Refuse a ``cv.folds`` the training rows cannot fill, before any fold is fitted.

    scikit-learn only warns when a class has fewer rows than folds (some folds
    then lack the class, and their scores mean something else), so this is
    checked here, by name, instead.
    """
    if len(y) < folds:
        raise HpopipeError(
            f"cv.folds: {folds} folds need at least {folds} training rows; {source} has {len(y)}"
        )
    if schema.task != "classification":
        return
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(schema.classes))
    smallest = int(counts.argmin())
    if counts[smallest] < folds:
        raise HpopipeError(
            f"cv.folds: {folds} folds need at least {folds} rows of every class; "
            f"class {schema.classes[smallest]!r} has {int(counts[smallest])} in {source}"
        )


def to_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Split a prepared frame into a float32 feature matrix and the target vector."""
    x = frame.drop(columns=[TARGET]).to_numpy(dtype=np.float32)
    return x, frame[TARGET].to_numpy()
