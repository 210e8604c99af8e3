"""Atomic checkpoint files, safe loading, and the retention policy for trial checkpoints.

Trial checkpoints live in a scratch folder that is never a DVC output, so
deleting them never makes ``dvc repro`` re-run a stage. Each save keeps the
previous checkpoint beside the new one (``<hash>.prev.pt``): a kill between
writing and renaming, or a file the disk truncated, costs one save's worth of training
(``train.checkpoint_every_s``), not the trial.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpopipe import workspace
from hpopipe.atomic import temp_path
from hpopipe.errors import CheckpointError, HpopipeError

log = logging.getLogger(__name__)


def params_hash(params: dict[str, Any], seed: int) -> str:
    """Identity of a trial's configuration: its checkpoint file name."""
    blob = json.dumps({"params": params, "seed": seed}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trial_checkpoint(root: Path, study_name: str, phash: str) -> Path:
    """Where a trial with this configuration keeps its crash-recovery checkpoint.

    ``root`` (``hpo.checkpoint_dir``) is the workspace's, also in a DVC experiment copy: a
    retry must find the checkpoint whichever experiment runs it (see :mod:`hpopipe.workspace`).
    """
    return workspace.state_path(root) / safe_name(study_name) / f"{phash}.pt"


def safe_name(name: str) -> str:
    """Make a config-derived name safe to use as one path component."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned or "_"


def previous(path: Path) -> Path:
    """Where the checkpoint before ``path``'s current one is kept: ``x.pt`` -> ``x.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(path: Path, payload: dict[str, Any], keep_previous: bool = False) -> None:
    """torch.save is not atomic on its own: write to a temp file, then rename.

    With ``keep_previous`` (trial checkpoints) the current file is first renamed to
    :func:`previous`, so at every instant one complete checkpoint exists:
    the new one, or (killed between the two renames) the previous one.
    """
    import torch  # here, not at the top: the cleanup stage deletes checkpoints without loading torch

    with temp_path(path) as tmp:
        torch.save(payload, tmp)
        if keep_previous and path.exists():
            os.replace(path, previous(path))


def load(path: Path) -> dict[str, Any]:
    """Load tensors and plain containers only (never arbitrary pickled objects)."""
    import torch

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


def load_resumable(path: Path, phash: str) -> dict[str, Any] | None:
    """The newest usable checkpoint of the configuration ``phash``, or None to start over.

    The latest file is tried first, then the previous one; a file that is
    unreadable, or that belongs to another configuration (it would resume the
    wrong model), is refused with a warning that names it.
    """
    for candidate in (path, previous(path)):
        if not candidate.exists():
            continue
        try:
            ckpt = load(candidate)
        except CheckpointError as err:
            log.warning("checkpoint %s is unreadable (%s): not resuming from it", candidate, err)
            continue
        if ckpt.get("params_hash") != phash:
            log.warning(
                "refusing checkpoint %s: it was written for params hash %s, this trial's is %s",
                candidate,
                ckpt.get("params_hash"),
                phash,
            )
            continue
        if candidate != path:
            log.warning("resuming from the previous checkpoint %s (epoch %s)", candidate, ckpt.get("epoch"))
        return ckpt
    return None


def owner(name: str) -> str | None:
    """The params hash a scratch file belongs to: ``h.pt``, ``h.prev.pt`` and save's ``.h.pt.*.tmp``."""
    if name.startswith(".") and name.endswith(".tmp"):
        return name[1:].split(".", 1)[0]
    if name.endswith(".prev.pt"):
        return name.removesuffix(".prev.pt")
    if name.endswith(".pt"):
        return name.removesuffix(".pt")
    return None


def cleanup(folder: Path, keep: set[str]) -> tuple[int, int]:
    """Delete the checkpoint files in ``folder`` of every params hash not in ``keep``.

    A trial's files are its checkpoint, the previous one and temp files a kill
    left behind. Symbolic links are never followed or deleted: what they point
    at may live anywhere.

    Returns:
        (files deleted, bytes freed)
    """
    return _delete_files(folder, lambda key: key not in keep)


def discard(folder: Path, hashes: set[str]) -> tuple[int, int]:
    """Delete the checkpoint files in ``folder`` of exactly the params hashes in ``hashes``.

    The sweep's scratch bound (:mod:`hpopipe.sweep.scratch`) names what may go rather than
    what stays: a file of a trial that started after it looked at the study is not its to judge.

    Returns:
        (files deleted, bytes freed)
    """
    return _delete_files(folder, lambda key: key in hashes)


def _delete_files(folder: Path, doomed: Callable[[str], bool]) -> tuple[int, int]:
    if not folder.is_dir():
        return 0, 0
    deleted = freed = 0
    for path in sorted(folder.iterdir()):
        key = owner(path.name)
        if key is None or not doomed(key):
            continue
        if path.is_symlink() or not path.is_file():
            log.warning("cleanup: leaving %s alone (not a regular file)", path)
            continue
        try:  # another worker of the sweep may have deleted it a moment ago
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        deleted, freed = deleted + 1, freed + size
    return deleted, freed


def study_folder(root: Path, study_name: str) -> Path:
    """A study's scratch folder, refused when it is a symlink or resolves outside ``root``.

    Cleanup deletes files in it; a link planted there (or a root moved by
    a symlinked study folder) must never turn that into deleting elsewhere. ``root`` is the
    workspace's, as in :func:`trial_checkpoint`.
    """
    root = workspace.state_path(root)
    folder = root / safe_name(study_name)
    if folder.is_symlink():
        raise HpopipeError(f"hpo.checkpoint_dir: {folder} is a symbolic link; refusing to delete in it")
    if not folder.resolve().is_relative_to(root.resolve()):
        raise HpopipeError(f"hpo.checkpoint_dir: {folder} resolves outside {root}; refusing to delete in it")
    return folder


def cleanup_study(
    root: Path, study_name: str, ranked: list[dict[str, Any]], keep_best: int
) -> dict[str, Any]:
    """Keep the checkpoints of the ``keep_best`` best trials of a study, delete the rest.

    ``ranked`` is the best-first list the sweep exported; each entry names its
    checkpoint. Only the study's scratch folder is touched, never a DVC output.
    """
    keep = {t["checkpoint"] for t in ranked[:keep_best] if t.get("checkpoint")}
    deleted, freed = cleanup(study_folder(root, study_name), keep)
    log.info("cleanup: deleted %d checkpoint(s), freed %d bytes, kept %d", deleted, freed, len(keep))
    return {"study": study_name, "deleted": deleted, "bytes_freed": freed, "kept": len(keep)}
