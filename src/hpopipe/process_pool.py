"""Ordered results of independent tasks from a few local processes (CV's candidate × fold trainings).

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its processes dies (killed, out of
memory, a crash in native code) it breaks every pending future and cannot say which task was
running. Here each process takes one task at a time over its own pipe, so a process that dies
names its task, and its siblings are stopped before anything is written.

Processes start with ``spawn`` (a fresh interpreter: no copy of the parent's threads, locks or
CUDA state) and get ``shared`` once, at start; each task then travels alone.

A caller may refuse tasks as results come in (``wanted``: CV's early stopping drops the folds of a
candidate that can no longer win). The decision is the caller's sequential one: a task is
yielded only if ``wanted`` accepts it when its turn comes, after every earlier result was
consumed; a pool also asks before starting a task, so that a task already known to be refused
is never run, and discards what it ran ahead for a task refused by then.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar, cast

from hpopipe.errors import TaskFailed

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


def _serve(
    conn: Connection, fn: Callable[[Any, Any], Any], shared: Any, setup: Callable[[], None] | None
) -> None:
    """A pool process: run tasks from ``conn`` until told to stop or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    parent = multiprocessing.parent_process()
    if parent is not None:  # a parent killed outright (SIGKILL, SIGTERM) leaves no orphan training on
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    if setup is not None:
        setup()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, task = message
        try:
            reply = (index, True, fn(shared, task))
        except Exception as err:
            reply = (index, False, _one_line(err))
        conn.send(reply)


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


def _death(code: int | None) -> str:
    if code is None:
        return "its process stopped answering"
    if code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with status {code}"


def ordered_map(
    fn: Callable[[S, T], R],
    shared: S,
    tasks: Sequence[T],
    workers: int,
    setup: Callable[[], None] | None = None,
    wanted: Callable[[int], bool] | None = None,
    start_cost_s: float | None = None,
) -> Generator[tuple[int, R], None, None]:
    """``(index, fn(shared, task))`` for every task ``wanted`` accepts, in the order of ``tasks``.

    With ``workers`` <= 1 (or one task) it runs here, one task after another, without ``setup``.
    Otherwise ``min(workers, len(tasks))`` processes run ``setup()`` once, then tasks.
    ``fn`` and ``setup`` must be module-level functions (picklable).

    ``start_cost_s``: what starting one pool process costs (a fresh interpreter importing
    ``fn``'s module). Given, the first two tasks run here, timed, and the pool starts for the
    rest only if :func:`pool_pays`; otherwise the rest run here too. None: always the pool.

    ``wanted(index)`` (default: every task) is asked when the task's turn comes, once every
    earlier result was consumed, and by a pool also before it starts the task. It must be
    monotone: a task it refused once stays refused (a pool does not run it). So what is yielded
    is what the sequential run yields, whatever order the processes finish in.

    Failures raise :class:`TaskFailed` (from an exception in ``fn``: its type and message) and
    stop the other processes. Without ``wanted``, the first failure to arrive raises; with it, a
    failed task raises when its turn comes and only if it is still wanted (a task the sequential
    run would not have run cannot fail the map). A pool process that dies raises at once.
    """
    if workers <= 1 or len(tasks) <= 1:
        yield from _here(fn, shared, tasks, 0, wanted, [])
        return
    first = 0
    if start_cost_s is not None:
        # The first task in a process pays for warming up (torch's first kernels, lazy imports):
        # two run here, and the faster tells what the rest will take.
        first = min(2, len(tasks) - 1)
        took: list[float] = []
        yield from _here(fn, shared, tasks[:first], 0, wanted, took)
        rest, n = len(tasks) - first, min(workers, len(tasks) - first)
        each = min(took, default=0.0)
        if not pool_pays(each, rest, n, start_cost_s):
            log.info(
                "%d more task(s) of ~%.2f s each: less than %d process(es) would cost to start: run here",
                rest,
                each,
                n,
            )
            yield from _here(fn, shared, tasks[first:], first, wanted, [])
            return
    yield from _pooled(fn, shared, tasks, min(workers, len(tasks) - first), setup, wanted, first)


