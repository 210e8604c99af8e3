"""data/prepared/schema.json: the fitted feature transform, written by prepare.

Read by hpo, cv, refit, report, ``hpopipe predict`` and the model bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from hpopipe import artifacts
from hpopipe.handoffs import Handoff, parse

# A class label as JSON holds it; bool before int so that true stays a bool.
Label = str | bool | int | float


class NumericSpec(Handoff):
    """Impute with ``fill``, then standardise; ``indicator`` adds a missing-value column."""

    fill: float
    mean: float
    std: float
    indicator: bool


class CategoricalSpec(Handoff):
    """One-hot over ``categories``; ``other`` adds a column for every category not kept."""

    categories: tuple[str, ...]
    other: bool


class RowCounts(Handoff):
    """Rows in each split."""

    train: int
    test: int


class PreparedSchema(Handoff):
    """Everything needed to turn raw rows into model inputs exactly as prepare did."""

    version: Literal[1]
    target: str
    task: Literal["classification", "regression"]
    classes: tuple[Label, ...]
    input_columns: tuple[str, ...]
    numeric: dict[str, NumericSpec]
    categorical: dict[str, CategoricalSpec]
    feature_columns: tuple[str, ...]
    n_rows: RowCounts

    def plain(self) -> dict[str, Any]:
        """The dict a reader of the file gets (keys sorted at every level, as written).

        The study fingerprint hashes it and the model bundle stores it, so it must
        equal what ``json.loads`` of the file returns.
        """
        return dict(json.loads(_text(self)))


def _text(schema: PreparedSchema) -> str:
    return json.dumps(schema.model_dump(), sort_keys=True)


def write_schema(path: Path, schema: PreparedSchema) -> None:
    """The one writer of the schema file."""
    artifacts.write_json(path, schema.model_dump())


def read_schema(path: Path) -> PreparedSchema:
    """The one reader of the schema file."""
    return parse(PreparedSchema, artifacts.read_json(path), str(path))
