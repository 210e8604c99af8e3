"""Worker processes on this machine beside the hpo stage, which is a worker too (``hpo.n_workers``).

A worker process pays seconds of imports and setup (torch, MLflow, Optuna, the data) before its
first trial. So the hpo stage starts them first thing, before its own imports
(:func:`early_workers`), and the two start-ups overlap. This module is light on purpose (no
Optuna, torch, MLflow or pandas): the stage imports it before anything heavy.

An early worker must not touch the study before the stage has made the sweep ready: checked
the model and metric, opened (or, with ``hpo.fresh``, deleted and made again) the study, marked
the sweep running and started its MLflow ``hpo`` run, under which the worker's trial runs nest.
So an early worker (:data:`COORDINATOR_ENV` set) waits, after its imports and before it opens the
study's storage, for one line on its stdin, a pipe from the stage: the go, with the hpo run's id
(:meth:`LocalWorkers.go`; :func:`hpopipe.sweep.agent.wait_for_stage`). The id comes from this run
of the stage, never from the study, whose ``mlflow_parent_run`` may be an earlier run's. The pipe
also tells a worker that its stage died (end of file), and no worker process can race the stage
in making a new database's tables.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from hpopipe.config import load_params
from hpopipe.tracking import check_several_writers_early

log = logging.getLogger(__name__)

# Set (to ``stdin``) for a worker started early: it waits for the stage's go on its stdin.
COORDINATOR_ENV = "HPOPIPE_COORDINATOR"
STOP_WAIT_S = 60.0  # how long workers beside a failed stage get to finish their epoch before SIGKILL


class LocalWorkers:
    """Worker processes running beside this one while this process runs a worker of its own.

    This process is busy training, so a daemon thread waits for them: it passes a graceful
    stop (``stop``, set by a signal to this process) on to them, once, as
    :func:`wait_forwarding_stop` does, and keeps their exit codes. :meth:`stop` ends them when
    this process's own worker raised, so none outlives it. ``early``: they were started before
    the sweep was ready and wait for :meth:`go` (see the module's docstring).
    """

    def __init__(
        self, procs: Sequence[subprocess.Popen[Any]], stop: Callable[[], bool], early: bool = False
    ) -> None:
        self.procs = list(procs)
        self.early = early
        self._stop = stop
        self._abort = threading.Event()
        self._codes: list[int] = []
        self._thread = threading.Thread(target=self._wait, name="local-workers", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        self._codes = wait_forwarding_stop(self.procs, lambda: self._stop() or self._abort.is_set())

    def go(self, parent_run: str | None) -> None:
        """Tell workers started early that the sweep is ready; their trial runs nest under ``parent_run``."""
        line = (json.dumps({"parent_run": parent_run}) + "\n").encode()
        for p in self.procs:
            if p.stdin is None:
                continue
            with suppress(OSError):  # it already exited (BrokenPipeError): its exit code tells
                p.stdin.write(line)
            with suppress(OSError):  # closed even when what is left cannot be sent
                p.stdin.close()

    def wait(self) -> list[int]:
        """Wait until all of them have exited (a stop still reaches them); their exit codes."""
        self._thread.join()
        return self._codes

    def stop(self, now: bool = False, timeout_s: float = STOP_WAIT_S) -> None:
        """End them: SIGTERM (one in all with a stop already passed on), so each finishes its epoch;
        ``now`` sends a second, as a second signal to this process means stop now; whoever is
        still running after ``timeout_s`` (or a further signal here) is killed."""
        self._abort.set()
        try:
            if now:
                for p in self.procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            self._thread.join(timeout_s)
        finally:
            if self._thread.is_alive():
                for p in self.procs:
                    if p.poll() is None:
                        p.kill()
                self._thread.join()


def start_local(
    n: int,
    study: str | None,
    params_path: str,
    stop: Callable[[], bool],
    env: dict[str, str] | None = None,
    early: bool = False,
) -> LocalWorkers:
    """Start ``n`` worker processes on this machine beside this one, which is a worker too.

    Each trains with ``train.threads`` torch threads (set by every ``fit``; ``auto`` is one). A
    signal to this process is passed on to them, so they stop after their epoch like a single
    worker would. Without ``study`` each works out the study's name from the params and data,
    as the stage does. ``early`` ones wait for :meth:`LocalWorkers.go` on their stdin.
    """
    cmd = worker_command(params_path, study)
    env = {**os.environ, **(env or {}), **({COORDINATOR_ENV: "stdin"} if early else {})}
    stdin = subprocess.PIPE if early else None
    procs: list[subprocess.Popen[Any]] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen(cmd, env=env, stdin=stdin))
    except BaseException:  # none is left running unwatched
        for p in procs:
            p.kill()
            p.wait()
        raise
    log.info(
        "started %d local worker process%s beside this one (%d workers)", n, "" if n == 1 else "es", n + 1
    )
    return LocalWorkers(procs, stop, early)


def start_early(params_path: str, stop: Callable[[], bool]) -> LocalWorkers | None:
    """The hpo stage's local workers, started before the stage imports anything heavy; None when
    this sweep has none (one worker, or ``hpo.backend: prefect``, whose runs start as before).

    A tracking store that several writers cannot share is refused here, before any process starts.
    """
    params = load_params(params_path)
    hpo = params.hpo
    if hpo.backend != "local" or hpo.n_workers == 1:
        return None
    check_several_writers_early(f"hpo.n_workers is {hpo.n_workers}")
    return start_local(hpo.n_workers - 1, None, params_path, stop, early=True)


@contextmanager
def early_workers(params_path: str, stop: Callable[[], bool]) -> Iterator[LocalWorkers | None]:
    """:func:`start_early` for the block, which hands them to the sweep; none outlives the block.

    They wait for the stage's go before they open the study, so a block that raises before the
    sweep starts (a bad model or metric, a canceled sweep, the study locked by another run, a
    signal) leaves them waiting: they are stopped (SIGTERM, SIGKILL after :data:`STOP_WAIT_S`;
    at once on a second signal). A block that ends normally has waited for them in the sweep.
    """
    children = start_early(params_path, stop)
    try:
        yield children
    except BaseException as err:
        if children is not None:
            children.stop(now=isinstance(err, KeyboardInterrupt))
        raise
    if children is not None:  # waited for by the sweep; any still here never got the go
        children.stop()


def wait_forwarding_stop(procs: Sequence[subprocess.Popen[Any]], stop: Callable[[], bool]) -> list[int]:
    """Wait for child processes, passing a graceful stop on to them (SIGTERM); their exit codes."""
    forwarded = False
    while any(p.poll() is None for p in procs):
        if stop() and not forwarded:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            forwarded = True
        time.sleep(0.2)
    return [int(p.returncode) for p in procs]


def worker_command(params_path: str, study: str | None = None, wid: str | None = None) -> list[str]:
    """A worker process's command line with this interpreter (local spawns and Prefect runs).

    Workers start at a library entry point (:mod:`hpopipe.sweep.agent`), not through the
    ``hpopipe`` CLI, so a worker process loads only the sweep.
    """
    cmd = [sys.executable, "-m", "hpopipe.sweep.agent", "--params", params_path]
    if study:
        cmd += ["--study", study]
    if wid:
        cmd += ["--id", wid]
    return cmd
