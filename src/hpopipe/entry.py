"""The edge of a stage process: user errors become one line on stderr and exit status 2, and a
stage whose ``dvc`` died stops instead of running on as an orphan."""

from __future__ import annotations

import atexit
import errno
import gc
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hpopipe.errors import HpopipeError
from hpopipe.outputs import restore_command
from hpopipe.redact import mask_url

EXIT_USER_ERROR = 2
_SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish"}
_as_script = False  # run() started a stage run as a script (see late_imports)
log = logging.getLogger(__name__)


class _MaskingFormatter(logging.Formatter):
    """Never let a storage password reach a log line."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


def setup_logging(quiet_optuna_now: bool = True) -> None:
    """Plain timestamped lines; level from HPOPIPE_LOG_LEVEL (default INFO).

    ``quiet_optuna_now`` False leaves Optuna's logging to :func:`late_imports` (importing Optuna
    takes a quarter of a second, which the hpo stage spends after starting its workers).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("HPOPIPE_LOG_LEVEL", "INFO").upper())
    if quiet_optuna_now:
        quiet_optuna()


def quiet_optuna() -> None:
    """Optuna logs warnings only: hpopipe logs each trial itself (hooks.TrialLogger), and Optuna's
    own lines would repeat them. Optuna resets its logger's level when first imported, so this
    imports it and sets the level through it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _parent_of(pid: int) -> int:
    """The parent pid from /proc (field 4 of stat, after the parenthesised command name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def launcher_pid() -> int:
    """The process that started this one, looking through ``sh -c`` wrappers.

    DVC runs a stage's ``cmd`` through ``$SHELL -c``; bash execs the command but
    dash does not, so the parent may be a shell that outlives a killed ``dvc``.
    """
    pid = os.getppid()
    try:
        while pid > 1 and Path(f"/proc/{pid}/comm").read_text().strip() in _SHELLS:
            pid = _parent_of(pid)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (not Linux) or the process is gone: watch what we have
    return pid


def _wait_for_exit(pid: int) -> None:
    """Block until ``pid`` exits: a pidfd where Linux has one (no pid-reuse race), else polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass
            time.sleep(1.0)
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def watch_launcher(pid: int | None = None) -> threading.Thread:
    """Stop this process as if by SIGTERM once ``pid`` (default: :func:`launcher_pid`) exits.

    DVC does not forward SIGTERM to its stage: a ``dvc repro`` that is
    terminated would leave the stage training as an orphan whose result no
    one records. The signal goes to this process, so a stage with a graceful
    stop (hpo) checkpoints, fails its trial as interrupted and writes its
    exports; any other stage simply ends.
    """
    target = launcher_pid() if pid is None else pid

    def watch() -> None:
        _wait_for_exit(target)
        log.warning("the process that launched this stage (pid %d) exited: stopping", target)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="hpopipe-launcher-watch", daemon=True)
    thread.start()
    return thread


def import_without_collection() -> None:
    """Under ``python -m <package>.<entry point>``: no cyclic garbage collection while it imports.

    Called by the packages whose modules are run so (``stages``, ``hpopipe.sweep``: the stages
    and the local worker). Their imports (torch, pandas, MLflow) make hundreds of thousands of
    objects that live to the end, which the collector would scan again and again: about a
    sixth of a stage's import CPU, measured. :func:`run` freezes what the imports made and turns
    the collector back on. ``sys.argv[0]`` is ``-m`` only while ``python -m`` imports the
    entry point's packages, so importing them any other way (tests, the CLI) changes nothing.
    """
    if sys.argv[:1] == ["-m"]:
        gc.disable()


def run(main: Callable[[], object], imports_late: bool = False) -> None:
    """Call ``main``; print an HpopipeError as one line and exit 2, without a traceback.

    ``imports_late``: ``main`` does its heavy imports itself, in :func:`late_imports`.

    Under DVC (``DVC_STAGE`` is set) the stage also stops when ``dvc`` dies.
    A stage started by hand is left alone: ``nohup`` must keep meaning nohup.

    A stage run as a script (``python -m stages.<name>``: ``main`` lives in ``__main__``) that
    returns normally ends by :func:`finish`, skipping the interpreter's teardown; a caller that
    imports the stage and calls this (tests, a zygote) gets an ordinary return.
    """
    setup_logging(quiet_optuna_now=not imports_late)
    if os.environ.get("DVC_STAGE"):
        watch_launcher()
    global _as_script
    as_script = _as_script = getattr(main, "__module__", None) == "__main__"
    if as_script:  # imports are done: what they made lives to the end, the collector need not scan it
        gc.freeze()
        gc.enable()  # off while it imported (import_without_collection)
    try:
        main()
    except HpopipeError as err:
        _refuse(str(err))
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A write the library did not map to DiskFull (it names its file where it can).
        _refuse(f"{err.filename or 'a write'}: no space left on device (free some space and run again)")
    if as_script:
        finish()


@contextmanager
def late_imports() -> Iterator[None]:
    """Imports a stage makes once :func:`run` has started it, treated as its imports at start are:
    no garbage collection while they run, and what they made frozen after.

    The hpo stage starts its local workers first and imports the sweep (torch, MLflow, Optuna)
    only then; Optuna's logging is set once it is imported (:func:`quiet_optuna`). Outside a
    stage run as a script (tests, a zygote) the collector is left alone.
    """
    if not _as_script:
        yield
    else:
        gc.disable()
        try:
            yield
        finally:
            gc.freeze()
            gc.enable()
    quiet_optuna()


def _refuse(message: str) -> None:
    """The one line of a refused stage or command, and its exit status."""
    print(f"hpopipe: error: {mask_url(message)}{_restore_hint()}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def finish() -> None:
    """End a stage whose outputs are all written: the exit's work without the interpreter's teardown.

    Does what Python's own exit does that anyone can observe, in its order: wait for non-daemon
    threads, run the ``atexit`` handlers (MLflow's end the active run and drain its asynchronous
    logging queue; ``logging.shutdown`` flushes every handler), flush stdout and stderr. What is
    skipped is freeing every module and object one by one, seconds for a process that has loaded
    torch, MLflow and pandas. Exit status 0, or 120 where stdout cannot be flushed, as Python's.
    """
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    code = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = 120
    os._exit(code)


def _restore_hint() -> str:
    """Under DVC: how to get back the outputs DVC deleted before this stage refused to run."""
    stage = os.environ.get("DVC_STAGE")
    command = restore_command(stage) if stage else None
    if command is None:
        return ""
    return f" (DVC deleted the previous outputs of {stage} before it ran; `{command}` brings them back)"
