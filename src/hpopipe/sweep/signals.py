"""Graceful stop on SIGINT/SIGTERM: finish the epoch, checkpoint, then leave."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger("hpopipe.sweep.recovery")  # log lines keep the name they had before the split


class GracefulStop:
    """Turns SIGINT/SIGTERM into a request the training loop honours after its epoch.

    The running trial saves its checkpoint, is failed as interrupted with a
    retry queued, and the stage writes its exports before exiting 128+signum.
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: stopping after the current epoch", signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """Install the handlers for the duration of the block."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        """Shell convention for death by signal; 0 when no signal came."""
        return 128 + self.signum if self.signum is not None else 0
