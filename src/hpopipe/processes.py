"""Local processes: is one alive (the stale-worker and stale-MLflow-run checks), why one ended, how
many cores are ours."""

from __future__ import annotations

import os
import signal


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, it is just not ours
        return True
    return True


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, as ``taskset`` or a container sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def exit_reason(code: int | None) -> str:
    """Why a child process is gone, from its exit status (None: it is still there, but silent)."""
    if code is None:
        return "its process stopped answering"
    if code < 0:
        try:
            return f"its process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"its process was killed by signal {-code}"
    return f"its process exited with status {code}"