def pool_pays(task_s: float, remaining: int, workers: int, start_cost_s: float) -> bool:
    """Whether ``remaining`` tasks of ``task_s`` seconds each finish sooner on ``workers`` processes.

    Here they take ``R = remaining * task_s``; on the pool about ``start_cost_s + R / workers``
    (the processes start at once, then share the work). So the pool pays when
    ``R > start_cost_s * workers / (workers - 1)``.
    """
    if workers <= 1:
        return False
    return remaining * task_s > start_cost_s * workers / (workers - 1)


def _here(
    fn: Callable[[S, T], R],
    shared: S,
    tasks: Sequence[T],
    first: int,
    wanted: Callable[[int], bool] | None,
    took: list[float],
) -> Generator[tuple[int, R], None, None]:
    """The tasks in this process, one after another (index from ``first``); each one's seconds
    of ``fn`` appended to ``took``."""
    for index, task in enumerate(tasks, first):
        if wanted is not None and not wanted(index):
            continue
        began = time.perf_counter()
        try:
            result = fn(shared, task)
        except Exception as err:
            raise TaskFailed(index, _one_line(err)) from err
        took.append(time.perf_counter() - began)
        yield index, result


_REFUSED = object()  # a task the pool did not start: ``wanted`` refused it before its turn


def _pooled(
    fn: Callable[[S, T], R],
    shared: S,
    tasks: Sequence[T],
    n: int,
    setup: Callable[[], None] | None,
    wanted: Callable[[int], bool] | None,
    first: int = 0,
) -> Generator[tuple[int, R], None, None]:
    """Tasks ``first`` onwards on ``n`` spawned processes, yielded in order (see :func:`ordered_map`)."""
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs: list[multiprocessing.process.BaseProcess] = []
    finished = False
    try:
        for _ in range(n):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child_end, fn, shared, setup), daemon=True)
            proc.start()
            child_end.close()  # the child holds the only other end: its death reads as EOF here
            conns.append(parent_end)
            procs.append(proc)
        pending = itertools.islice(enumerate(tasks), first, None)
        running: dict[Connection, int] = {}
        # index -> (ok, result or failure reason, or _REFUSED), until its turn to be yielded comes
        done: dict[int, tuple[bool, Any]] = {}

        def feed(conn: Connection) -> None:
            for item in pending:
                if wanted is None or wanted(item[0]):
                    conn.send(item)
                    running[conn] = item[0]
                    return
                done[item[0]] = (True, _REFUSED)

        for conn in conns:
            feed(conn)
        following = first
        while running:
            idle: list[Connection] = []
            for ready in wait(list(running)):
                conn = cast(Connection, ready)
                index = running.pop(conn)
                try:
                    _, ok, value = conn.recv()
                except EOFError:
                    dead = procs[conns.index(conn)]
                    dead.join(timeout=5)
                    raise TaskFailed(index, _death(dead.exitcode)) from None
                if not ok and wanted is None:
                    raise TaskFailed(index, value)
                done[index] = (ok, value)
                idle.append(conn)
            while following in done:  # yield first: what the caller learns decides what is fed next
                index, (ok, value) = following, done.pop(following)
                following += 1
                if value is _REFUSED or (wanted is not None and not wanted(index)):
                    continue
                if not ok:
                    raise TaskFailed(index, value)
                yield index, value
            for conn in idle:
                feed(conn)
        finished = True  # what is left in done was refused
    finally:
        _close(conns, procs, graceful=finished)


def _close(conns: list[Connection], procs: list[multiprocessing.process.BaseProcess], graceful: bool) -> None:
    """Stop the pool: ask each process to exit after the work is done, terminate it otherwise."""
    for conn, proc in zip(conns, procs, strict=False):
        if graceful:
            with contextlib.suppress(OSError):
                conn.send(None)
        elif proc.is_alive():
            proc.terminate()
    for conn, proc in zip(conns, procs, strict=False):
        proc.join(timeout=10 if graceful else 5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
