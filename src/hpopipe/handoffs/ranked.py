"""artifacts/hpo/ranked_trials.json: the complete trials best first, written by the hpo stage.

Read by cv (which candidates to score), select (the chosen trial's params) and cleanup.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpopipe import artifacts
from hpopipe.handoffs import Handoff, ParamValue, parse


class RankedTrial(Handoff):
    """One COMPLETE trial (single objective) or Pareto-front trial (several objectives)."""

    number: int
    value: float
    # Multi-objective only: every objective by name (``value`` is the first).
    values: dict[str, float] | None = None
    params: dict[str, ParamValue]
    best_epoch: int | None
    checkpoint: str | None
    # Single-objective only: the trial's place in an uninterrupted sweep (CV seeds by it).
    position: int | None = None

    @property
    def seed_position(self) -> int:
        """What CV seeds a candidate by: its position, or its number where it has none."""
        return self.number if self.position is None else self.position

    def plain(self) -> dict[str, Any]:
        """The JSON object of one trial; ``values`` and ``position`` only where they apply."""
        entry: dict[str, Any] = {"number": self.number, "value": self.value}
        if self.values is not None:
            entry["values"] = dict(self.values)
        entry |= {"params": dict(self.params), "best_epoch": self.best_epoch, "checkpoint": self.checkpoint}
        if self.position is not None:
            entry["position"] = self.position
        return entry


class RankedTrials(Handoff):
    """The study the trials come from and its ranking."""

    study: str
    trials: tuple[RankedTrial, ...]


def write_ranked(path: Path, ranked: RankedTrials) -> None:
    """The one writer of the ranking file."""
    artifacts.write_json(path, {"study": ranked.study, "trials": [t.plain() for t in ranked.trials]})


def read_ranked(path: Path) -> RankedTrials:
    """The one reader of the ranking file."""
    return parse(RankedTrials, artifacts.read_json(path), str(path))
