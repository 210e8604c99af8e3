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
- Optuna syncs the file to disk after every append, two dozen per default trial (its start, each
  parameter, each epoch's value, each attribute, its end); on this machine's disk those fsyncs
  were the largest single cost of a sweep's bookkeeping (docs/benchmarks.md).
  :class:`RepairingBackend` syncs only the appends that finish a trial, queue one (a trial made
  from a template) or write the study; a running trial's start and details are made durable by
  its end, since an fsync makes every earlier byte of the file durable too. A killed process
  loses nothing either way: its appends are in the operating system's cache, and the next
  reader sees them. An operating-system crash or power loss can lose the trial that was running
  (the sweep runs it again), as SQLite in WAL mode with ``synchronous=NORMAL`` loses its last
  commits; what it leaves at the end of the file is a torn tail, cut as above.

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

from hpopipe.sweep.optuna_internals import CREATE_TRIAL_OP, TRIAL_DETAIL_OPS

log = logging.getLogger(__name__)
SUFFIX = ".journal"  # a study file with this suffix is a journal (``--storage FILE``, backups)
LOCK_SUFFIX = ".append-lock"  # not Optuna's ".lock", which its own lock deletes on release
_TAIL_PROBE = 1 << 16  # bytes read back from the end when looking for the last newline


class FlockLock:
    """``flock`` on ``<journal>.append-lock``: released by the kernel when the holder dies.

    The lock file stays open between appends (one ``open`` saved on each). A flock belongs to
    the open file, which a forked child would share, so a child opens its own.
    """

    def __init__(self, journal: Path) -> None:
        self._path = journal.with_name(journal.name + LOCK_SUFFIX)
        self._handle: IO[bytes] | None = None
        self._pid = 0

    def __enter__(self) -> None:
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self._path, "ab")  # closed when the backend is collected
            self._pid = os.getpid()
        fcntl.flock(self._handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)


class RepairingBackend(JournalFileBackend):
    """Optuna's journal file, whose appends first cut off a torn last line, and are synced to disk
    when they finish or queue a trial or write the study (see the module doc)."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))  # its own lock is never taken: every append is ours
        self._flock = FlockLock(path)
        self.path = path

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = encode(logs)
        with self._flock, open(self.path, "a+b") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                _cut_torn_tail(self.path, fd, size)
            f.write(text)
            f.flush()
            if any(map(_durable_now, logs)):
                os.fsync(fd)


def encode(logs: list[dict[str, Any]]) -> bytes:
    """Journal entries as the lines appended for them (Optuna's compact JSON, one per line)."""
    return ("\n".join(json.dumps(x, separators=(",", ":")) for x in logs) + "\n").encode()


def _durable_now(entry: dict[str, Any]) -> bool:
    """Whether an operation must be on disk when its append returns (see the module doc)."""
    op = entry.get("op_code")
    if op in TRIAL_DETAIL_OPS:
        return False
    return not (op == CREATE_TRIAL_OP and "state" not in entry)  # a plain ask: synced with its end


def is_journal(path: Path) -> bool:
    """Whether a study file is a journal (by its name), not a SQLite file."""
    return path.suffix == SUFFIX


def open_journal(path: Path) -> optuna.storages.JournalStorage:
    """The study journal at ``path`` (created if missing), replayed.

    Raises ValueError (Optuna's own) when a line before the last cannot be read.
    """
    return optuna.storages.JournalStorage(RepairingBackend(path))


def _cut_torn_tail(path: Path, fd: int, size: int) -> None:
    """Truncate the journal open as ``fd`` after its last newline (the caller holds the lock)."""
    end = complete_size(path, size)
    log.warning("%s: its last write was cut short (%d bytes); they are dropped", path, size - end)
    os.ftruncate(fd, end)


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
