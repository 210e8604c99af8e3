"""artifacts/best/config.yaml: the configuration select chose, written by select.

Read by refit (what to train) and report; the model bundle stores it too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
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
        """The mapping a reader of the file gets, in the file's order; the model bundle stores it.

        Made by a YAML round trip, so no object is shared between entries: a pickled
        bundle is then the same bytes as when refit stored what it had read.
        """
        return dict(yaml.safe_load(_text(self)))

    def layout(self) -> dict[str, Any]:
        """The mapping the file holds, in its order."""
        return {
            "seed": self.seed,
            "model": self.model.model_dump(mode="json", exclude_none=True),
            "params": dict(self.params),
            "train": self.train.settings(),
            "epochs": self.epochs,
            "metric": self.metric,
            "source": self.source.model_dump(exclude_none=True),
        }


def _text(best: BestConfig) -> str:
    return yaml.safe_dump(best.layout(), sort_keys=False)


def write_best(path: Path, best: BestConfig) -> None:
    """The one writer of the best configuration."""
    artifacts.write_yaml(path, best.layout())


def read_best(path: Path) -> BestConfig:
    """The one reader of the best configuration."""
    return parse(BestConfig, artifacts.read_yaml(path), str(path))
