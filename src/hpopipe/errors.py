"""Every exception hpopipe raises on purpose: the user-error root and the few internal signals.

``HpopipeError`` and its subclasses are errors a user can cause and fix (printed as one line,
exit 2). The others travel inside the library: a trial that diverged or was interrupted, a
checkpoint that cannot be trusted.
"""

from __future__ import annotations


class HpopipeError(Exception):
    """A user error: bad params, bad data, a missing file.

    The CLI prints it as one line (no traceback) and exits with status 2, so
    the message must name the field or file and say what is wrong with it.
    """


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial fails with this reason."""


class TrainingInterrupted(RuntimeError):
    """A stop was requested (SIGINT/SIGTERM); raised after the epoch's checkpoint is saved.

    Saved whatever ``train.checkpoint_every_s``: the retry goes on from the epoch the stop ended.
    """

    def __init__(self, epoch: int) -> None:
        super().__init__(f"interrupted by a stop request after epoch {epoch}")
        self.epoch = epoch


class TaskFailed(RuntimeError):
    """A task of a local process pool raised, or its process died; the caller names the task."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"task {index}: {reason}")
        self.index, self.reason = index, reason


class BackgroundFailed(RuntimeError):
    """Work sent to a background process failed there, or the process died (raised by its drain)."""


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, or holds more than tensors and plain values."""


class StageError(HpopipeError):
    """A stage DVC could not reproduce.

    ``retryable`` is False where a retry would fail the same way (a user error in the stage, a
    timeout), so Prefect does not spend hours re-running a sweep that cannot succeed.
    """

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self) -> tuple[type[StageError], tuple[str, bool]]:
        # Prefect pickles task exceptions; keep `retryable` across the round trip.
        return (type(self), (str(self), self.retryable))


class GateFailed(HpopipeError):
    """The new model is worse than the committed one by more than the allowed regression."""


class WorkerFailed(HpopipeError):
    """``hpopipe worker`` exited with a non-zero status; the flow run that ran it fails."""


class SweepStopped(HpopipeError):
    """External training code asked a sweep for a trial while it is paused, canceled or failed.

    ``state`` is the sweep's lifecycle state (``paused``, ``canceled`` or ``failed``);
    ``hpopipe sweep resume`` brings a paused or canceled sweep back.
    """

    def __init__(self, study: str, state: str, reason: str = "") -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(f"sweep {study} is {state}{why}")
        self.study, self.state, self.reason = study, state, reason

    def __reduce__(self) -> tuple[type[SweepStopped], tuple[str, str, str]]:
        return (type(self), (self.study, self.state, self.reason))


class StorageUnavailable(HpopipeError):
    """The study's database stayed unreachable longer than ``hpo.storage_retry_s``."""


class StorageReconnected(RuntimeError):
    """The database went away inside a budget-lock section: the lock went with it, so the section
    starts over under a fresh lock (what it counted may be stale). Caught by the lock's caller."""


class DiskFull(HpopipeError):
    """A write found no space left on the device: one line naming the path."""


def one_line(err: BaseException) -> str:
    """An exception as one line, ``Type: message`` with its whitespace collapsed: what a worker or a
    writer process sends back for its caller to report."""
    return " ".join(f"{type(err).__name__}: {err}".split())
