"""Prefect flows ``sweep-worker`` and ``sweep``: sweep workers fanned out through a work pool.

Thin on purpose: :mod:`hpopipe.sweep.fanout` registers the worker deployment, starts and watches its
runs and writes the summary; the sweep itself is ``hpopipe worker`` processes sharing one Optuna
study on PostgreSQL. ``sweep-worker`` is what the deployment runs on each machine (register it
with ``hpopipe deploy-worker --pool NAME``); ``sweep`` starts ``n_workers`` runs of it, waits,
and publishes the summary artifact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from hpopipe.errors import HpopipeError
from hpopipe.sweep import fanout, summary
from hpopipe.sweep.budget import budget_met

ARTIFACT_KEY = "sweep-summary"


@flow(name=fanout.WORKER_FLOW)
def sweep_worker(project_dir: str, params: str = "params.yaml", study: str | None = None) -> None:
    """One worker: ``hpopipe worker`` in ``project_dir`` until the sweep's budget is met.

    Args:
        project_dir: The project checkout on the machine that runs this (prepared data inside).
        params: params.yaml of the sweep, relative to ``project_dir``.
        study: Study name; default, the one params.yaml and the prepared data determine.
    """
    fanout.run_worker_process(Path(project_dir), params, study, logger=get_run_logger())


@flow(name="sweep")
def sweep(
    project_dir: str,
    n_workers: int,
    params: str = "params.yaml",
    study: str | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Fan out ``n_workers`` runs of the worker deployment, wait for them, publish a summary.

    A worker run that failed does not fail the sweep when the others still met the budget
    (that is what re-running a dead worker's trial is for); it is listed in the summary.

    Args:
        project_dir: The project checkout, at the same path on every worker machine.
        n_workers: How many worker runs to start.
        params: params.yaml of the sweep, relative to ``project_dir``.
        study: Study name; default, the one params.yaml and the prepared data determine.
        timeout_s: Cancel the worker runs still going after this many seconds.
    """
    root = Path(project_dir).resolve()
    parameters = {"project_dir": str(root), "params": params, "study": study}
    runs = fanout.run_workers(n_workers, parameters, timeout_s=timeout_s, require_all=False)
    opened = summary.open_sweep(root, params, study)
    create_markdown_artifact(
        summary.summary_markdown(opened.study, opened.storage_url, runs, opened.n_trials),
        key=ARTIFACT_KEY,
        description=f"hpopipe sweep of {root}",
    )
    finished = summary.finished_trials(opened.study)
    failed = [r for r in runs if not r.ok]
    if not budget_met(finished, opened.n_trials):
        why = f"; failed worker runs: {fanout.describe_failed(failed)}" if failed else ""
        raise HpopipeError(f"sweep {opened.study.study_name}: {finished} of {opened.n_trials} trials{why}")
    if failed:
        get_run_logger().warning("budget met despite failed worker runs: %s", fanout.describe_failed(failed))
    return {"study": opened.study.study_name, "finished": finished, "runs": {r.name: r.state for r in runs}}
