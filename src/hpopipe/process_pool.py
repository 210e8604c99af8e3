"""Ordered results of independent tasks from a few local workers (CV's candidate × fold trainings).

Why not ``concurrent.futures.ProcessPoolExecutor``: when one of its processes dies (killed, out of
memory, a crash in native code) it breaks every pending future and cannot say which task was
running. Here each worker takes one task at a time over its own pipe, so a process that dies
names its task, and its siblings are stopped before anything is written.

With ``workers`` = N > 1 the workers are this process (a daemon thread) and N - 1 spawned
processes, all started at once: this process trains from the first moment while the others
import, so their start-up overlaps real work instead of delaying it, and a map that ends before a
process is ready does not wait for it (it is terminated). The thread is served over a pipe exactly
as a process is, so one loop collects both.

Processes start with ``spawn`` (a fresh interpreter: no copy of the parent's threads, locks or
CUDA state), say when they are ready (imported, ``setup`` run) and only then get ``shared``, once,
and tasks; each task then travels alone. The thread uses ``shared`` itself.

A caller may refuse tasks as results come in (``wanted``: CV's early stopping drops the folds of a
candidate that can no longer win). The decision is the caller's sequential one: a task is
yielded only if ``wanted`` accepts it when its turn comes, after every earlier result was
consumed; a pool also asks before starting a task, so that a task already known to be refused
is never run, and discards what it ran ahead for a task refused by then.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Generator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar, cast

from hpopipe.errors import TaskFailed, one_line
from hpopipe.processes import exit_reason

log = logging.getLogger(__name__)

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


def _serve(conn: Connection, fn: Callable[[Any, Any], Any], setup: Callable[[], None] | None) -> None:
    """A pool process: say it is ready, take ``shared``, then tasks until told to stop or the parent
    is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    parent = multiprocessing.parent_process()
    if parent is not None:  # a parent killed outright (SIGKILL, SIGTERM) leaves no orphan training on
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()
    if setup is not None:
        setup()
    conn.send(None)  # ready: until the parent reads this, it may terminate this process at any time
    try:
        shared = conn.recv()
    except EOFError:
        return
    _answer(conn, fn, shared)


def _serve_here(conn: Connection, fn: Callable[[Any, Any], Any], shared: Any, gone: list[str]) -> None:
    """This process's worker, in a daemon thread: :func:`_serve` without ``setup`` (this process
    is set up) or signals (only the main thread may set them), on ``shared`` itself.

    torch's random state is the process's: this thread is the only one here that trains (the
    main thread only sends, receives and yields), so each training's seed still decides it alone.
    What is not an Exception (SystemExit, KeyboardInterrupt raised by ``fn``) ends the thread, as
    it would end a process: it is noted in ``gone`` and the pipe closes, which the loop reads as
    the death of this worker.
    """
    try:
        _answer(conn, fn, shared)
    except BaseException as err:  # reported as the pipe's end, like a process's death
        gone.append(f"this process's worker thread stopped: {one_line(err)}")
    finally:
        conn.close()


def _answer(conn: Connection, fn: Callable[[Any, Any], Any], shared: Any) -> None:
    """Tasks from ``conn``, one at a time: ``(index, task)`` in, ``(index, ok, value)`` out; None
    or EOF stops."""
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
            reply = (index, False, one_line(err))
        conn.send(reply)


