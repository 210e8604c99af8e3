"""artifacts/best/config.yaml: the configuration select chose, written by select.

Read by refit (what to train) and report; the model bundle stores it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from hpopipe import artifacts
from hpopipe.config import ModelConfig, TrainConfig
from hpopipe.handoffs import Handoff, ParamValue, parse


class Source(Handoff):
    """Where the choice came from: the sweep trial, its CV scores and, for several objectives, the rule."""

    trial: int
    sweep_value: float
    cv_mean: float
    cv_std: float
    cv_folds: int
    # Multi-objective only (see hpopipe.sweep.pareto.choose): the values and the rule that chose.
    sweep_values: dict[str, float] | None = None
    rule: str | None = None
    cv_means: dict[str, float] | None = None
    candidates: list[int] | None = None
    weights: dict[str, float] | None = None
    weighted_score: float | None = None
    why: str | None = None


class BestConfig(Handoff):
    """A complete training configuration: refit needs nothing else."""

    seed: int
    model: ModelConfig
    params: dict[str, ParamValue]
    train: TrainConfig
    epochs: int = Field(ge=1)
    metric: str
    source: Source

    def plain(self) -> dict[str, Any]:
        """The mapping written to the file, in its order (the model bundle stores it as well)."""
        return {
            "seed": self.seed,
            "model": self.model.model_dump(mode="json", exclude_none=True),
            "params": dict(self.params),
            "train": self.train.model_dump(mode="json"),
            "epochs": self.epochs,
            "metric": self.metric,
            "source": self.source.model_dump(exclude_none=True),
        }


def write_best(path: Path, best: BestConfig) -> None:
    """The one writer of the best configuration."""
    artifacts.write_yaml(path, best.plain())


def read_best(path: Path) -> BestConfig:
    """The one reader of the best configuration."""
    return parse(BestConfig, artifacts.read_yaml(path), str(path))
