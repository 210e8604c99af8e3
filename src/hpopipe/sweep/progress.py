"""The sweep's progress line (a redrawn bar on a terminal, one log line per trial elsewhere).

Imported by the sweep, so everything here is a dependency of the hpo stage: it
imports nothing of the pipeline but the budget rule.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial

from hpopipe.sweep.budget import budget_met, finished_in

log = logging.getLogger(__name__)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    if len(study.directions) > 1:  # no single best: the Pareto front (front_size) instead
        return None
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m 05s``, ``2h 07m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class ProgressReporter:
    """Optuna callback that shows a sweep's progress after every finished trial.

    On a terminal it redraws one line: a bar of finished / ``n_trials`` trials,
    the best value and the ETA. Anywhere else (CI logs, files, Prefect) carriage
    returns would be noise, so it logs one plain line per trial instead.

    The bar shares the terminal with log lines. Register :meth:`clear` as the
    first callback and the reporter itself as the last: the bar is erased
    before the other callbacks log about the trial and drawn again below them.
    The drawn line ends with a carriage return, so a line logged during the
    next trial starts over the bar instead of after it.
    """

    BAR = 24

    def __init__(
        self, n_trials: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.n_trials = n_trials
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._clock, self._started, self._calls = clock, clock(), 0
        self._drawn = False
        self._lock = threading.Lock()  # callbacks come from worker threads with n_jobs > 1

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Report one finished trial (Optuna calls this after each trial, whatever its state)."""
        with self._lock:
            self._calls += 1
            done = finished_in(study)
            best = best_trial(study)
            best_value = None if best is None else best.value
            eta = self.eta_s(done)
            if self.tty:
                self._draw(done, best_value, eta)
                return
            log.info(
                "after trial %d: %d/%d finished, best %s, ETA %s",
                trial.number,
                done,
                self.n_trials,
                format_value(best_value),
                format_duration(eta),
            )

    def eta_s(self, done: int) -> float | None:
        """Remaining budget times the mean wall time per trial seen by this reporter."""
        if not self._calls:
            return None
        per_trial = (self._clock() - self._started) / self._calls
        return max(self.n_trials - done, 0) * per_trial

    def line(self, done: int, best: float | None, eta: float | None) -> str:
        """The progress line, e.g. ``[######------------------] 6/24 trials  best 0.9731  ETA 3m 10s``."""
        filled = min(self.BAR, self.BAR * done // max(self.n_trials, 1))
        bar = "#" * filled + "-" * (self.BAR - filled)
        return f"[{bar}] {done}/{self.n_trials} trials  best {format_value(best)}  ETA {format_duration(eta)}"

    def _draw(self, done: int, best: float | None, eta: float | None) -> None:
        self.stream.write(_ERASE + self.line(done, best, eta) + "\r")
        self._drawn = True
        if budget_met(done, self.n_trials):
            self.close()
        self.stream.flush()

    def clear(self, study: optuna.Study | None = None, trial: FrozenTrial | None = None) -> None:
        """Erase the bar so the next line starts clean (usable as an Optuna callback)."""
        with self._lock:
            if self._drawn:
                self.stream.write(_ERASE)
                self.stream.flush()
                self._drawn = False

    def close(self) -> None:
        """Leave the last bar on screen and move below it; call when the sweep ends, also early."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


_ERASE = "\r\x1b[2K"  # carriage return, then erase the whole line
