"""``hpopipe worker``: join a sweep from any machine that reaches its storage and prepared data.

Like ``wandb agent``: start as many as you like, whenever you like; each runs
trials until the sweep's budget is spent, then exits 0. The study to join is
the one this checkout's params.yaml and prepared data describe, so a worker
with other settings can never add trials of another configuration to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
from collections.abc import Callable
from typing import Any

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.entry import run
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.schema import read_schema
from hpopipe.names import check_name
from hpopipe.sweep.lifecycle import worker_id
from hpopipe.sweep.local import COORDINATOR_ENV
from hpopipe.sweep.runner import join
from hpopipe.sweep.signals import GracefulStop
from hpopipe.sweep.storage import open_storage, resolve, under_budget_lock
from hpopipe.sweep.study import data_fingerprint, open_study, study_name
from hpopipe.sweep.warm_start import warm_start
from hpopipe.tracking import make_tracker

log = logging.getLogger(__name__)


def run_agent(params_path: str, study: str | None, wid: str | None, stop: Callable[[], bool]) -> str:
    """Join the sweep and run trials until it is done; returns why the worker stopped."""
    loaded = load_params(params_path)
    for path in (artifacts.TRAIN, artifacts.SCHEMA):
        if not path.exists():
            raise HpopipeError(f"{path}: not found (run `dvc repro prepare` or `dvc pull` in this checkout)")
    train, schema = artifacts.read_frame(artifacts.TRAIN), read_schema(artifacts.SCHEMA).plain()
    params = loaded.for_task(schema["task"])  # as the hpo stage does: the same study name
    fingerprint = data_fingerprint(train, schema)
    name = study_name(params, fingerprint)
    if study is not None and study != name:
        raise HpopipeError(
            f"--study: {study!r} is not the sweep this checkout describes ({name}): "
            "run the worker with the sweep's params.yaml and prepared data"
        )
    spec = resolve(params.hpo.storage)
    tracker = make_tracker()
    tracker.check_several_writers("a worker shares the sweep with other processes")
    wid = wid or worker_id()
    if os.environ.pop(COORDINATOR_ENV, None):  # started early by the hpo stage: not before its sweep is ready
        go = wait_for_stage(stop)
        if go is None:
            return "interrupted"
        tracker.nest_under(go.get("parent_run"))
    log.info("worker %s joins sweep %s on %s", wid, name, spec.display)
    storage = open_storage(spec, params.hpo.storage_retry_s)
    study_ = open_study(params, name, storage)
    # A worker that starts the study first warm-starts it (once).
    under_budget_lock(spec, storage, name, lambda: warm_start(study_, params, fingerprint))
    reason = join(params, train, schema, study_, spec, tracker, stop, wid)
    log.info("worker %s stops: %s", wid, reason)
    return reason


def wait_for_stage(stop: Callable[[], bool], fd: int = 0, poll_s: float = 0.1) -> dict[str, Any] | None:
    """Wait for the go of the hpo stage that started this worker early: one JSON line on ``fd``
    (stdin, a pipe from the stage; see :mod:`hpopipe.sweep.local`). The line, or None when a
    signal stopped the wait.

    The stage stops its workers when it fails before the go; a stage that died unable to (SIGKILL)
    closed the pipe, and the wait ends with an error.
    """
    received = b""
    while not received.endswith(b"\n"):
        if stop():
            return None
        if not select.select([fd], [], [], poll_s)[0]:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            raise HpopipeError("the hpo stage that started this worker exited before its sweep began")
        received += chunk
    go = json.loads(received)
    return dict(go) if isinstance(go, dict) else {}


def run_worker(params_path: str, study: str | None = None, wid: str | None = None) -> None:
    """One worker process, start to exit: ``hpopipe worker`` and the hpo stage's local workers.

    A signal stops it after the current epoch (exit 130/143, the trial queued for a retry).
    """
    study = None if study is None else check_name(study, "--study")
    wid = None if wid is None else check_name(wid, "--id")
    with GracefulStop().installed() as stop:
        reason = run_agent(params_path, study, wid, stop)
    if reason == "failed":
        raise HpopipeError("the sweep failed (hpopipe status shows why)")
    print(f"worker stopped: {reason}")
    if stop.exit_code:
        raise SystemExit(stop.exit_code)


def main(argv: list[str] | None = None) -> None:
    """``python -m hpopipe.sweep.agent --params P [--study S] [--id W]`` (see local.worker_command)."""
    parser = argparse.ArgumentParser(prog="hpopipe-worker")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--study")
    parser.add_argument("--id")
    args = parser.parse_args(argv)
    run(lambda: run_worker(args.params, args.study, args.id))


if __name__ == "__main__":
    main()
