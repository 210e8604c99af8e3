"""What DVC deletes before a stage runs, and the one command that brings it back.

DVC removes a stage's outputs before it runs the stage's command, so a stage that then
refuses (a typo in params.yaml, an unset ``env:`` storage) leaves them gone. The cached
ones are still in DVC's cache (``dvc checkout STAGE``); the uncached ones (the metrics and
plots committed to git) are in git. The refusal names the command, so nothing is lost.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from hpopipe.errors import HpopipeError


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


# What the pipeline owns besides the stages' declared outputs: its inputs, its state, its records.
OWNED = (
    "artifacts",
    "models",
    "metrics",
    "data",
    "plots",
    "reports",
    ".dvc",
    ".git",
    ".hpopipe",
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    "mlflow.db",
    "mlruns",
)


def owned_paths(dvc_yaml: Path = Path("dvc.yaml")) -> list[Path]:
    """Every path a user-chosen output must not overwrite: OWNED, and every stage output dvc.yaml declares."""
    paths = [Path(p) for p in OWNED]
    try:
        stages = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return paths
    for stage in stages:
        cached, in_git = stage_outputs(stage, dvc_yaml)
        paths += [Path(p) for p in cached + in_git]
    return paths


def refuse_owned_output(output: Path, flag: str, also: tuple[Path, ...] = ()) -> None:
    """Refuse an output path inside anything the pipeline owns, or equal to one of ``also``.

    ``hpopipe predict --output artifacts/hpo/study.db`` would overwrite the study with a CSV,
    and the study is no DVC output: nothing could bring it back.
    """
    target = output.resolve()
    for owned in [*owned_paths(), *also]:
        place = owned.resolve()
        if target == place or place in target.parents:
            raise HpopipeError(
                f"{flag}: {output} lies in {owned}, which the pipeline owns or this command reads: "
                "write the predictions elsewhere"
            )
