"""What a retrain produced, read from the pipeline's outputs, and its markdown summary.

The same summary is printed by ``hpopipe retrain`` (and appended to ``$GITHUB_STEP_SUMMARY``)
and published by the Prefect flow as its ``retrain-summary`` artifact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpopipe import artifacts, baselines
from hpopipe.handoffs.cv import read_cv
from hpopipe.retrain.gate import TEST_METRICS, GateResult
from hpopipe.retrain.stages import StageOutcome


@dataclass(frozen=True)
class Results:
    """The numbers a retrain summary shows, read from the pipeline's outputs."""

    metric: str
    best_params: dict[str, Any]
    cv_trial: int | None
    cv_mean: float | None
    cv_std: float | None
    cv_folds: int | None
    test: dict[str, Any]  # metrics/test.json: the network's metrics, the baselines under "baselines"


def read_results(root: Path) -> Results:
    """Best parameters, the chosen candidate's CV mean and std, and the test metrics."""
    cv = read_cv(root / artifacts.metrics_file("cv"))
    # The trial select chose: cv's best by mean, unless a multi-objective rule chose another.
    source = (artifacts.read_yaml(root / artifacts.BEST_CONFIG) or {}).get("source") or {}
    best = source.get("trial", cv.best_trial)
    chosen = None if best is None else cv.of_trial(int(best))
    return Results(
        metric=cv.metric,
        best_params=artifacts.read_json(root / artifacts.BEST_PARAMS),
        cv_trial=best,
        cv_mean=None if chosen is None else chosen.mean,
        cv_std=None if chosen is None else chosen.std,
        cv_folds=cv.folds,
        test=artifacts.read_json(root / TEST_METRICS),
    )


@dataclass(frozen=True)
class RetrainReport:
    """Everything a retrain did, for the summary and the exit status."""

    stages: list[StageOutcome]
    overrides: tuple[str, ...]
    gate: GateResult
    results: Results
    remote: str | None
    pushed: bool
    branch: str
    commit: str | None
    mlflow_runs: dict[str, str] = field(default_factory=dict)
    champion: str | None = None  # name@version the gate moved @champion to

    @property
    def ran(self) -> list[str]:
        """Stages DVC ran (the others were cached)."""
        return [o.stage for o in self.stages if o.status == "ran"]


def summary_markdown(report: RetrainReport) -> str:
    """A markdown summary: what ran and what was cached, results, gate, where things went."""
    sections = [
        "# hpopipe retrain",
        _stage_table(report.stages),
        _overrides_line(report.overrides),
        f"**Quality gate:** {'passed' if report.gate.passed else 'FAILED'}: {report.gate.reason}",
        _results_section(report.results),
        _mlflow_line(report.mlflow_runs, report.champion),
        _delivery_line(report),
    ]
    return "\n\n".join(sections) + "\n"


def _overrides_line(overrides: Sequence[str]) -> str:
    if not overrides:
        return "**Overrides:** none"
    return "**Overrides:** " + ", ".join(f"`{o}`" for o in overrides) + " (written to params.yaml)"


def _stage_table(outcomes: Sequence[StageOutcome]) -> str:
    rows = [f"| {o.stage} | {o.detail} | {o.seconds:.1f} |" for o in outcomes]
    return "\n".join(["| stage | outcome | seconds |", "|---|---|---:|", *rows])


def _results_section(results: Results) -> str:
    params = [f"| {key} | {_fmt(value)} |" for key, value in sorted(results.best_params.items())]
    test = [
        f"| {key} | {_fmt(value)} |" for key, value in sorted(results.test.items()) if key != baselines.KEY
    ]
    verdict = baselines.verdict(results.test, results.metric)
    cv = (
        f"**CV {results.metric}:** {results.cv_mean:.4f} ± {results.cv_std:.4f} "
        f"({results.cv_folds} folds, trial {results.cv_trial})"
        if results.cv_mean is not None and results.cv_std is not None
        else "**CV:** no result for the chosen trial"
    )
    return "\n\n".join(
        [
            "\n".join(["**Best parameters**", "", "| param | value |", "|---|---|", *params]),
            cv,
            "\n".join(["**Test metrics**", "", "| metric | value |", "|---|---:|", *test]),
            *([f"**Baseline:** {verdict.sentence()}"] if verdict else []),
        ]
    )


def _mlflow_line(runs: Mapping[str, str], champion: str | None) -> str:
    if not runs:
        return "**MLflow runs:** none this time (tracking off, or no tracked stage ran)"
    line = "**MLflow runs:** " + ", ".join(f"{stage} `{run_id}`" for stage, run_id in runs.items())
    return line + (f"; `@champion` is now `{champion}`" if champion else "")


def _delivery_line(report: RetrainReport) -> str:
    if report.remote is None:
        push = "no DVC remote configured"
    elif report.pushed:
        push = f"pushed to DVC remote `{report.remote}`"
    else:
        push = f"nothing pushed to `{report.remote}`"
    commit = "nothing committed"
    if report.commit:
        commit = f"committed `{report.commit[:12]}` on branch `{report.branch}`"
    return f"**Delivery:** {push}; {commit}"


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
