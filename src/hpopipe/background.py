"""One background thread that runs jobs in the order they were handed in.

The sweep sends each trial's MLflow run (create it, then one batch and its end) through it:
a tracking store's round trips then overlap the next trial's training instead of adding to
it. A daemon thread, not ``concurrent.futures``: a stage ends with :func:`hpopipe.entry.finish`,
which joins every non-daemon thread before the ``atexit`` handlers run, and an executor's idle
thread would never return. Whoever hands in jobs calls :meth:`InOrder.drain` before anything
reads what they wrote (the end of the parent run, the end of a worker); ``atexit`` drains too.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

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

    def __init__(self, name: str) -> None:
        self.name = name
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
