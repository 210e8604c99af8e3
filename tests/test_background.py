"""hpopipe.background: the thread and the process that send the sweep's trial runs to MLflow."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hpopipe.background import InOrder, InProcess
from hpopipe.errors import BackgroundFailed
from tests.conftest import REPO, pid_gone, subprocess_env


def test_jobs_run_in_order_off_the_callers_thread_and_drain_waits_for_them() -> None:
    sender, seen = InOrder("test"), []
    caller = threading.get_ident()

    def job(n: int) -> int:
        time.sleep(0.01 * (5 - n))  # the first is the slowest: order is not who finishes first
        seen.append((n, threading.get_ident() != caller))
        return n * n

    pending = [sender.submit(functools.partial(job, n)) for n in range(5)]
    sender.drain()
    assert seen == [(n, True) for n in range(5)]
    assert [p.result() for p in pending] == [0, 1, 4, 9, 16]


def test_a_failed_job_is_raised_by_drain_once_and_later_jobs_still_run() -> None:
    sender, ran = InOrder("test"), []

    def fail() -> None:
        raise RuntimeError("store unreachable")

    first = sender.submit(fail)
    sender.submit(lambda: ran.append("after"))
    with pytest.raises(RuntimeError, match="store unreachable"):
        sender.drain()
    assert ran == ["after"]
    with pytest.raises(RuntimeError):
        first.result()
    sender.drain()  # raised once: a later drain has nothing to report


def test_the_thread_is_a_daemon_so_a_stage_exit_does_not_wait_on_it() -> None:
    sender = InOrder("test-daemon")
    sender.submit(lambda: None).result()
    [thread] = [t for t in threading.enumerate() if t.name == "test-daemon"]
    assert thread.daemon


# ---------------------------------------------------------------- InProcess: the writer process

HANDLER = ("tests.writer_handlers", "Appender")


def _lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


def test_commands_run_in_order_in_another_process_and_drain_waits_for_them(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    writer = InProcess("test-writer", HANDLER, str(out))
    for n in range(50):
        writer.send(("n", n))
    writer.drain()
    lines = _lines(out)
    assert [int(line[2]) for line in lines] == list(range(50))  # all of them, in order, before drain returned
    assert {line[0] for line in lines} == {str(writer.pid)} and writer.pid != os.getpid()
    writer.close()
    assert writer._proc.returncode == 0  # it read the end of the pipe and exited


def test_a_failed_command_is_raised_by_drain_once_and_later_commands_still_run(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    writer = InProcess("test-writer", HANDLER, str(out))
    writer.send(("fail", "store-unreachable"))
    writer.send(("after",))
    with pytest.raises(BackgroundFailed, match=r"^test-writer: RuntimeError: store-unreachable$"):
        writer.drain()
    assert [line[1] for line in _lines(out)] == ["after"]
    writer.send(("again",))
    writer.drain()  # raised once: a later drain has nothing to report
    writer.send(("fail", "postgresql://hpo:pw-canary@db:5432/mlflow unreachable"))
    with pytest.raises(BackgroundFailed) as raised:
        writer.drain()
    assert "pw-canary" not in str(raised.value) and "hpo:***@db" in str(raised.value)
    writer.close()


def test_a_writer_that_cannot_start_says_why_at_every_drain(tmp_path: Path) -> None:
    writer = InProcess("test-writer", HANDLER, None)
    for _ in range(2):
        writer.send(("lost",))
        with pytest.raises(BackgroundFailed, match="not started: ValueError: no file to append to"):
            writer.drain()
    writer.close()


def test_a_dead_writer_is_named_by_drain_not_waited_for(tmp_path: Path) -> None:
    writer = InProcess("test-writer", HANDLER, str(tmp_path / "out.txt"))
    writer.send(("one",))
    writer.drain()
    os.kill(writer.pid, signal.SIGKILL)
    writer.send(("lost",))
    killed = r"^test-writer \(pid \d+\): its process was killed by SIGKILL$"
    with pytest.raises(BackgroundFailed, match=killed):
        writer.drain()
    writer.close()  # nothing left to wait for


PARENT = """
import sys, time
from hpopipe.background import InProcess
writer = InProcess("w", ("tests.writer_handlers", "Appender"), sys.argv[1])
writer.send(("ready",))
writer.drain()
writer.send(("sleep", 60))  # busy: it will not see the end of its pipe for a minute
print(writer.pid, flush=True)
time.sleep(60)
"""


def test_the_writer_ignores_sigterm_and_dies_with_its_parent(tmp_path: Path) -> None:
    """A graceful stop (SIGTERM to the group) still drains the writer; a SIGKILLed parent leaves no
    writer behind, even one busy with a command: the kernel's parent-death signal, not the pipe."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "out.txt")],
        env=subprocess_env(PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(child, signal.SIGTERM)
    assert not pid_gone(child, 0.5), "the writer died of SIGTERM"
    parent.kill()
    parent.wait()
    assert pid_gone(child), "the writer outlived its SIGKILLed parent"
