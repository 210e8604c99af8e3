"""The study journal file: Optuna's append-only log, made safe against a dead writer.

Optuna's ``JournalFileBackend`` appends one JSON line per storage operation. Two of its edges
matter for a sweep that may be killed at any moment:

- its lock is a file created with ``O_EXCL`` and deleted on release. A process killed while
  holding it (an append is a write and an ``fsync``, milliseconds each, a dozen per trial) leaves
  the file behind, and the next run waits out Optuna's 30 s grace period. :class:`FlockLock`
  takes ``flock`` on a sidecar instead, which the kernel releases when its holder dies, however
  it dies. Every hpopipe process opens journals through :func:`open_journal`, so all of them
  take the same lock; another program may read the file, but should not write to it.
- a write cut short (a full disk, a dying machine) leaves a last line without its newline.
  Optuna's reader skips such a line, but its next append would glue a whole line onto it, and
  that glued line stops every later read. :class:`RepairingBackend` cuts a torn tail off, holding
  the lock, before it appends: the cut operation never happened, as after a crash one instant
  earlier.

- Optuna syncs the file to disk after every append, a dozen or more per trial (a parameter,
  an epoch's value, an attribute); on this machine's disk those fsyncs were the largest single
  cost of a sweep's bookkeeping (docs/benchmarks.md). :class:`RepairingBackend` syncs only the
  appends that create or finish a trial or write the study (:data:`TRIAL_DETAIL_OPS` are the
  others), and an fsync makes every earlier byte of the file durable too. A killed process
  loses nothing either way: its appends are in the operating system's cache, and the next
  reader sees them. An operating-system crash or power loss can lose the running trial's
  latest details (it is then retried from its checkpoint), as SQLite in WAL mode with
  ``synchronous=NORMAL`` loses its last commits; what it leaves at the end of the file is a
  torn tail, cut as above.

A prefix of the file that ends at a newline is a study state Optuna can replay: that is what
:func:`copy_complete_lines` copies for backups.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.storages.journal import JournalFileBackend

from hpopipe.sweep.optuna_internals import TRIAL_DETAIL_OPS

log = logging.getLogger(__name__)
LOCK_SUFFIX = ".append-lock"  # not Optuna's ".lock", which its own lock deletes on release
_TAIL_PROBE = 1 << 16  # bytes read back from the end when looking for the last newline


class FlockLock:
    """``flock`` on ``<journal>.append-lock``: released by the kernel when the holder dies."""

    def __init__(self, journal: Path) -> None:
        self._path = journal.with_name(journal.name + LOCK_SUFFIX)
        self._handle: IO[bytes] | None = None

    def __enter__(self) -> None:
        handle = open(self._path, "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        self._handle = handle

    def __exit__(self, *exc: object) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()  # closing the descriptor drops the flock


class RepairingBackend(JournalFileBackend):
    """Optuna's journal file, whose appends first cut off a torn last line, and are synced to disk
    when they create or finish a trial or write the study (see the module doc)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))  # its own lock is never taken: every append is ours
        self._flock = FlockLock(path)
        self.path = path

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        with self._flock:
            _cut_torn_tail(self.path)
            with open(self.path, "ab") as f:
                f.write(("\n".join(json.dumps(x, separators=(",", ":")) for x in logs) + "\n").encode())
                f.flush()
                if not all(x.get("op_code") in TRIAL_DETAIL_OPS for x in logs):
                    os.fsync(f.fileno())


def open_journal(path: Path) -> optuna.storages.JournalStorage:
    """The study journal at ``path`` (created if missing), replayed.

    Raises ValueError (Optuna's own) when a line before the last cannot be read.
    """
    return optuna.storages.JournalStorage(RepairingBackend(path))


def _cut_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last newline when it does not end with one (caller holds the lock)."""
    size = path.stat().st_size
    if size == 0:
        return
    end = complete_size(path, size)
    if end == size:
        return
    log.warning("%s: its last write was cut short (%d bytes); they are dropped", path, size - end)
    os.truncate(path, end)


def complete_size(path: Path, size: int | None = None) -> int:
    """How many leading bytes of ``path`` are whole lines (up to and including its last newline)."""
    size = path.stat().st_size if size is None else size
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - _TAIL_PROBE)
            f.seek(start)
            chunk = f.read(end - start)
            at = chunk.rfind(b"\n")
            if at >= 0:
                return start + at + 1
            end = start
    return 0


def copy_complete_lines(source: Path, target: Path) -> None:
    """Copy the whole lines of a live journal: a state Optuna replays, whatever is being appended."""
    end = complete_size(source)
    with open(source, "rb") as src, open(target, "wb") as dst:
        left = end
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            left -= len(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def unreadable_line(path: Path) -> str | None:
    """Why ``path`` is not a journal Optuna can replay (the first bad line), or None when it is."""
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith(b"\n"):
                    return None  # a torn last line: replay skips it, the next append cuts it
                try:
                    entry = json.loads(line)
                except ValueError:
                    return f"line {number} is not JSON"
                if not isinstance(entry, dict) or "op_code" not in entry:
                    return f"line {number} is not a journal entry"
    except OSError as err:
        return err.strerror or type(err).__name__
    return None
