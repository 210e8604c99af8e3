"""Backups of a study file: consistent copies of a live SQLite file or journal, their restore, and
free backup names in a storage.

A sweep is hours of compute; a bad disk or a mistaken ``resume`` must never lose it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import optuna

from hpopipe.artifacts import sqlite_url
from hpopipe.atomic import temp_path
from hpopipe.errors import HpopipeError
from hpopipe.sweep import journal_file
from hpopipe.sweep.lifecycle import refuse_while_running

log = logging.getLogger("hpopipe.sweep.recovery")  # log lines keep the name they had before the split


def backup_study(source: Path, target_dir: Path) -> Path | None:
    """Copy a live study file consistently into ``target_dir``: SQLite through its online backup
    API, a journal up to its last whole line (a state Optuna replays).

    A failed backup is a warning, never a failed trial: returns None.
    """
    target = target_dir / source.name
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        with temp_path(target) as tmp:
            if journal_file.is_journal(source):
                journal_file.copy_complete_lines(source, tmp)
            else:
                _sqlite_copy(source, tmp)
    except (OSError, sqlite3.Error) as err:
        log.warning("backup of %s to %s failed: %s", source, target_dir, err)
        return None
    return target


def _sqlite_copy(source: Path, target: Path, read_only: bool = True) -> None:
    """Copy through SQLite's online backup API: what sits in the source's WAL is included, and a
    live target is written through its own connection (its WAL stays consistent)."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True) if read_only else sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


def check_integrity(path: Path, field: str) -> None:
    """A one-line error unless ``path`` is a readable SQLite file that passes ``integrity_check``."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise HpopipeError(f"{field}: {path}: not a readable SQLite study ({err})") from None
    if result is None or result[0] != "ok":
        raise HpopipeError(
            f"{field}: {path}: fails SQLite's integrity check ({result[0] if result else '?'})"
        )


def restore_study(backup_dir: Path, target: Path, grace_s: float = 60.0) -> Path | None:
    """Bring a backed-up study file (SQLite or journal) back; see :func:`restore_sqlite`."""
    if journal_file.is_journal(target):
        return restore_journal(backup_dir, target, grace_s)
    return restore_sqlite(backup_dir, target, grace_s)


def restore_journal(backup_dir: Path, target: Path, grace_s: float = 60.0) -> Path | None:
    """Bring a backed-up journal back; the current one's whole lines are kept beside it first.

    Refused while a worker runs a sweep in ``target``; the backup must be a journal Optuna can
    replay. The restored file replaces the current one in one rename.
    """
    source = backup_dir / target.name
    if not source.is_file():
        raise HpopipeError(f"--from: {backup_dir}: no {target.name} in it")
    problem = journal_file.unreadable_line(source)
    if problem is not None:
        raise HpopipeError(f"--from: {source}: not a readable study journal ({problem})")
    kept = None
    if target.exists():
        kept = target.with_name(f"{target.name}.before-restore")
        if journal_file.unreadable_line(target) is None:
            _refuse_while_running(target, grace_s)
        with temp_path(kept) as tmp:
            shutil.copyfile(target, tmp)  # every byte as it is, a damaged line too
    target.parent.mkdir(parents=True, exist_ok=True)
    with temp_path(target) as tmp:
        journal_file.copy_complete_lines(source, tmp)
    return kept


def restore_sqlite(backup_dir: Path, target: Path, grace_s: float = 60.0) -> Path | None:
    """Bring a backed-up study file back; a complete copy of the current one is kept beside it first.

    Refused while a worker runs a sweep in ``target``. Both copies go through SQLite's backup
    API, so the current file's WAL (always there after a killed sweep) is neither left out of
    the kept copy nor replayed over the restored one; the result must pass an integrity check.
    """
    source = backup_dir / target.name
    if not source.is_file():
        raise HpopipeError(f"--from: {backup_dir}: no {target.name} in it")
    check_integrity(source, "--from")
    kept = None
    if target.exists():
        kept = target.with_name(f"{target.name}.before-restore")
        if _readable(target):
            _refuse_while_running(target, grace_s)
            with temp_path(kept) as tmp:
                _sqlite_copy(target, tmp, read_only=False)
        else:  # the disk ate it: keep its bytes as they are, and start the file over
            shutil.copy2(target, kept)
            for path in (target, *_sidecars(target)):
                path.unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sqlite_copy(source, target)
    check_integrity(target, "--storage")
    return kept


def _readable(path: Path) -> bool:
    try:
        check_integrity(path, "--storage")
    except HpopipeError:
        return False
    return True


def _sidecars(path: Path) -> tuple[Path, Path]:
    """SQLite's write-ahead log and shared-memory index beside a database file."""
    return path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")


def _refuse_while_running(path: Path, grace_s: float) -> None:
    if journal_file.is_journal(path):
        _refuse_in(journal_file.open_journal(path), grace_s)
        return
    storage = optuna.storages.RDBStorage(sqlite_url(path))
    try:
        _refuse_in(storage, grace_s)
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _refuse_in(storage: optuna.storages.BaseStorage, grace_s: float) -> None:
    for name in optuna.study.get_all_study_names(storage):
        refuse_while_running(optuna.load_study(study_name=name, storage=storage), grace_s, "hpopipe restore")


BACKUP_MARK = "_backup-"


def is_backup(study_name: str) -> bool:
    """A copy made by ``hpo.fresh`` or ``hpopipe resume``: not a study of its own."""
    return BACKUP_MARK in study_name


def backup_name(study_name: str, storage: str | optuna.storages.BaseStorage) -> str:
    """The next free ``<name>_backup-<n>`` in a storage."""
    existing = set(optuna.study.get_all_study_names(storage))
    n = 0
    while f"{study_name}{BACKUP_MARK}{n}" in existing:
        n += 1
    return f"{study_name}{BACKUP_MARK}{n}"
