"""Atomic file writes: a killed stage leaves the old file or the new one, never half of one.

A full disk is the same story: the write fails, the old file stays, and the error is one line
naming the file and "no space left on device" (:class:`~hpopipe.errors.DiskFull`), whatever
the writer said (``OSError`` ENOSPC, SQLite's "database or disk is full", or torch's zip writer:
"inline_container.cc ... unexpected pos").
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hpopipe.errors import DiskFull

_FULL_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")
_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is taken for a full disk


def no_space(err: BaseException, where: Path | None = None) -> bool:
    """Whether ``err`` (or an error it was raised from) means the disk is full.

    torch's zip writer reports a short write as "unexpected pos" without the reason; it counts
    when ``where``'s file system is (nearly) full, checked before the partial file is removed.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "pgcode", None) == "53100":  # PostgreSQL's disk_full
            return True
        # A driver's own message only: a wrapper such as SQLAlchemy's quotes the statement's
        # parameters (a trial's fail_reason may say "no space left"); its driver error is in the chain.
        text = "" if getattr(current, "orig", None) is not None else str(current).lower()
        if any(full in text for full in _FULL_TEXTS):
            return True
        if "unexpected pos" in text and where is not None and _nearly_full(where):
            return True
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return False


def _nearly_full(where: Path) -> bool:
    folder = where if where.is_dir() else where.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL


def disk_full(path: Path | str) -> DiskFull:
    """The one line for a write to ``path`` that found the disk full."""
    return DiskFull(f"{path}: no space left on device (free some space and run again)")


@contextmanager
def temp_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed over ``path``.

    On a full disk the temp file is removed, ``path`` keeps its old content and
    :class:`~hpopipe.errors.DiskFull` names it.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if no_space(err):
            raise disk_full(path) from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should look like any file
        os.replace(tmp, path)
    except BaseException as err:
        full = isinstance(err, Exception) and not isinstance(err, DiskFull) and no_space(err, Path(tmp))
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise disk_full(path) from None
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync, then rename)."""
    with temp_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    """Text flavour of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))
