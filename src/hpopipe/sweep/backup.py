"""Backups of a study: consistent SQLite copies, their restore, and free backup names in a storage.

A sweep is hours of compute; a bad disk or a mistaken ``resume`` must never lose it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import optuna

from hpopipe.atomic import temp_path
from hpopipe.errors import HpopipeError

log = logging.getLogger("hpopipe.sweep.recovery")  # log lines keep the name they had before the split


def backup_sqlite(source: Path, target_dir: Path) -> Path | None:
    """Copy a live SQLite study consistently (online backup API) into ``target_dir``.

    A failed backup is a warning, never a failed trial: returns None.
    """
    target = target_dir / source.name
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with temp_path(target) as tmp:
            _sqlite_copy(source, tmp)
    except (OSError, sqlite3.Error) as err:
        log.warning("backup of %s to %s failed: %s", source, target_dir, err)
        return None
    return target


def _sqlite_copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


def restore_sqlite(backup_dir: Path, target: Path) -> Path | None:
    """Bring a backed-up study file back; the current one is kept beside it first."""
    source = backup_dir / target.name
    if not source.is_file():
        raise HpopipeError(f"--from: {backup_dir}: no {target.name} in it")
    try:
        _sqlite_copy(source, backup_dir / f".{target.name}.check")  # refuses a corrupt file
    except sqlite3.Error as err:
        raise HpopipeError(f"--from: {source}: not a readable SQLite study ({err})") from None
    finally:
        (backup_dir / f".{target.name}.check").unlink(missing_ok=True)
    kept = None
    if target.exists():
        kept = target.with_name(f"{target.name}.before-restore")
        shutil.copy2(target, kept)
    target.parent.mkdir(parents=True, exist_ok=True)
    with temp_path(target) as tmp:
        _sqlite_copy(source, tmp)
    return kept


def backup_name(study_name: str, storage: str | optuna.storages.BaseStorage) -> str:
    """The next free ``<name>_backup-<n>`` in a storage."""
    existing = set(optuna.study.get_all_study_names(storage))
    n = 0
    while f"{study_name}_backup-{n}" in existing:
        n += 1
    return f"{study_name}_backup-{n}"
