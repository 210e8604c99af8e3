"""artifacts/refit/evaluation.json: the refit model's predictions on the test split and its
per-epoch history, written by refit, read by report.

Why a file of its own rather than the report loading ``models/model.pt``: the report then needs
neither torch (a second of imports) nor the model file, and DVC re-runs it only when what it
shows changed. ``torch.save`` writes a random id into every model file, so a forced refit
changes the model's bytes even when its weights are the same; this file's bytes stay the same.
These are the predictions ``metrics/test.json`` was scored from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import model_validator

from hpopipe import artifacts
from hpopipe.handoffs import Handoff, parse


class RefitEvaluation(Handoff):
    """Actual and predicted targets of the test split (class labels as text), and the refit's history."""

    kind: Literal["classification", "regression"]
    actual: list[str] | list[float]
    predicted: list[str] | list[float]
    classes: list[str]  # empty for regression
    history: list[dict[str, float]]  # one row per epoch: epoch, train_loss, ...

    @model_validator(mode="after")
    def _one_prediction_per_row(self) -> RefitEvaluation:
        if len(self.actual) != len(self.predicted):
            raise ValueError(f"{len(self.actual)} actual values but {len(self.predicted)} predictions")
        return self


def write_evaluation(path: Path, evaluation: RefitEvaluation) -> None:
    """The one writer of artifacts/refit/evaluation.json."""
    artifacts.write_json(path, evaluation.model_dump())


def read_evaluation(path: Path) -> RefitEvaluation:
    """The one reader of artifacts/refit/evaluation.json."""
    return parse(RefitEvaluation, artifacts.read_json(path), str(path))
