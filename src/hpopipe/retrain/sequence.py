"""The retrain sequence: pull, overrides, every stage through DVC, the quality gate, push, commit.

The Prefect flow (``flows/retrain.py``) and the ``hpopipe retrain`` command both call
:func:`retrain`; they differ only in how one stage is run (a Prefect task with retries and
logs, or a plain call). Each step lives in its own module of this package: :mod:`.stages`,
:mod:`.overrides`, :mod:`.gate`, :mod:`.publish` and :mod:`.summary`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.handoffs.schema import read_schema
from hpopipe.metrics import AUTO
from hpopipe.retrain.commands import AnyLogger
from hpopipe.retrain.gate import TEST_METRICS, GateResult, committed_metrics, max_regression_for, quality_gate
from hpopipe.retrain.overrides import PARAMS_FILE, apply_overrides
from hpopipe.retrain.publish import DEFAULT_BRANCH, commit_results, default_remote, dvc_transfer
from hpopipe.retrain.stages import StageOutcome, git_tracked_outputs, pipeline_stages, run_stage
from hpopipe.retrain.summary import RetrainReport, read_results
from hpopipe.tracking import mlflow_run_ids, move_champion

log = logging.getLogger(__name__)

StageRunner: TypeAlias = Callable[[str], StageOutcome]


@dataclass(frozen=True)
class RetrainOptions:
    """How one retrain behaves; the defaults are what the nightly deployment and CI use."""

    overrides: tuple[str, ...] = ()
    max_regression: float | None = None  # None: retrain.max_regression from params.yaml
    branch: str = DEFAULT_BRANCH
    push: bool = True
    commit: bool = True


def retrain(
    root: Path,
    options: RetrainOptions | None = None,
    stage_runner: StageRunner | None = None,
    logger: AnyLogger = log,
) -> RetrainReport:
    """Pull, apply overrides, reproduce every stage through DVC, gate, then push and commit.

    A failed gate returns a report with ``gate.passed`` False and has pushed and committed
    nothing; the caller turns that into a failed run (exit status, Prefect state). A stage
    that fails raises :class:`~hpopipe.errors.StageError`, also before anything is pushed.
    """
    options = options or RetrainOptions()
    root = root.resolve()
    stages = pipeline_stages(root)
    max_regression_for(load_params(root / PARAMS_FILE), options.max_regression)  # fail before training
    remote = default_remote(root)
    if remote is None:
        logger.info("no default DVC remote: nothing is pulled or pushed")
    else:
        dvc_transfer(root, "pull", logger)
    if options.overrides:
        apply_overrides(root, options.overrides, logger)
    since_ms = int(time.time() * 1000)
    runner = stage_runner or functools.partial(_run_stage_positional, root, logger)
    outcomes = [runner(stage) for stage in stages]
    return _gate_and_publish(root, options, outcomes, remote, since_ms, logger)


def _run_stage_positional(root: Path, logger: AnyLogger, stage: str) -> StageOutcome:
    return run_stage(root, stage, logger=logger)


def _gate_and_publish(
    root: Path,
    options: RetrainOptions,
    outcomes: list[StageOutcome],
    remote: str | None,
    since_ms: int,
    logger: AnyLogger,
) -> RetrainReport:
    params = load_params(root / PARAMS_FILE)
    if params.hpo.metric == AUTO:  # resolved as the stages resolved it: from the prepared data's task
        params = params.for_task(read_schema(root / artifacts.SCHEMA).task)
    threshold = max_regression_for(params, options.max_regression)
    new = artifacts.read_json(root / TEST_METRICS)
    gate = quality_gate(
        params.hpo.metric, new, committed_metrics(root), threshold, params.retrain.beat_baseline
    )
    logger.info("quality gate %s: %s", "passed" if gate.passed else "FAILED", gate.reason)
    pushed, commit, champion = False, None, None
    runs = mlflow_run_ids(root, [o.stage for o in outcomes if o.status == "ran"], since_ms)
    if gate.passed and "refit" in runs:  # only a model that passed is served
        champion = move_champion(root, runs["refit"])
        if champion:
            logger.info("MLflow: @champion is now %s", champion)
    if gate.passed:
        if remote is not None and options.push:
            dvc_transfer(root, "push", logger)
            pushed = True
        if options.commit:
            paths = [PARAMS_FILE, "dvc.lock", *git_tracked_outputs(root)]
            commit = commit_results(root, options.branch, _commit_message(outcomes, gate, options), paths)
            logger.info("git: %s", f"committed {commit[:12]} on {options.branch}" if commit else "no changes")
    return RetrainReport(
        stages=outcomes,
        overrides=options.overrides,
        gate=gate,
        results=read_results(root),
        remote=remote,
        pushed=pushed,
        branch=options.branch,
        commit=commit,
        mlflow_runs=runs,
        champion=champion,
    )


def _commit_message(outcomes: Sequence[StageOutcome], gate: GateResult, options: RetrainOptions) -> str:
    ran = [o.stage for o in outcomes if o.status == "ran"]
    title = f"retrain: ran {', '.join(ran) or 'nothing'}; {gate.metric} " + (
        f"{gate.old:.4f} -> {gate.new:.4f}" if gate.old is not None else f"{gate.new:.4f}"
    )
    body = [f"Overrides: {' '.join(options.overrides)}"] if options.overrides else []
    return "\n\n".join([title, *body, "Written by `hpopipe retrain` (params.yaml, dvc.lock and metrics)."])
