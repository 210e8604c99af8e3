"""Sweep workers placed by Prefect: a worker deployment on a work pool, and N runs of it.

Prefect places the workers; Optuna's shared storage (PostgreSQL across machines) is what they
coordinate through. Nothing here schedules trials: each run of the ``sweep-worker`` deployment
is one ``hpopipe worker`` process that joins the sweep and leaves when its budget is reached.

* :func:`deploy_worker` registers ``sweep-worker/<name>`` on a *process* work pool from a project
  checkout (no image; every machine that runs ``prefect worker start --pool NAME`` needs the
  checkout at the same path, the package installed, and the prepared data).
* :func:`run_workers` starts N runs of it and waits for all of them.
* :func:`run_worker_process` is what one run does: ``hpopipe worker`` as a child process.

This is the only library module that imports Prefect, and it does so inside functions, so
the hpo stage pays for Prefect only when ``hpo.backend`` is ``prefect``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hpopipe import entry
from hpopipe.errors import HpopipeError, WorkerFailed
from hpopipe.redact import mask_url
from hpopipe.sweep.local import worker_command

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

log = logging.getLogger(__name__)

WORKER_FLOW = "sweep-worker"
DEPLOYMENT_NAME = "hpopipe-worker"
DEFAULT_DEPLOYMENT = f"{WORKER_FLOW}/{DEPLOYMENT_NAME}"
FLOW_FILE = Path("flows/sweep.py")
ENTRYPOINT = f"{FLOW_FILE}:sweep_worker"
# Last lines of a failed worker's output kept for the error message (the rest is in the run's log).
_TAIL_LINES = 20
_STOP_WAIT_S = 30.0


@dataclass(frozen=True)
class WorkerRun:
    """One finished (or abandoned) run of the worker deployment, as the summary shows it."""

    name: str
    state: str
    ok: bool


# ---------------------------------------------------------------- Prefect connection


def api_url() -> str:
    """The Prefect API this process talks to; a user error when none is configured.

    Without PREFECT_API_URL, Prefect would start a throwaway in-process server that no work
    pool worker can see, and runs would wait forever.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise HpopipeError(
            "PREFECT_API_URL: not set (start `prefect server start`, then "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`)"
        )
    return str(url)


def _client() -> SyncPrefectClient:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


# ---------------------------------------------------------------- registering the deployment


def deploy_worker(project_dir: Path, pool: str, name: str = DEPLOYMENT_NAME) -> str:
    """Register ``sweep-worker/<name>`` on the process work pool ``pool``; return that name.

    The flow is loaded from ``project_dir`` (its ``flows/sweep.py``); runs start in that
    directory on whichever machine picks them up. Registering again updates the deployment.
    """
    from prefect import Flow
    from prefect.exceptions import ObjectNotFound

    root = project_dir.resolve()
    if not (root / FLOW_FILE).is_file():
        raise HpopipeError(f"{root / FLOW_FILE}: not found (deploy-worker runs from a project checkout)")
    api = api_url()
    with _client() as client:
        try:
            work_pool = client.read_work_pool(pool)
        except ObjectNotFound:
            raise HpopipeError(
                f"--pool: no work pool {pool!r} on {api} "
                f"(create it: prefect work-pool create {pool} --type process)"
            ) from None
    if work_pool.type != "process":
        raise HpopipeError(f"--pool: work pool {pool!r} is of type {work_pool.type!r}, not 'process'")
    # Called outside an event loop, from_source returns the flow, not a coroutine.
    flow = cast("Flow[..., Any]", Flow.from_source(source=str(root), entrypoint=ENTRYPOINT))
    flow.deploy(
        name=name,
        work_pool_name=pool,
        build=False,
        push=False,
        description="One hpopipe sweep worker: joins the sweep params.yaml names until its budget is met.",
        tags=["hpopipe"],
        print_next_steps=False,
        ignore_warnings=True,
    )
    return f"{flow.name}/{name}"


# ---------------------------------------------------------------- fanning out


def run_workers(
    n: int,
    parameters: dict[str, Any],
    deployment: str = DEFAULT_DEPLOYMENT,
    timeout_s: float | None = None,
    poll_s: float = 5.0,
    require_all: bool = True,
) -> list[WorkerRun]:
    """Start ``n`` runs of the worker deployment at once and wait until every one has finished.

    Called inside a flow, the runs become its sub-flow runs. Runs still going at ``timeout_s``,
    or when this call is interrupted, are canceled, so no worker outlives its coordinator.

    Args:
        n: Number of worker runs (at least 1).
        parameters: The ``sweep_worker`` flow's parameters (``project_dir``, ``params``, ``study``).
        deployment: ``<flow>/<deployment>`` as :func:`deploy_worker` returned it.
        timeout_s: Give up (and cancel the rest) after this long; None waits for ever.
        poll_s: Seconds between two looks at the runs' states.
        require_all: Raise when a run did not complete; False returns the failures too, for a
            caller that can tell from the study whether the sweep survived them.

    Raises:
        HpopipeError: no API, no such deployment, a run not finished in time, or (with
            ``require_all``) a run that failed or crashed.
    """
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    if n < 1:
        raise HpopipeError(f"n_workers: must be at least 1, got {n}")
    api = api_url()
    with _client() as client:
        try:
            client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise HpopipeError(
                f"deployment {deployment!r}: not found on {api} "
                "(register it: hpopipe deploy-worker --pool NAME)"
            ) from None
        ids: list[Any] = []
        try:
            for i in range(n):
                run = cast(
                    "FlowRun",
                    run_deployment(
                        deployment,
                        parameters=parameters,
                        timeout=0,
                        flow_run_name=f"worker-{i}",
                        tags=["hpopipe"],
                    ),
                )
                ids.append(run.id)
            log.info("started %d run(s) of %s", n, deployment)
            runs = _wait(client, ids, timeout_s, poll_s)
        except BaseException:
            _cancel_unfinished(client, ids)
            raise
    results = [_worker_run(run) for run in runs]
    failed = [r for r in results if not r.ok]
    if require_all and failed:
        raise HpopipeError(f"worker runs: {describe_failed(failed)} (their logs are in Prefect)")
    return results


def describe_failed(runs: Iterable[WorkerRun]) -> str:
    """``worker-1 Crashed, worker-3 Failed``: one line for an error message."""
    return ", ".join(f"{r.name} {r.state}" for r in runs)


def _wait(
    client: SyncPrefectClient, ids: Sequence[Any], timeout_s: float | None, poll_s: float
) -> list[FlowRun]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=list(ids)))
    while True:
        runs = client.read_flow_runs(flow_run_filter=flow_filter, limit=len(ids))
        pending = [r for r in runs if r.state is None or not r.state.is_final()]
        if len(runs) == len(ids) and not pending:
            return sorted(runs, key=lambda r: r.name)
        if deadline is not None and time.monotonic() >= deadline:
            names = ", ".join(sorted(r.name for r in pending))
            raise HpopipeError(f"worker runs: {names} not finished after {timeout_s:g} s (canceled)")
        time.sleep(poll_s)


def _cancel_unfinished(client: SyncPrefectClient, ids: Sequence[Any]) -> None:
    """Ask Prefect to cancel runs not yet final; their workers kill the processes."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelling

    if not ids:
        return
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))))
    for run in runs:
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(run.id, Cancelling(), force=True)
            log.warning("canceled worker run %s", run.name)


def _worker_run(run: FlowRun) -> WorkerRun:
    state = run.state
    return WorkerRun(
        name=run.name,
        state=(state.name or state.type.value) if state is not None else "unknown",
        ok=bool(state is not None and state.is_completed()),
    )


# ---------------------------------------------------------------- one worker run


def run_worker_process(
    project_dir: Path,
    params: str = "params.yaml",
    study: str | None = None,
    worker_id: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter[Any] = log,
) -> None:
    """Run ``hpopipe worker`` in ``project_dir`` until it exits; its output goes to ``logger``.

    The child stays in this process's process group: Prefect cancels a flow run by signalling
    the run's group, so a canceled or killed run takes its worker with it. Should this process
    be stopped any other way, the child is terminated before the exception propagates.

    Raises:
        HpopipeError: ``project_dir`` is not a directory.
        WorkerFailed: the worker exited with a non-zero status (the flow run fails with it).
    """
    root = Path(project_dir).resolve()
    if not root.is_dir():
        raise HpopipeError(f"project_dir: {root}: not a directory on this machine")
    cmd = worker_command(params, study, worker_id)
    proc = subprocess.Popen(
        cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = mask_url(line.rstrip())
            logger.info("%s", text)
            tail = [*tail[-(_TAIL_LINES - 1) :], text]
        code = proc.wait()
    finally:
        _stop_child(proc)
    if code != 0:
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        raise WorkerFailed(f"hpopipe worker in {root}: exit status {code}: {last}")


def _stop_child(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=_STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- the hpo stage's fan-out

EXIT_WORKERS_FAILED = 3


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # run_workers cancels the runs it started, then we exit


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m hpopipe.sweep.fanout --n N --params P --study S``: N worker runs, waited for.

    A process of its own: the hpo stage never imports Prefect or this module, because how
    workers are launched does not change what a trial computes, and an edit here must not
    mark the sweep stale. Exit 0 when every run completed, 3 when some did not (the stage then
    reads the study to tell whether the sweep survived), 2 on a user error.
    """
    parser = argparse.ArgumentParser(prog="hpopipe-fanout")
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--study", required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)

    def fan_out() -> None:
        parameters = {"project_dir": str(Path.cwd()), "params": args.params, "study": args.study}
        failed = [r for r in run_workers(args.n, parameters, require_all=False) if not r.ok]
        if failed:
            log.warning("worker runs that did not complete: %s", describe_failed(failed))
            raise SystemExit(EXIT_WORKERS_FAILED)

    entry.run(fan_out)


if __name__ == "__main__":
    main()
