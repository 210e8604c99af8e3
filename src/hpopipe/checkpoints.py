"""Atomic checkpoint files, safe loading, and the retention policy for trial checkpoints.

Trial checkpoints live in a scratch folder that is never a DVC output, so
deleting them never makes ``dvc repro`` re-run a stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from hpopipe.atomic import temp_path

log = logging.getLogger(__name__)


def params_hash(params: dict[str, Any], seed: int) -> str:
    """Identity of a trial's configuration: its checkpoint file name."""
    blob = json.dumps({"params": params, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trial_checkpoint(root: Path, study_name: str, phash: str) -> Path:
    """Where a trial with this configuration keeps its crash-recovery checkpoint."""
    return root / safe_name(study_name) / f"{phash}.pt"


def safe_name(name: str) -> str:
    """Make a config-derived name safe to use as one path component."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "_"


def save(path: Path, payload: dict[str, Any]) -> None:
    """torch.save is not atomic on its own: write to a temp file, then rename."""
    with temp_path(path) as tmp:
        torch.save(payload, tmp)


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, or holds more than tensors and plain values."""


def load(path: Path) -> dict[str, Any]:
    """Load tensors and plain containers only (never arbitrary pickled objects)."""
    try:
        with warnings.catch_warnings():
            # Said of files that are not torch.save's (e.g. a planted raw pickle), which are refused
            # below anyway: the one-line error is the message, not a warning on top of it.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise CheckpointError(
            str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError("not a checkpoint (expected a mapping)")
    return payload


def try_load(path: Path) -> dict[str, Any] | None:
    """Load a crash-recovery checkpoint, or None with a warning when it is unusable."""
    if not path.exists():
        return None
    try:
        return load(path)
    except CheckpointError as err:
        log.warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return None


def cleanup(folder: Path, keep: set[str]) -> tuple[int, int]:
    """Delete every ``*.pt`` in ``folder`` whose stem is not in ``keep``.

    Returns:
        (files deleted, bytes freed)
    """
    if not folder.is_dir():
        return 0, 0
    deleted = freed = 0
    for path in sorted(folder.glob("*.pt")):
        if path.stem in keep:
            continue
        size = path.stat().st_size
        path.unlink()
        deleted, freed = deleted + 1, freed + size
    return deleted, freed


def cleanup_study(
    root: Path, study_name: str, ranked: list[dict[str, Any]], keep_best: int
) -> dict[str, Any]:
    """Keep the checkpoints of the ``keep_best`` best trials of a study, delete the rest.

    ``ranked`` is the best-first list the sweep exported; each entry names its
    checkpoint. Only the study's scratch folder is touched, never a DVC output.
    """
    keep = {t["checkpoint"] for t in ranked[:keep_best] if t.get("checkpoint")}
    deleted, freed = cleanup(root / safe_name(study_name), keep)
    log.info("cleanup: deleted %d checkpoint(s), freed %d bytes, kept %d", deleted, freed, len(keep))
    return {"study": study_name, "deleted": deleted, "bytes_freed": freed, "kept": len(keep)}
