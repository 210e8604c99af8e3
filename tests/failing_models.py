"""User model factories that misbehave on purpose, for the sweep's failure handling."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpopipe.training.models import build_mlp


def flaky(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Refuses one of the tuned widths, so some trials fail and others complete."""
    if int(params["width"]) == 32:
        raise ValueError("width 32 is not allowed")
    return build_mlp(params, n_features, n_outputs)


def broken(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Fails on every trial."""
    raise RuntimeError("always broken")


class _NanModel(nn.Module):
    def __init__(self, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("nan")


def nan_output(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Trains to a NaN loss on the first batch."""
    return _NanModel(n_features, n_outputs)


class _Slow(nn.Module):
    def __init__(self, inner: nn.Module, delay: float) -> None:
        super().__init__()
        self.inner, self.delay = inner, delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.inner(x)


def slow(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """An MLP that sleeps in every forward pass, so a test can kill it mid-trial."""
    return _Slow(
        build_mlp(params, n_features, n_outputs), float(os.environ.get("HPOPIPE_TEST_DELAY", "0.02"))
    )


def fails_while_flagged(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Fails for wide layers while the file named by HPOPIPE_TEST_FLAG exists."""
    flag = os.environ.get("HPOPIPE_TEST_FLAG", "")
    if flag and os.path.exists(flag) and int(params["width"]) == 32:
        raise RuntimeError("flagged failure")
    return build_mlp(params, n_features, n_outputs)


def slow_flaky(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Slow (so a kill lands mid-trial) and refusing width 32 (so some trials fail)."""
    if int(params["width"]) == 32:
        raise ValueError("width 32 is not allowed")
    return slow(params, n_features, n_outputs)


class _FailsAfterAnEpoch(nn.Module):
    """Trains one epoch (so its checkpoint is written), then raises in the next one."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.validated = inner, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.validated = True
        elif self.validated:
            raise RuntimeError("fails in its second epoch")
        return self.inner(x)


def fails_late_when_wide(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Width 32 fails in its second epoch, after a checkpoint; other widths train as usual."""
    model = build_mlp(params, n_features, n_outputs)
    return _FailsAfterAnEpoch(model) if int(params["width"]) == 32 else model


def dies_when_wide(params: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """Width 32 kills its own process (a crash no exception handler sees) in a spawned pool
    process; other widths train. In the stage's own process (the pool's thread there, which would
    kill the test with it) width 32 waits instead, so that the pool process takes the other wide
    fold and dies (then, a minute later, it fails)."""
    if int(params["width"]) == 32:
        if multiprocessing.parent_process() is None:
            time.sleep(60)
            raise RuntimeError("width 32 waited for a pool process to die")
        os.kill(os.getpid(), signal.SIGKILL)
    return build_mlp(params, n_features, n_outputs)


def nap(shared: object, seconds: float) -> float:
    """A pool task that only sleeps (tests of hpopipe.process_pool)."""
    time.sleep(seconds)
    return seconds


def leaves_a_mark(folder: str, task: int) -> int:
    """A pool task that leaves a file named after its number (so a test sees which ran) and fails
    when the number is negative (tests of hpopipe.process_pool)."""
    (Path(folder) / str(task)).touch()
    if task < 0:
        raise ValueError(f"task {task} fails")
    return task * task


def pid_once_marked(folder: str, task: int) -> int:
    """A pool task that returns its process's id. Task 0 first waits (five minutes at most) until
    task 1 has left its mark, so the two must run in different workers at the same time."""
    mark = Path(folder) / "1"
    if task == 1:
        mark.touch()
    deadline = time.monotonic() + 300
    while task == 0 and not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()


def never_ready() -> None:
    """A pool process ``setup`` that takes ten minutes: a process that is still importing."""
    time.sleep(600)


def exits_in(pid: int, task: int) -> int:
    """A pool task that raises SystemExit (not an Exception) in the process ``pid``."""
    if os.getpid() == pid:
        raise SystemExit(f"task {task} exits")
    return task