def _exit_with(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


def ordered_map(
    fn: Callable[[S, T], R],
    shared: S,
    tasks: Sequence[T],
    workers: int,
    setup: Callable[[], None] | None = None,
    wanted: Callable[[int], bool] | None = None,
) -> Generator[tuple[int, R], None, None]:
    """``(index, fn(shared, task))`` for every task ``wanted`` accepts, in the order of ``tasks``.

    With ``workers`` <= 1 (or one task) it runs here, one task after another, without ``setup``.
    Otherwise ``n = min(workers, len(tasks))`` workers share the tasks: this process, in a daemon
    thread (without ``setup``), from the first moment, and ``n - 1`` spawned processes, each
    taking tasks once it has run ``setup()``; one still starting when the map ends is terminated.
    ``fn`` and ``setup`` must be module-level functions (picklable).

    ``wanted(index)`` (default: every task) is asked when the task's turn comes, once every
    earlier result was consumed, and by a pool also before it starts the task. It must be
    monotone: a task it refused once stays refused (a pool does not run it). So what is yielded
    is what the sequential run yields, whatever order the workers finish in.

    Failures raise :class:`TaskFailed` (from an exception in ``fn``: its type and message) and
    stop the other processes (a training in this process's thread cannot be interrupted: it
    finishes in the background, and its result is dropped). Without ``wanted``, the first failure
    to arrive raises; with it, a failed task raises when its turn comes and only if it is still
    wanted (a task the sequential run would not have run cannot fail the map). A worker that dies
    with a task raises at once; a process that dies before its first task is only logged, since
    the others (this process at least) do its share.
    """
    if workers <= 1 or len(tasks) <= 1:
        yield from _here(fn, shared, tasks, wanted)
        return
    yield from _pooled(fn, shared, tasks, min(workers, len(tasks)), setup, wanted)


def _here(
    fn: Callable[[S, T], R],
    shared: S,
    tasks: Sequence[T],
    wanted: Callable[[int], bool] | None,
) -> Generator[tuple[int, R], None, None]:
    """The tasks in this process, one after another."""
    for index, task in enumerate(tasks):
        if wanted is not None and not wanted(index):
            continue
        try:
            result = fn(shared, task)
        except Exception as err:
            raise TaskFailed(index, one_line(err)) from err
        yield index, result


_REFUSED = object()  # a task the pool did not start: ``wanted`` refused it before its turn


def _pooled(
    fn: Callable[[S, T], R],
    shared: S,
    tasks: Sequence[T],
    n: int,
    setup: Callable[[], None] | None,
    wanted: Callable[[int], bool] | None,
) -> Generator[tuple[int, R], None, None]:
    """The tasks on this process's thread and ``n - 1`` spawned processes, yielded in order (see
    :func:`ordered_map`)."""
    ctx = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    procs: list[multiprocessing.process.BaseProcess | None] = []  # None: this process's thread
    ready: set[Connection] = set()  # answered at least once: holds ``shared``, takes tasks
    gone: list[str] = []  # why the thread stopped, if it did
    finished = False
    try:
        pending = enumerate(tasks)
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

        here, there = multiprocessing.Pipe()
        threading.Thread(target=_serve_here, args=(there, fn, shared, gone), daemon=True).start()
        conns.append(here)
        procs.append(None)
        ready.add(here)
        feed(here)  # this process trains while the others start
        for _ in range(n - 1):
            # Only small arguments: spawn writes them to a pipe the child reads after importing
            # the parent's main module, so ``shared`` there would hold this loop up that long.
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child_end, fn, setup), daemon=True)
            proc.start()
            child_end.close()  # the child holds the only other end: its death reads as EOF here
            conns.append(parent_end)
            procs.append(proc)
        starting = set(conns) - ready
        following = 0
        while running:  # this process's thread is always there to take what is pending
            idle: list[Connection] = []
            for event in wait([*running, *starting]):
                conn = cast(Connection, event)
                try:
                    message = conn.recv()
                except EOFError:
                    why = _gone(procs[conns.index(conn)], gone)
                    if conn in running:
                        raise TaskFailed(running[conn], why) from None
                    log.warning("a pool process stopped before its first task (%s): the others go on", why)
                    starting.discard(conn)
                    continue
                if conn in starting:  # its "ready"
                    starting.discard(conn)
                    try:
                        conn.send(shared)
                    except OSError as err:  # gone since: as if before its "ready"
                        log.warning(
                            "a pool process stopped before its first task (%s): the others go on", err
                        )
                        continue
                    ready.add(conn)
                    idle.append(conn)
                    continue
                index = running.pop(conn)
                _, ok, value = message
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
        _close(conns, procs, ready, graceful=finished)


def _gone(proc: multiprocessing.process.BaseProcess | None, gone: list[str]) -> str:
    """Why a worker's pipe closed: its process's end, or what stopped this process's thread."""
    if proc is None:
        return gone[0] if gone else "this process's worker thread stopped"
    proc.join(timeout=5)
    return exit_reason(proc.exitcode)


def _close(
    conns: list[Connection],
    procs: list[multiprocessing.process.BaseProcess | None],
    ready: set[Connection],
    graceful: bool,
) -> None:
    """Stop the workers: ask each ready one to exit after the work is done; terminate a process
    otherwise (one still importing is not waited for). This process's thread, a daemon, stops
    when its pipe closes (after the training it may be in)."""
    for conn, proc in zip(conns, procs, strict=False):
        if graceful and conn in ready:
            with contextlib.suppress(OSError):
                conn.send(None)
        elif proc is not None and proc.is_alive():
            proc.terminate()
    for conn, proc in zip(conns, procs, strict=False):
        if proc is not None:
            proc.join(timeout=10 if graceful and conn in ready else 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        conn.close()
