"""The pipeline's stages as ``dvc.yaml`` lists them, and one stage run through DVC.

DVC stays the judge of what is stale: every stage runs as ``dvc repro --single-item <stage>``,
and a stage that DVC skips is reported as cached. Nothing here calls the library behind DVC's
back, so ``dvc.lock`` always describes what is on disk.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from hpopipe.errors import HpopipeError, StageError
from hpopipe.retrain.commands import AnyLogger, dvc, git, run_streaming

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- the stages, in pipeline order


def pipeline_stages(root: Path) -> list[str]:
    """The stages of ``dvc.yaml`` in file order, checked to be an order in which they can run.

    Each task runs one stage with ``dvc repro --single-item``, which does not look upstream; a
    stage listed before the one producing its input would silently run on stale input, so that
    order is an error here.
    """
    stages = _read_stages(root / "dvc.yaml")
    producer = {path: name for name, spec in stages.items() for path in _outputs(spec)}
    order = list(stages)
    for position, (name, spec) in enumerate(stages.items()):
        for dep in _paths(spec.get("deps")):
            source = producer.get(dep)
            if source is not None and order.index(source) > position:
                raise HpopipeError(
                    f"dvc.yaml: stage '{name}' is listed before '{source}', which produces its "
                    f"dependency {dep}"
                )
    return order


def _read_stages(path: Path) -> dict[str, dict[str, Any]]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HpopipeError(f"{path}: not found (is this a DVC project?)") from None
    except yaml.YAMLError:
        raise HpopipeError(f"{path}: not valid YAML") from None
    stages = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(stages, dict) or not stages:
        raise HpopipeError(f"{path}: no stages")
    for name, spec in stages.items():
        if not isinstance(spec, dict) or "cmd" not in spec:
            raise HpopipeError(f"{path}: stage '{name}' has no cmd (foreach/matrix stages are not supported)")
    return stages


def _paths(entries: Any) -> list[str]:
    """Paths of a deps/outs/metrics list, whose items are ``path`` or ``{path: options}``."""
    paths: list[str] = []
    for entry in entries or []:
        paths.extend([entry] if isinstance(entry, str) else list(entry))
    return [os.path.normpath(p) for p in paths]


def _outputs(spec: Mapping[str, Any]) -> list[str]:
    return [p for key in ("outs", "metrics", "plots") for p in _paths(spec.get(key))]


def git_tracked_outputs(root: Path) -> list[str]:
    """Outputs DVC leaves to git (``cache: false``) and git does not ignore: what a retrain commits.

    That is the metrics files and plot data; a ``cache: false`` output that ``.gitignore``
    excludes (the study database: state, not a versioned artifact) stays out of the commit.
    """
    paths: list[str] = []
    for spec in _read_stages(root / "dvc.yaml").values():
        for key in ("outs", "metrics", "plots"):
            for entry in spec.get(key) or []:
                if isinstance(entry, dict):
                    paths.extend(p for p, opts in entry.items() if (opts or {}).get("cache") is False)
    ignored = (
        set(git(root, "check-ignore", "--", *paths, check=False).stdout.splitlines()) if paths else set()
    )
    return [p for p in paths if p not in ignored]


# ---------------------------------------------------------------- one stage through DVC


@dataclass(frozen=True)
class StageOutcome:
    """What DVC did with one stage: ran it, or skipped it as cached."""

    stage: str
    status: Literal["ran", "cached"]
    seconds: float
    detail: str


def run_stage(
    root: Path, stage: str, *, timeout_s: float | None = None, logger: AnyLogger = log
) -> StageOutcome:
    """Run one stage as ``dvc repro --single-item <stage>``; DVC decides whether it is stale.

    Upstream stages are not looked at (the caller runs them first, in pipeline order), so each
    task's outcome is about its own stage. On a timeout, or when the caller is interrupted, the
    whole process tree (DVC and the stage under it) is stopped.
    """
    started = time.monotonic()
    lines, code = run_streaming(dvc("repro", "--single-item", stage), root, stage, logger, timeout_s)
    if code is None:
        raise StageError(f"stage '{stage}': timed out after {timeout_s:g} s and was stopped", retryable=False)
    if code != 0:
        raise stage_failure(stage, code, lines)
    outcome = _classify(stage, lines, time.monotonic() - started)
    logger.info("stage %s: %s (%.1f s)", stage, outcome.detail, outcome.seconds)
    return outcome


def _classify(stage: str, lines: Sequence[str], seconds: float) -> StageOutcome:
    text = "\n".join(lines)
    if f"Running stage '{stage}'" in text:
        return StageOutcome(stage, "ran", seconds, "ran")
    if f"Stage '{stage}' is cached" in text:
        return StageOutcome(stage, "cached", seconds, "cached (restored from DVC's run-cache)")
    return StageOutcome(stage, "cached", seconds, "cached (up to date)")


def stage_failure(stage: str, code: int, lines: Sequence[str]) -> StageError:
    """The most useful line of a failed run: the stage's own one-line error, else DVC's."""
    ours = [line for line in lines if line.startswith("hpopipe: error:")]
    dvcs = [line for line in lines if line.startswith("ERROR:")]
    reason = (ours or dvcs or [f"dvc exited with status {code}"])[-1]
    # A stage exits 2 for a user error (bad params, bad data): retrying cannot fix it.
    user_error = bool(ours) or any("exited with 2" in line for line in dvcs)
    return StageError(f"stage '{stage}': {reason}", retryable=not user_error)
