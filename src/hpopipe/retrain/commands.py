"""DVC and git as child processes: the retrain's only way to touch the pipeline and the repo.

DVC runs with this interpreter (``python -m dvc``) and this interpreter's directory first on
PATH, so a served flow without the venv on PATH still runs the stages with the right Python.
A long command streams its output to a logger line by line and can be stopped with everything
it started (DVC does not pass a signal on to the stage under it).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from hpopipe.errors import HpopipeError

AnyLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

_KILL_GRACE_S = 10.0
# DVC's advice after each stage; the retrain does these itself, so they are noise in its log.
_DVC_HINTS = (
    "To track the changes with git",
    "git add dvc.lock",
    "To enable auto staging",
    "dvc config core.autostage",
    "Use `dvc push`",
)


def dvc(*args: str) -> list[str]:
    """The command line of ``dvc args...`` with the DVC of this interpreter, whatever PATH says."""
    return [sys.executable, "-m", "dvc", *args]


def child_env() -> dict[str, str]:
    """The stages' ``python`` must be this interpreter, so its directory goes first on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_streaming(
    cmd: Sequence[str], cwd: Path, prefix: str, logger: AnyLogger, timeout_s: float | None = None
) -> tuple[list[str], int | None]:
    """Run ``cmd``, logging each output line as it comes; ``None`` as the status on a timeout."""
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group, so a timeout can stop the stage under DVC
    )
    lines: list[str] = []
    reader = threading.Thread(target=_pump, args=(proc, lines, prefix, logger), daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _stop_tree(proc)
        code = None
    except BaseException:  # cancelled (Prefect, Ctrl-C): never leave a stage running unattended
        _stop_tree(proc)
        raise
    reader.join(timeout=_KILL_GRACE_S)
    return lines, code


def _pump(proc: subprocess.Popen[str], lines: list[str], prefix: str, logger: AnyLogger) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip()
        if line:
            lines.append(line)
            if not line.strip().startswith(_DVC_HINTS):
                logger.info("%s | %s", prefix, line)


def _stop_tree(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the process group; after DVC exits (or a grace period) SIGKILL whatever is left.

    The second signal goes to the group even when DVC exited cleanly: the stage under it may
    ignore SIGTERM, and it must not go on writing outputs after the task has given up.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            continue


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``git args...`` in ``root``; with ``check``, a failure is a user error naming git's last line."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise HpopipeError(f"git {args[0]}: {detail}")
    return proc
