"""Where a passed retrain goes: ``dvc push`` to the default remote and a commit on a branch.

The pull at the start lives here too: it goes to the same remote, and without a default remote
a retrain neither pulls nor pushes.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from hpopipe.errors import HpopipeError
from hpopipe.retrain.commands import AnyLogger, child_env, dvc, git, run_streaming

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "retrain"


def default_remote(root: Path) -> str | None:
    """The project's default DVC remote, or ``None`` when there is none (then nothing is pulled or pushed)."""
    proc = subprocess.run(
        dvc("remote", "default"), cwd=root, env=child_env(), capture_output=True, text=True, check=False
    )
    name = proc.stdout.strip()
    return name if proc.returncode == 0 and name else None


def dvc_transfer(root: Path, verb: Literal["pull", "push"], logger: AnyLogger = log) -> None:
    """``dvc pull`` / ``dvc push`` of every cached output.

    A pull tolerates files the remote lacks (the first retrain of a project, or a stage that
    never ran), since the stages that follow produce them.
    """
    args = ["pull", "--allow-missing"] if verb == "pull" else ["push"]
    lines, code = run_streaming(dvc(*args), root, verb, logger)
    if code != 0:
        errors = [line for line in lines if line.startswith("ERROR:")] or [f"exit status {code}"]
        raise HpopipeError(f"dvc {verb}: {errors[-1]}")


def commit_results(root: Path, branch: str, message: str, paths: Sequence[str]) -> str | None:
    """Commit ``paths`` (and only them) on ``branch``; the new commit's id, or ``None`` if nothing changed.

    ``git checkout -B`` moves the branch to the current commit first, so the result is always
    "this checkout plus one retrain commit", the shape a CI job pushes for review.
    """
    present = [p for p in paths if (root / p).exists()]
    git(root, "add", "--", *present)
    if git(root, "diff", "--cached", "--quiet", "--", *present, check=False).returncode == 0:
        return None
    git(root, "checkout", "-q", "-B", branch)
    git(root, "commit", "-q", "-m", message, "--", *present)
    return git(root, "rev-parse", "HEAD").stdout.strip()
