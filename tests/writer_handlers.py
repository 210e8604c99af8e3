"""Handlers for hpopipe.background.InProcess in tests: made in the child process from plain data."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


class Appender:
    """Appends ``pid command`` to the file named by ``setup``; ``("fail", why)`` raises instead,
    ``("sleep", seconds)`` sleeps."""

    def __init__(self, setup: str | None) -> None:
        if setup is None:
            raise ValueError("no file to append to")
        self.path = Path(setup)

    def __call__(self, command: tuple[Any, ...]) -> None:
        if command[0] == "fail":
            raise RuntimeError(command[1])
        if command[0] == "sleep":
            time.sleep(command[1])
        with self.path.open("a", encoding="utf-8") as out:
            out.write(f"{os.getpid()} {' '.join(map(str, command))}\n")
