"""metrics/cv.json: each CV candidate's mean and std, written by cv, read by select and report.

Candidates are keyed by their CV rank (``ranks.1`` is the best mean), and the trial number is a
value (``ranks.1.trial``). ``dvc exp show`` makes a column of every key, and trial numbers
differ from one experiment to the next: keyed by number (``trials.10.mean``), every experiment
had columns of its own; keyed by rank, the columns are the same for every experiment with the
same ``cv.top_k``. The file holds only what select and the report read, so that
``dvc exp show --only-changed`` stays readable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from hpopipe import artifacts
from hpopipe.handoffs import Handoff, parse


class CvCandidate(Handoff):
    """One candidate's CV result: which trial, its mean and std over the folds, its mean best epoch."""

    trial: int
    mean: float
    std: float
    best_epoch_mean: float
    # Multi-objective only: the CV mean of every objective, which cv.select's rule is applied to.
    objectives: dict[str, float] | None = None


class CvSummary(Handoff):
    """The metric, the number of folds, and the candidates by rank (``"1"`` is the best CV mean)."""

    metric: str
    folds: int
    ranks: dict[str, CvCandidate]

    @model_validator(mode="after")
    def _ranks_count_from_one(self) -> CvSummary:
        expected = [str(r) for r in range(1, len(self.ranks) + 1)]
        if sorted(self.ranks, key=lambda r: (len(r), r)) != expected:
            raise ValueError(f"ranks must be numbered 1 to {len(self.ranks)}, got {sorted(self.ranks)}")
        numbers = [c.trial for c in self.ranks.values()]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"a trial is ranked twice: {sorted(numbers)}")
        return self

    @property
    def candidates(self) -> list[CvCandidate]:
        """Every candidate, best CV mean first."""
        return [self.ranks[str(r)] for r in range(1, len(self.ranks) + 1)]

    @property
    def best_trial(self) -> int | None:
        """The trial with the best CV mean (None when no candidate was scored)."""
        return self.ranks["1"].trial if self.ranks else None

    def of_trial(self, number: int) -> CvCandidate | None:
        """The candidate that is trial ``number``, if it was cross-validated."""
        return next((c for c in self.ranks.values() if c.trial == number), None)


def write_cv(path: Path, summary: CvSummary) -> None:
    """The one writer of metrics/cv.json (``objectives`` only where there are several)."""
    artifacts.write_json(path, summary.model_dump(exclude_none=True))


def read_cv(path: Path) -> CvSummary:
    """The one reader of metrics/cv.json."""
    return parse(CvSummary, artifacts.read_json(path), str(path))
