"""A process that imports the hpo stage once and forks a real stage process per request.

The kill matrix runs a few hundred short sweeps. Started as ``python -m stages.hpo``
each would spend seconds importing torch, Optuna and MLflow; forked from this
process (which imports them but runs no torch op, so the fork is safe) a stage
starts in milliseconds. Each child is still a whole process with its own files,
database connections and MLflow store, and it dies the way a killed stage dies:
by SIGKILL, sent at an exact moment (an optimiser step, a write to the study, an
export), with no cleanup of any kind. A write to the default journal is killed half
written (a torn last line, which the next run must cut off); a SQLite write is killed with its
statements sent and its COMMIT not.

Protocol: one JSON request per stdin line, one JSON reply per stdout line.
A request ``{"mlflow_store": path}`` makes an empty MLflow store there, for the tests to
copy. Otherwise the request is
``{"cwd": str, "env": {..}, "kill": {"at": "step"|"commit"|"export", "n": int} | null}``.
Reply: ``{"code": exit status or -signal, "steps": int, "commits": int}`` (the counts are
what the child saw before it ended; a killed child reports what it saw up to the kill).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow  # imported here so that children do not pay for it
import optuna  # noqa: F401
import sklearn.metrics  # noqa: F401
import sqlalchemy
from torch.optim.optimizer import register_optimizer_step_pre_hook

import stages.hpo
from hpopipe import artifacts, entry
from hpopipe.sweep import journal_file, runner, stage  # noqa: F401


class _Counter:
    """Counts optimiser steps and commits to the study; SIGKILLs this process at the chosen one."""

    def __init__(self, kill: dict[str, Any] | None, report: Path) -> None:
        self.kill, self.report = kill, report
        self.seen = {"step": 0, "commit": 0, "export": 0}

    def tick(self, what: str, last_words: Callable[[], None] | None = None) -> None:
        self.seen[what] += 1
        if self.kill and self.kill["at"] == what and self.seen[what] == self.kill["n"]:
            if last_words is not None:
                last_words()
            os.kill(os.getpid(), signal.SIGKILL)

    def save(self) -> None:
        self.report.write_text(json.dumps(self.seen))


def _install(counter: _Counter) -> None:
    register_optimizer_step_pre_hook(lambda *_: counter.tick("step"))

    def on_commit(conn: sqlalchemy.engine.Connection) -> None:
        if str(conn.engine.url.database or "").endswith("study.db"):
            counter.tick("commit")  # the statements ran; the COMMIT has not been sent

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", on_commit)
    append_logs = journal_file.RepairingBackend.append_logs

    def appending(backend: journal_file.RepairingBackend, logs: list[dict[str, Any]]) -> None:
        def torn() -> None:  # half of the lines' bytes reach the file, then the process dies
            text = journal_file.encode(logs)
            with open(backend.path, "ab") as handle:
                handle.write(text[: len(text) // 2])

        counter.tick("commit", torn)
        append_logs(backend, logs)

    journal_file.RepairingBackend.append_logs = appending  # type: ignore[method-assign,assignment]
    write_json = artifacts.write_json

    def exporting(path: Path, payload: Any) -> None:
        if path == artifacts.STATISTICS_JSON:  # trials, ranking and Pareto front written, the rest not
            counter.tick("export")
        write_json(path, payload)

    artifacts.write_json = exporting


def _child(request: dict[str, Any], report: Path) -> None:
    os.setsid()
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    log = os.open("stage.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    counter = _Counter(request.get("kill"), report)
    _install(counter)
    code = 0
    try:
        entry.run(stages.hpo.main)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # a crash is a result: the test reads it from stage.log
        import traceback

        traceback.print_exc()
        code = 1
    counter.save()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _empty_mlflow_store(path: str) -> None:
    """An MLflow store with its tables made (5 s of migrations), to copy instead of making each time."""
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()


def _forked(work: Callable[..., None], *args: Any) -> int:
    """Run ``work`` in a child process; its exit status (-9 when it was SIGKILLed)."""
    pid = os.fork()
    if pid == 0:
        try:
            work(*args)
            os._exit(0)
        finally:
            os._exit(70)  # never back into the serving loop, whatever happened
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        if "mlflow_store" in request:
            print(json.dumps({"code": _forked(_empty_mlflow_store, request["mlflow_store"])}), flush=True)
            continue
        report = Path(request["cwd"]) / "counts.json"
        report.unlink(missing_ok=True)
        code = _forked(_child, request, report)
        seen = json.loads(report.read_text()) if report.exists() else {}
        print(json.dumps({"code": code, **seen}), flush=True)


if __name__ == "__main__":
    serve()
