"""Work that runs in order beside the caller: on one background thread, or in one child process.

The sweep sends each trial's MLflow run (create it, then one batch and its end) through one of
them: a tracking store's round trips then overlap the next trial's training instead of adding to
it. :class:`InOrder` is a daemon thread, not ``concurrent.futures``: a stage ends with
:func:`hpopipe.entry.finish`, which joins every non-daemon thread before the ``atexit`` handlers
run, and an executor's idle thread would never return. A thread shares the interpreter lock,
though: a store whose client is mostly Python (MLflow's SQLAlchemy store, about 30 ms of CPU a
trial) takes that time from a training loop that is mostly Python too. :class:`InProcess` runs
the same work, sent as data, in a child process on another core. Whoever hands in work calls
``drain`` before anything reads what it wrote (the end of the parent run, the end of a worker);
``atexit`` drains too.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import gc
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe
from typing import Any

from hpopipe.errors import BackgroundFailed, one_line
from hpopipe.processes import exit_reason
from hpopipe.redact import mask_url

log = logging.getLogger(__name__)


class Pending:
    """A job's result, once it ran (``error`` set if it raised)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def result(self) -> Any:
        """Wait for the job; its value, or its exception raised here."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class InOrder:
    """Jobs run one at a time, in submission order, on one daemon thread started on first use.

    A job that raises does not stop the ones after it (each decides from its inputs' ``Pending``
    whether it can run); the first error is raised again by :meth:`drain`, so a failure is
    reported by the process that caused it, just later.
    """

    def __init__(self, name: str, handle: Callable[[tuple[Any, ...]], None] | None = None) -> None:
        self.name = name
        self._handle = handle  # what :meth:`send` runs each command with
        self._jobs: queue.Queue[tuple[Callable[[], Any], Pending]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._first_error: BaseException | None = None
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> Pending:
        """Queue ``job``; returns at once."""
        pending = Pending()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
                atexit.register(self._drain_quietly)
        self._jobs.put((job, pending))
        return pending

    def send(self, command: tuple[Any, ...]) -> None:
        """Queue ``handle(command)``: the same commands :meth:`InProcess.send` takes."""
        if self._handle is None:
            raise TypeError(f"{self.name}: made without a handler, it takes jobs (submit), not commands")
        self.submit(functools.partial(self._handle, command))

    def drain(self) -> None:
        """Wait until every job handed in so far has run; raise the first error any of them raised."""
        if self._thread is not None:
            self._jobs.join()
        with self._lock:
            error, self._first_error = self._first_error, None
        if error is not None:
            raise error

    def _drain_quietly(self) -> None:
        try:
            self.drain()
        except Exception as err:  # at exit there is no one left to raise to
            log.warning("%s: %s", self.name, err)

    def _run(self) -> None:
        while True:
            job, pending = self._jobs.get()
            try:
                pending.value = job()
            except BaseException as err:
                pending.error = err
                with self._lock:
                    if self._first_error is None:
                        self._first_error = err
            finally:
                pending.done.set()
                self._jobs.task_done()


_DRAIN = "drain"  # a command of the parent's, answered by the child once every earlier one ran
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_CHILD = (
    "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); "
    "from {module} import {name} as make; from hpopipe.background import serve; serve(make)"
)


class InProcess:
    """Commands (tuples of plain data) handled in order by one child process, started at once.

    The child is a fresh interpreter (``python -c``, not ``multiprocessing``: no re-import of the
    parent's ``__main__``): it imports ``handler`` (``(module, name)``), calls it with ``setup``
    and calls what that returns with each command. It ignores SIGINT and SIGTERM (a graceful stop
    of the parent still drains it) and dies with the parent (``PR_SET_PDEATHSIG``), so a killed
    stage leaves no process behind. Commands go through a feeder thread: the parent never waits
    on a child that is still importing. A command that raises does not stop the later ones; the
    first error is raised by :meth:`drain`, as :class:`InOrder` does. Start it from the main
    thread: the kernel's parent-death signal follows the thread that started the child.
    """

    def __init__(self, name: str, handler: tuple[str, str], setup: Any) -> None:
        module, attr = handler
        if not all(part.isidentifier() for part in [*module.split("."), attr]):
            raise ValueError(f"{name}: not a module and a name: {handler!r}")
        self.name = name
        self._conn, child_end = Pipe(duplex=True)
        code = _CHILD.format(module=module, name=attr)
        argv = [sys.executable, "-c", code, json.dumps(sys.path), str(child_end.fileno()), str(os.getpid())]
        self._proc = subprocess.Popen(argv, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL)
        child_end.close()
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._outbox.put(("setup", setup))
        self._feeder = threading.Thread(target=self._feed, name=f"{name}-feeder", daemon=True)
        self._feeder.start()
        self._tokens = itertools.count()
        self._sent = False  # sent since the last drain
        self._used = False  # ever sent a command
        self._closed = False
        atexit.register(self.close)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, command: tuple[Any, ...]) -> None:
        """Queue ``command`` for the child; returns at once."""
        self._sent = self._used = True
        self._outbox.put(command)

    def drain(self) -> None:
        """Wait until the child has handled every command sent so far; raise the first error."""
        if not self._sent or self._closed:
            return
        token = next(self._tokens)
        self._outbox.put((_DRAIN, token))
        while True:
            try:
                kind, answered, error = self._conn.recv()
            except (EOFError, OSError) as err:
                self._closed = True
                died = f"{self.name} (pid {self.pid}): {exit_reason(self._exit_code())}"
                raise BackgroundFailed(died) from err
            if kind == _DRAIN and answered == token:
                break
        self._sent = False
        if error is not None:  # the child's message may quote a store's URL
            raise BackgroundFailed(mask_url(f"{self.name}: {error}"))

    def close(self) -> None:
        """Drain (a failure is logged: at exit there is no one left to raise to), then stop the child.

        A child that was never sent a command is killed at once: it may still be importing.
        """
        if self._closed:
            return
        try:
            self.drain()
        except BackgroundFailed as err:
            log.warning("%s", err)
        self._closed = True
        self._outbox.put(None)
        self._feeder.join(timeout=5)
        self._conn.close()  # the child reads the end of its input and exits
        if not self._used:
            self._proc.kill()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def _feed(self) -> None:
        while (command := self._outbox.get()) is not None:
            with contextlib.suppress(OSError):  # the child is gone: drain says so
                self._conn.send(command)

    def _exit_code(self) -> int | None:
        """The child's exit status once it is gone (its end of the pipe closes as it dies)."""
        try:
            return self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None


def _die_with(parent: int) -> None:
    """This process gets SIGKILL when ``parent`` ends (Linux); it exits now if that already happened."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the end of the pipe still stops it
        pass
    if os.getppid() != parent:
        os._exit(0)


def serve(make: Callable[[Any], Callable[[tuple[Any, ...]], None]]) -> None:
    """The child of :class:`InProcess`: handle commands from the pipe until it closes, then exit.

    No garbage collection while ``make`` imports (what an import makes lives to the end), and no
    interpreter teardown at the end: the parent waits for this exit.
    """
    conn, parent = Connection(int(sys.argv[2])), int(sys.argv[3])
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gc.disable()
    first_error: str | None = None
    unready = ""
    handle: Callable[[tuple[Any, ...]], None] | None = None
    try:
        _, setup = conn.recv()
        handle = make(setup)
    except EOFError:
        os._exit(0)
    except Exception as err:  # every drain says so: no command can run
        unready = one_line(err)
    gc.freeze()
    gc.enable()
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            break
        if command[0] == _DRAIN:
            conn.send((_DRAIN, command[1], first_error or (None if handle else f"not started: {unready}")))
            first_error = None
        elif handle is not None:
            try:
                handle(command)
            except Exception as err:
                first_error = first_error or one_line(err)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
