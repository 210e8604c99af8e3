"""What DVC deletes before a stage runs, and the one command that brings it back.

DVC removes a stage's outputs before it runs the stage's command, so a stage that then
refuses (a typo in params.yaml, an unset ``env:`` storage) leaves them gone. The cached
ones are still in DVC's cache (``dvc checkout STAGE``); the uncached ones (the metrics and
plots committed to git) are in git. The refusal names the command, so nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def stage_outputs(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> tuple[list[str], list[str]]:
    """(in DVC's cache, in git) output paths of ``stage``; both empty when dvc.yaml cannot say."""
    try:
        spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"][stage]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return [], []
    cached: list[str] = []
    in_git: list[str] = []
    for key in ("outs", "metrics", "plots"):
        for entry in spec.get(key) or []:
            path, options = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            (in_git if (options or {}).get("cache") is False else cached).append(path)
    return cached, in_git


def restore_command(stage: str, dvc_yaml: Path = Path("dvc.yaml")) -> str | None:
    """The shell line that brings back the outputs DVC deleted before ``stage`` ran."""
    cached, in_git = stage_outputs(stage, dvc_yaml)
    parts = ([f"git checkout HEAD -- {' '.join(in_git)}"] if in_git else []) + (
        [f"dvc checkout {stage}"] if cached else []
    )
    return " && ".join(parts) or None
