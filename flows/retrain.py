"""Prefect flow ``retrain``: the DVC pipeline with one task per stage, and its nightly deployment.

Thin on purpose: the sequence (pull, overrides, stages, quality gate, push, commit) and the
summary live in :mod:`hpopipe.retrain.sequence`, which ``hpopipe retrain`` runs too. This module adds
what Prefect is for: a task per stage with retries and a timeout, logs, the summary artifact and
the schedule. Every task runs its stage through DVC, so DVC decides what is stale; nothing is
cached by Prefect.

``python -m flows.retrain serve`` (what ``hpopipe serve`` runs, in the project checkout)
registers the nightly deployment and serves it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, get_run_logger, serve, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.schedules import Cron

from hpopipe import entry
from hpopipe.errors import GateFailed, StageError
from hpopipe.retrain.overrides import override_list
from hpopipe.retrain.publish import DEFAULT_BRANCH
from hpopipe.retrain.sequence import RetrainOptions, StageRunner
from hpopipe.retrain.sequence import retrain as retrain_sequence
from hpopipe.retrain.stages import StageOutcome, run_stage
from hpopipe.retrain.summary import summary_markdown

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.deployments.runner import RunnerDeployment
    from prefect.states import State

DEPLOYMENT_NAME = "nightly"
NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC every day
ARTIFACT_KEY = "retrain-summary"


@dataclass(frozen=True)
class StagePolicy:
    """Retries and timeout of one stage's task."""

    retries: int
    timeout_s: float


# The sweep keeps its finished trials and resumes a killed one, so a retry of hpo is cheap
# progress; cv, refit and prepare are long enough for a transient failure (a killed worker, a
# full disk cleared) to be worth one more try; select, cleanup and report are quick and
# deterministic, so a retry would only fail again. A stage missing here gets DEFAULT_POLICY.
POLICIES: dict[str, StagePolicy] = {
    "prepare": StagePolicy(retries=1, timeout_s=30 * 60),
    "hpo": StagePolicy(retries=2, timeout_s=12 * 3600),
    "cv": StagePolicy(retries=1, timeout_s=6 * 3600),
    "select": StagePolicy(retries=0, timeout_s=10 * 60),
    "refit": StagePolicy(retries=1, timeout_s=2 * 3600),
    "cleanup": StagePolicy(retries=0, timeout_s=30 * 60),
    "report": StagePolicy(retries=0, timeout_s=30 * 60),  # plots and the HTML report, when dvc.yaml has it
}
DEFAULT_POLICY = StagePolicy(retries=0, timeout_s=6 * 3600)


def _worth_retrying(_task: Any, _task_run: TaskRun, state: State[Any]) -> bool:
    """A user error in the stage or a timeout would fail the same way again."""
    error = getattr(state, "data", None)
    return not (isinstance(error, StageError) and not error.retryable)


@task(cache_policy=NO_CACHE, retry_delay_seconds=30, retry_condition_fn=_worth_retrying)
def dvc_stage(project_dir: str, stage: str, timeout_s: float) -> StageOutcome:
    """One stage as ``dvc repro --single-item <stage>``: DVC runs it, or says it is cached."""
    return run_stage(Path(project_dir), stage, timeout_s=timeout_s, logger=get_run_logger())


def _stage_tasks(root: Path) -> StageRunner:
    """Run each stage as its own task run, named after the stage (one name per step everywhere)."""

    def run(stage: str) -> StageOutcome:
        policy = POLICIES.get(stage, DEFAULT_POLICY)
        named = dvc_stage.with_options(name=stage, task_run_name=stage, retries=policy.retries)
        return named(str(root), stage, policy.timeout_s)

    return run


@flow(name="retrain")
def retrain(
    project_dir: str = ".",
    n_trials: int | None = None,
    max_epochs: int | None = None,
    overrides: list[str] | None = None,
    max_regression: float | None = None,
    branch: str = DEFAULT_BRANCH,
    push: bool = True,
    commit: bool = True,
) -> dict[str, Any]:
    """Pull, reproduce every DVC stage as a task, gate the new model, then push and commit.

    Args:
        project_dir: The project checkout (its dvc.yaml, params.yaml, DVC cache and git repo).
        n_trials: Override ``hpo.n_trials`` for this run.
        max_epochs: Override ``train.max_epochs`` for this run.
        overrides: More overrides, as ``dvc exp run --set-param`` takes them (``cv.folds=3``).
        max_regression: Allowed drop of the test metric; default ``retrain.max_regression``
            from params.yaml, else 0.02.
        branch: Branch that receives the commit of params.yaml, dvc.lock and the metrics.
        push: ``dvc push`` after a passed gate (when a default remote is configured).
        commit: Commit the results after a passed gate.
    """
    root = Path(project_dir).resolve()
    extra = overrides or []
    options = RetrainOptions(
        overrides=tuple(override_list(n_trials, max_epochs, extra)),
        max_regression=max_regression,
        branch=branch,
        push=push,
        commit=commit,
    )
    report = retrain_sequence(root, options, stage_runner=_stage_tasks(root), logger=get_run_logger())
    create_markdown_artifact(
        summary_markdown(report), key=ARTIFACT_KEY, description=f"hpopipe retrain of {root}"
    )
    if not report.gate.passed:
        raise GateFailed(f"quality gate: {report.gate.reason}")
    return {"ran": report.ran, "gate": report.gate.reason, "commit": report.commit}


def nightly_deployment(
    project_dir: str | Path = ".", cron: str = NIGHTLY_CRON, name: str = DEPLOYMENT_NAME
) -> RunnerDeployment:
    """The deployment ``retrain/<name>`` on a cron schedule (UTC), bound to one project checkout."""
    # Called outside an event loop, to_deployment returns the deployment, not a coroutine.
    deployment = retrain.to_deployment(
        name=name,
        schedules=[Cron(cron, timezone="UTC")],
        parameters={"project_dir": str(Path(project_dir).resolve())},
        description="Nightly retraining: the DVC pipeline, a quality gate, then dvc push and a commit.",
        tags=["hpopipe"],
    )
    return cast("RunnerDeployment", deployment)


def serve_nightly(
    project_dir: str | Path = ".", cron: str = NIGHTLY_CRON, name: str = DEPLOYMENT_NAME
) -> None:
    """Register the deployment and run its flow runs in this process until stopped.

    One run at a time: two retrains in one checkout would contend for DVC's lock and the study.
    """
    serve(nightly_deployment(project_dir, cron, name), limit=1)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m flows.retrain serve --project-dir DIR [--name NAME] [--cron CRON]``.

    Started by ``hpopipe serve`` in the checkout, after it checked the checkout, the name and
    the Prefect API; user errors are one line and exit 2, as everywhere.
    """
    parser = argparse.ArgumentParser(prog="python -m flows.retrain")
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("serve", help="register the nightly deployment and serve it until stopped")
    s.add_argument("--project-dir", type=Path, default=Path("."))
    s.add_argument("--name", default=DEPLOYMENT_NAME)
    s.add_argument("--cron", default=NIGHTLY_CRON)
    args = parser.parse_args(argv)

    def run() -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API poll otherwise
        serve_nightly(project_dir=args.project_dir, cron=args.cron, name=args.name)

    entry.run(run)


if __name__ == "__main__":
    main()
