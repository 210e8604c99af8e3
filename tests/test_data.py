"""hpopipe.data on the repo's breast-cancer table and on Palmer penguins (mixed types, missing values)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from hpopipe import data
from hpopipe.config import DataConfig
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.schema import PreparedSchema, read_schema, write_schema
from hpopipe.training.loop import task_of

REPO = Path(__file__).resolve().parents[1]
BREAST_CANCER = REPO / "data" / "raw" / "breast_cancer.csv"
PENGUIN_NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
PENGUIN_MEASURED = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    return load_penguins()


@pytest.fixture
def penguins_csv(tmp_path: Path, penguins: pd.DataFrame) -> Path:
    """Penguins written with its row index, as an export from pandas often is."""
    path = tmp_path / "penguins.csv"
    penguins.to_csv(path, index=True)
    return path


def prepare_file(path: Path, target: str, seed: int = 0, **kw: object) -> data.Prepared:
    cfg = DataConfig(path=path, target=target, **kw)  # type: ignore[arg-type]
    return data.prepare(data.read_table(path), cfg, seed)


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[data.TARGET])


# --- the repo's table -----------------------------------------------------------------------------


def test_breast_cancer_prepares() -> None:
    raw = pd.read_csv(BREAST_CANCER)
    prepared = prepare_file(BREAST_CANCER, "diagnosis", seed=42, test_size=0.2)
    schema = prepared.schema.model_dump(mode="json")
    assert schema["task"] == "classification"
    assert schema["classes"] == ["benign", "malignant"]
    assert schema["categorical"] == {}
    assert list(schema["numeric"]) == [c for c in raw.columns if c != "diagnosis"]
    assert not any(spec["indicator"] for spec in schema["numeric"].values())
    assert schema["feature_columns"] == [c for c in raw.columns if c != "diagnosis"]
    assert schema["n_rows"] == {"train": 455, "test": 114}
    assert len(prepared.train) == 455 and len(prepared.test) == 114
    assert list(prepared.train.columns) == [*schema["feature_columns"], data.TARGET]
    for frame in (prepared.train, prepared.test):
        assert not frame.isna().any().any()
        assert set(frame[data.TARGET]) == {0, 1}
        assert frame[data.TARGET].dtype == np.int64
        assert (features(frame).dtypes == np.float32).all()


def test_breast_cancer_split_is_stratified() -> None:
    raw = pd.read_csv(BREAST_CANCER)
    prepared = prepare_file(BREAST_CANCER, "diagnosis", seed=42)
    overall = (raw["diagnosis"] == "malignant").mean()
    for frame in (prepared.train, prepared.test):
        # stratification rounds to one row per split, at most
        assert abs(frame[data.TARGET].mean() - overall) <= 1 / len(frame)


def test_breast_cancer_train_statistics_only() -> None:
    prepared = prepare_file(BREAST_CANCER, "diagnosis", seed=42)
    train_x, test_x = features(prepared.train), features(prepared.test)
    np.testing.assert_allclose(train_x.mean().to_numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(ddof=0).to_numpy(), 1.0, atol=1e-4)
    # The test split is scaled with the train statistics, so it is only roughly standard.
    assert np.abs(test_x.mean().to_numpy()).max() > 1e-3
    raw = pd.read_csv(BREAST_CANCER)
    for name, spec in prepared.schema.model_dump()["numeric"].items():
        # Undoing the stored affine map recovers every original value: train and test together.
        recovered = np.concatenate([train_x[name], test_x[name]]) * spec["std"] + spec["mean"]
        np.testing.assert_allclose(np.sort(recovered), np.sort(raw[name].to_numpy()), rtol=1e-5, atol=1e-5)
        assert spec["mean"] != pytest.approx(raw[name].mean(), rel=1e-9, abs=0)


# --- penguins: mixed types and missing values -------------------------------------------------------


def test_index_column_from_csv_is_dropped(penguins_csv: Path) -> None:
    assert "Unnamed: 0" in pd.read_csv(penguins_csv).columns
    prepared = prepare_file(penguins_csv, "species")
    assert "Unnamed: 0" not in prepared.schema.input_columns
    assert not any(c.startswith("Unnamed") for c in prepared.train.columns)
    assert list(prepared.schema.input_columns) == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
        "year",
    ]


def test_blank_header_column_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    rows = "".join(f"{i},{i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(20))
    path.write_text(" ,,x,y\n" + rows, encoding="utf-8")
    prepared = prepare_file(path, "y")
    assert prepared.schema.input_columns == ("x",)


def test_penguins_classification_schema(penguins_csv: Path) -> None:
    schema = prepare_file(penguins_csv, "species").schema.model_dump(mode="json")
    assert schema["task"] == "classification"
    assert schema["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert list(schema["numeric"]) == PENGUIN_NUMERIC
    assert set(schema["categorical"]) == {"island", "sex"}
    assert schema["categorical"]["island"] == {"categories": ["Biscoe", "Dream", "Torgersen"], "other": False}
    assert schema["categorical"]["sex"] == {"categories": ["__missing__", "female", "male"], "other": False}
    for name in PENGUIN_MEASURED:
        assert schema["numeric"][name]["indicator"] is True
    assert schema["numeric"]["year"]["indicator"] is False
    assert schema["feature_columns"] == [
        "bill_length_mm",
        "bill_length_mm__missing",
        "bill_depth_mm",
        "bill_depth_mm__missing",
        "flipper_length_mm",
        "flipper_length_mm__missing",
        "body_mass_g",
        "body_mass_g__missing",
        "year",
        "island=Biscoe",
        "island=Dream",
        "island=Torgersen",
        "sex=__missing__",
        "sex=female",
        "sex=male",
    ]


def test_penguins_frames_are_complete_and_encoded(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    prepared = prepare_file(penguins_csv, "species")
    both = pd.concat([prepared.train, prepared.test], ignore_index=True)
    assert len(both) == len(penguins) == 344
    assert not both.isna().any().any()
    # Missing-value indicators mark exactly the rows that had a NaN.
    for name in PENGUIN_MEASURED:
        assert both[f"{name}__missing"].sum() == penguins[name].isna().sum() == 2
        missing_rows = both[both[f"{name}__missing"] == 1.0]
        spec = prepared.schema.numeric[name]
        filled = (spec.fill - spec.mean) / spec.std
        np.testing.assert_allclose(missing_rows[name], filled, rtol=1e-6)
    # One-hot: exactly one column per categorical is set; missing sex has its own column.
    for name in ("island", "sex"):
        onehot = both[[c for c in both.columns if c.startswith(f"{name}=")]]
        assert set(onehot.to_numpy().ravel()) == {0.0, 1.0}
        assert (onehot.sum(axis=1) == 1.0).all()
    assert both["sex=__missing__"].sum() == penguins["sex"].isna().sum() == 11
    assert both["island=Torgersen"].sum() == (penguins["island"] == "Torgersen").sum()
    counts = both[data.TARGET].value_counts().sort_index().tolist()
    assert counts == penguins["species"].value_counts().sort_index().tolist()


def test_penguins_standardised_with_train_statistics(penguins_csv: Path) -> None:
    prepared = prepare_file(penguins_csv, "species")
    train_x = features(prepared.train)[PENGUIN_NUMERIC]
    test_x = features(prepared.test)[PENGUIN_NUMERIC]
    np.testing.assert_allclose(train_x.mean().to_numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(train_x.std(ddof=0).to_numpy(), 1.0, atol=1e-4)
    assert not np.allclose(test_x.mean().to_numpy(), 0.0, atol=1e-3)
    assert not np.allclose(test_x.std(ddof=0).to_numpy(), 1.0, atol=1e-3)


def test_penguins_stratified_split(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    prepared = prepare_file(penguins_csv, "species", test_size=0.3)
    classes = prepared.schema.classes
    overall = penguins["species"].value_counts(normalize=True)
    for frame in (prepared.train, prepared.test):
        share = frame[data.TARGET].value_counts(normalize=True)
        for code, label in enumerate(classes):
            assert abs(share[code] - overall[label]) <= 1 / len(frame)


def test_same_seed_same_frames_other_seed_other_split(penguins_csv: Path) -> None:
    a = prepare_file(penguins_csv, "species", seed=3)
    b = prepare_file(penguins_csv, "species", seed=3)
    c = prepare_file(penguins_csv, "species", seed=4)
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert a.schema == b.schema
    assert not a.train.equals(c.train)


def test_missing_target_rows_are_dropped_and_counted(
    penguins: pd.DataFrame, penguins_csv: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hpopipe.data"):
        prepared = prepare_file(penguins_csv, "body_mass_g")
    assert penguins["body_mass_g"].isna().sum() == 2
    assert "dropped 2 row(s) with a missing target" in caplog.text
    assert prepared.schema.n_rows.train + prepared.schema.n_rows.test == 342
    assert len(prepared.train) + len(prepared.test) == 342


def test_penguins_regression(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    prepared = prepare_file(penguins_csv, "body_mass_g")
    schema = prepared.schema.model_dump(mode="json")
    assert schema["task"] == "regression"
    assert schema["classes"] == []
    assert set(schema["categorical"]) == {"species", "island", "sex"}
    assert "body_mass_g" not in schema["input_columns"]
    # The two rows without body mass were the only ones missing the other measurements.
    for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm"):
        assert schema["numeric"][name]["indicator"] is False
        assert f"{name}__missing" not in schema["feature_columns"]
    assert "sex=__missing__" in schema["feature_columns"]
    y = pd.concat([prepared.train, prepared.test])[data.TARGET]
    assert y.dtype == np.float32
    assert sorted(y.tolist()) == sorted(penguins["body_mass_g"].dropna().tolist())
    assert not prepared.train.isna().any().any() and not prepared.test.isna().any().any()


def test_rare_categories_fold_into_other(penguins_csv: Path) -> None:
    prepared = prepare_file(penguins_csv, "species", max_categories=2)
    island = prepared.schema.categorical["island"].model_dump(mode="json")
    assert island == {"categories": ["Biscoe"], "other": True}
    both = pd.concat([prepared.train, prepared.test])
    assert (both["island=Biscoe"] + both["island=__other__"] == 1.0).all()


def test_parquet_reads_like_csv(tmp_path: Path, penguins: pd.DataFrame, penguins_csv: Path) -> None:
    path = tmp_path / "penguins.parquet"
    penguins.to_parquet(path)
    from_parquet = prepare_file(path, "species", seed=5)
    from_csv = prepare_file(penguins_csv, "species", seed=5)
    assert from_parquet.schema == from_csv.schema
    pd.testing.assert_frame_equal(from_parquet.train, from_csv.train)


# --- transform on new rows and the schema file --------------------------------------------------------


def test_transform_new_rows(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    schema = prepare_file(penguins_csv, "species").schema
    new = penguins.drop(columns=["species"]).head(4).copy()
    new.loc[0, "island"] = "Atlantis"  # never seen: no one-hot column is set
    new.loc[1, "sex"] = None
    new.loc[2, "bill_depth_mm"] = np.nan
    new.loc[3, "year"] = np.nan  # no indicator for year: filled, not flagged
    out = data.transform(new, schema)
    assert list(out.columns) == list(schema.feature_columns)
    assert not out.isna().any().any()
    assert out.loc[0, ["island=Biscoe", "island=Dream", "island=Torgersen"]].sum() == 0.0
    assert out.loc[1, "sex=__missing__"] == 1.0
    assert out.loc[2, "bill_depth_mm__missing"] == 1.0
    assert out.loc[1, "bill_depth_mm__missing"] == 0.0
    spec = schema.numeric["bill_length_mm"]
    expected = (penguins.loc[1, "bill_length_mm"] - spec.mean) / spec.std
    assert out.loc[1, "bill_length_mm"] == pytest.approx(expected, rel=1e-6)
    year = schema.numeric["year"]
    assert out.loc[3, "year"] == pytest.approx((year.fill - year.mean) / year.std, rel=1e-6)


def test_transform_ignores_target_column(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    schema = prepare_file(penguins_csv, "species").schema
    with_target = data.transform(penguins.head(5), schema)
    without = data.transform(penguins.head(5).drop(columns=["species"]), schema)
    pd.testing.assert_frame_equal(with_target, without)


def test_transform_refuses_missing_columns(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    schema = prepare_file(penguins_csv, "species").schema
    rows = penguins.drop(columns=["species", "island", "year"]).head(3)
    with pytest.raises(HpopipeError) as info:
        data.transform(rows, schema, source="new.csv")
    assert str(info.value) == "new.csv: missing column(s) ['island', 'year']"


def test_transform_refuses_extra_columns(penguins: pd.DataFrame, penguins_csv: Path) -> None:
    schema = prepare_file(penguins_csv, "species").schema
    rows = penguins.head(3).assign(colour="blue", weight=1.0)
    with pytest.raises(HpopipeError) as info:
        data.transform(rows, schema, source="new.csv")
    assert str(info.value) == "new.csv: unexpected column(s) ['colour', 'weight']"


def test_schema_round_trips_through_json(tmp_path: Path, penguins: pd.DataFrame, penguins_csv: Path) -> None:
    prepared = prepare_file(penguins_csv, "species")
    path = tmp_path / "schema.json"
    write_schema(path, prepared.schema)
    loaded = read_schema(path)
    assert loaded == prepared.schema
    rows = penguins.drop(columns=["species"])
    pd.testing.assert_frame_equal(data.transform(rows, loaded), data.transform(rows, prepared.schema))
    codes = data.encode_target(penguins["species"], loaded)
    assert data.decode_target(codes, loaded) == penguins["species"].tolist()


def test_clashing_feature_names_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": [1.0, np.nan] * 20, "x__missing": rng.normal(size=40), "y": ["p", "q"] * 20})
    with pytest.raises(HpopipeError, match=r"derived feature name\(s\) \['x__missing'\] clash"):
        data.prepare(frame, DataConfig(path=tmp_path / "t.csv", target="y"), 0)


# --- inference of the task ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b"] * 10, "classification"),
        ([True, False] * 10, "classification"),
        (list(range(5)) * 4, "classification"),
        ([0.0, 1.0] * 10, "classification"),
        (list(range(40)), "regression"),
        ([0.5, 1.5] * 10, "regression"),
    ],
)
def test_infer_task(values: list[object], task: str) -> None:
    assert data.infer_task(pd.Series(values)) == task


# --- errors ---------------------------------------------------------------------------------------------


def small_frame(target: Sequence[object]) -> pd.DataFrame:
    n = len(target)
    return pd.DataFrame(
        {"a": np.linspace(0, 1, n), "c": ["x", "y"] * (n // 2) + ["x"] * (n % 2), "y": target}
    )


def prepare_error(tmp_path: Path, frame: pd.DataFrame, **kw: object) -> str:
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(HpopipeError) as info:
        prepare_file(path, kw.pop("target", "y"), **kw)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(HpopipeError) as info:
        data.read_table(path)
    assert str(info.value) == f"data.path: {path}: file not found"


def test_field_is_named_in_read_errors(tmp_path: Path) -> None:
    with pytest.raises(HpopipeError, match=r"^--input: "):
        data.read_table(tmp_path / "absent.csv", field="--input")


@pytest.mark.parametrize("name", ["garbage.parquet", "garbage.pq"])
def test_unreadable_parquet(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x00\x01not a parquet file\xff" * 50)
    with pytest.raises(HpopipeError) as info:
        data.read_table(path)
    message = str(info.value)
    assert message.startswith(f"data.path: {path}: cannot read table (")
    assert "\n" not in message


def test_unreadable_csv(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_text('a,b\n1,2\n"3,4\n', encoding="utf-8")
    with pytest.raises(HpopipeError, match="cannot read table"):
        data.read_table(path)


def test_wrong_extension(tmp_path: Path) -> None:
    path = tmp_path / "table.txt"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(HpopipeError, match=r"must be a \.csv or \.parquet file"):
        data.read_table(path)


@pytest.mark.parametrize("text", ["a,b,y\n", ""])
def test_empty_table(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HpopipeError) as info:
        data.read_table(path)
    message = str(info.value)
    assert message.startswith(f"data.path: {path}: ")
    assert "empty" in message or "cannot read table" in message


def test_header_only_table_is_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("a,b,y\n", encoding="utf-8")
    with pytest.raises(HpopipeError) as info:
        data.read_table(path)
    assert str(info.value) == f"data.path: {path}: the table is empty"


def test_target_column_missing(tmp_path: Path) -> None:
    message = prepare_error(tmp_path, small_frame(["p", "q"] * 10), target="label")
    assert message == f"data.target: column 'label' is not in {tmp_path / 't.csv'}"


def test_constant_target(tmp_path: Path) -> None:
    message = prepare_error(tmp_path, small_frame(["p"] * 20))
    assert message == "data.target: 'y' is constant ('p')"


def test_all_missing_target(tmp_path: Path) -> None:
    message = prepare_error(tmp_path, small_frame([None] * 20))
    assert message == "data.target: every value of 'y' is missing"


def test_single_row_class(tmp_path: Path) -> None:
    message = prepare_error(tmp_path, small_frame(["p", "q"] * 10 + ["lonely"]))
    assert message.startswith("data.target: class 'lonely' has 1 row(s)")


def test_string_target_cannot_be_regressed(tmp_path: Path) -> None:
    message = prepare_error(tmp_path, small_frame(["p", "q"] * 10), task="regression")
    assert message == "data.target: 'y' is not numeric, so it cannot be regressed"


def test_too_small_test_split(tmp_path: Path) -> None:
    message = prepare_error(tmp_path, small_frame([1, 2, 3, 4] * 5), test_size=0.1)
    assert message.startswith("data.test_size: cannot split 20 rows")


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"drop_columns": ["zz"]}, "data.drop_columns: ['zz'] not in"),
        ({"drop_columns": ["y"]}, "data.drop_columns: cannot drop the target column"),
        ({"drop_columns": ["a", "c"]}, "no feature columns besides the target"),
    ],
)
def test_bad_drop_columns(tmp_path: Path, kw: dict[str, object], fragment: str) -> None:
    assert fragment in prepare_error(tmp_path, small_frame(["p", "q"] * 10), **kw)


def test_drop_columns_removes_features(penguins_csv: Path) -> None:
    schema = prepare_file(penguins_csv, "species", drop_columns=["year", "sex"]).schema
    assert "year" not in schema.input_columns and "sex" not in schema.categorical


@pytest.mark.parametrize(("target", "metric"), [("species", "rmse"), ("body_mass_g", "macro_f1")])
def test_metric_must_fit_inferred_task(penguins_csv: Path, target: str, metric: str) -> None:
    schema = prepare_file(penguins_csv, target).schema
    with pytest.raises(HpopipeError) as info:
        task_of(schema.plain(), metric)
    message = str(info.value)
    assert "\n" not in message
    assert f"hpo.metric: {metric!r}" in message and "data.task" in message
    assert (
        task_of(schema.plain(), "log_loss" if schema.task == "classification" else "mae").kind == schema.task
    )


def test_zero_byte_file_is_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(HpopipeError) as info:
        data.read_table(path)
    assert str(info.value) == f"data.path: {path}: the file is empty (0 bytes)"


def test_infinite_regression_target(tmp_path: Path) -> None:
    frame = small_frame([1.0, 2.5, 3.0, 4.0] * 5)
    frame.loc[3, "y"] = float("inf")
    message = prepare_error(tmp_path, frame, task="regression")
    assert message == f"data.target: 'y' has 1 infinite value(s) in {tmp_path / 't.csv'}"


def test_all_missing_target_logs_no_drop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hpopipe.data"):
        prepare_error(tmp_path, small_frame([None] * 20))
    assert "dropped" not in caplog.text  # the error is the only line the user sees


@pytest.mark.parametrize(
    ("classes", "folds", "message"),
    [
        ([0, 1] * 3, 7, "cv.folds: 7 folds need at least 7 training rows; train has 6"),
        (
            [0] * 10 + [1] * 4,
            5,
            "cv.folds: 5 folds need at least 5 rows of every class; class 'q' has 4 in train",
        ),
        (
            [0] * 10 + [1] * 0,
            2,
            "cv.folds: 2 folds need at least 2 rows of every class; class 'q' has 0 in train",
        ),
    ],
)
def test_check_folds_refuses(classes: list[int], folds: int, message: str) -> None:
    with pytest.raises(HpopipeError) as info:
        data.check_folds(np.array(classes), bare_schema("classification", ["p", "q"]), folds, "train")
    assert str(info.value) == message


def test_check_folds_passes_when_every_class_fills_every_fold() -> None:
    data.check_folds(np.array([0] * 5 + [1] * 5), bare_schema("classification", ["p", "q"]), 5, "t")
    data.check_folds(np.arange(5, dtype=float), bare_schema("regression", []), 5, "t")


def bare_schema(task: str, classes: list[str]) -> PreparedSchema:
    """A schema with no feature columns: all check_folds looks at is the task and the classes."""
    return PreparedSchema.model_validate(
        {
            "version": 1,
            "target": "y",
            "task": task,
            "classes": classes,
            "input_columns": [],
            "numeric": {},
            "categorical": {},
            "feature_columns": [],
            "n_rows": {"train": 0, "test": 0},
        }
    )
