"""hpopipe.background.InOrder: the thread that sends the sweep's trial runs to MLflow."""

from __future__ import annotations

import functools
import threading
import time

import pytest

from hpopipe.background import InOrder


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
