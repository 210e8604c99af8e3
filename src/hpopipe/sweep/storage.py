"""Where a study lives, and the lock that keeps several workers to an exact budget.

Three storages, chosen by ``hpo.storage``:

- ``sqlite``: ``artifacts/hpo/study.db``, one writer (the default, and the fastest for one worker);
- ``journal``: Optuna's append-only journal file, safe for several processes on one machine;
- ``postgresql://...``: for workers on several machines. A password never sits in params.yaml
  (DVC copies every param into dvc.lock and git): ``env:NAME`` reads the URL from an environment
  variable at run time.

The study storage is not a DVC output: DVC neither deletes nor caches it, like a database server.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import optuna
import sqlalchemy
import sqlalchemy.exc

from hpopipe import artifacts
from hpopipe.config import check_storage_url
from hpopipe.errors import HpopipeError
from hpopipe.redact import mask_url, register_url
from hpopipe.sweep.optuna_internals import rdb_of

Kind = Literal["sqlite", "journal", "postgresql"]


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: its kind, its URL (may hold a password: log ``display``), its file."""

    kind: Kind
    url: str
    path: Path | None = None

    @property
    def display(self) -> str:
        """The URL or file with any password masked: the only form that may be logged or stored."""
        return mask_url(self.url) if self.path is None else str(self.path)

    @property
    def shared(self) -> bool:
        """True when several processes may write to it at once."""
        return self.kind != "sqlite"


def sqlite_spec(path: Path) -> StorageSpec:
    """A SQLite study file at ``path`` (tests, benchmarks, and the default setting)."""
    return StorageSpec("sqlite", artifacts.sqlite_url(path), path)


def resolve(setting: str, root: Path = artifacts.HPO) -> StorageSpec:
    """The storage an ``hpo.storage`` setting names; ``env:NAME`` is read from the environment now."""
    if setting == "sqlite":
        return sqlite_spec(root / "study.db")
    if setting == "journal":
        path = root / "study.journal"
        return StorageSpec("journal", str(path.resolve()), path)
    url = setting
    if setting.startswith("env:"):
        name = setting[4:]
        url = os.environ.get(name, "")
        if not url:
            raise HpopipeError(f"hpo.storage: environment variable {name} is not set (it holds the URL)")
        try:
            check_storage_url(url, in_params=False)
        except ValueError as err:
            raise HpopipeError(f"hpo.storage: {name}: {err}") from None
    register_url(url)  # its password is masked even where a driver quotes it decoded
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; hpopipe[postgres] installs psycopg2.
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return StorageSpec("postgresql", url)


def open_existing(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """The storage of a sweep that has run: a missing study file is an error, never created empty."""
    if spec.path is not None and not spec.path.exists():
        raise HpopipeError(f"{spec.path}: not found (no sweep has run here yet: dvc repro)")
    return open_storage(spec)


def load_existing(setting: str, name: str, field: str) -> optuna.Study:
    """Load a study that must already exist; never creates an empty storage file or study.

    ``field`` names what the user gave, for the error (e.g. ``NAME`` or ``metrics/hpo.json``).
    """
    spec = resolve(setting)
    storage = open_existing(spec)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise HpopipeError(f"{field}: no study named {name!r} in {spec.display}") from None


def open_storage(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """An Optuna storage object for the spec; an unreachable database is one clear line."""
    if spec.kind == "sqlite":
        assert spec.path is not None
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite_storage(spec.path)
    if spec.kind == "journal":
        assert spec.path is not None
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(spec.path.resolve())  # the storage object outlives any chdir
        backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        return optuna.storages.JournalStorage(backend)
    try:
        return optuna.storages.RDBStorage(spec.url, engine_kwargs={"pool_pre_ping": True})
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        lines = str(getattr(err, "orig", err)).strip().splitlines()
        first = lines[0] if lines else type(err).__name__
        hint = " (pip install 'hpopipe[postgres]')" if isinstance(err, ImportError) else ""
        raise HpopipeError(f"hpo.storage: cannot use {spec.display}: {mask_url(first)}{hint}") from None


def check_study_file(path: Path) -> None:
    """A damaged study file is one line naming it and the way back, not a "malformed" traceback.

    SQLite's quick_check reads every page once (milliseconds for a study of thousands of
    trials); without it a truncated file fails at some later query, deep inside Optuna.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return  # a new study: SQLite creates it
    problem = _quick_check(path)
    if problem is not None:
        raise HpopipeError(
            f"{path}: the study database is damaged ({problem}): "
            "bring back its last backup with `hpopipe restore --from DIR` (DIR: hpo.backup_dir), "
            "or move the file away to start the sweep afresh"
        )


def _quick_check(path: Path) -> str | None:
    """SQLite's verdict on ``path``, read without writing a byte next to it; None when sound.

    With no write-ahead log beside it nobody has the file open, so it is read as immutable
    (no -wal/-shm created); if that finds a fault and a log has appeared meanwhile (a sweep
    opened it), the check is repeated through SQLite's locking. Never read-write: closing
    such a connection would checkpoint the log into the file.
    """
    wal = path.with_name(path.name + "-wal")
    immutable = not wal.exists()
    problem = _ask_sqlite(path, "immutable=1" if immutable else "mode=ro")
    if problem is not None and immutable and wal.exists():
        problem = _ask_sqlite(path, "mode=ro")
    return problem


def _ask_sqlite(path: Path, mode: str) -> str | None:
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True, timeout=30)
        try:
            row = conn.execute("PRAGMA quick_check(1)").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        return str(err).strip().splitlines()[-1].strip() or type(err).__name__
    if row and row[0] == "ok":
        return None
    return str(row[0] if row else "no answer").strip().splitlines()[-1].strip()


def sqlite_storage(path: Path) -> optuna.storages.RDBStorage:
    """SQLite in WAL mode with normal syncing: about 10x cheaper commits per reported epoch.

    WAL survives a killed process (what crash recovery is about); it can lose
    the last commits only if the operating system itself crashes.
    """
    check_study_file(path)
    storage = optuna.storages.RDBStorage(artifacts.sqlite_url(path))

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    storage.engine.dispose()  # reconnect so the pragmas apply to every connection
    return storage


def _lock_key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for the study."""
    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def budget_lock(spec: StorageSpec, storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Serialise "count the trials, then start one" across every worker of a study.

    Without it two workers could both see one trial left and both start one.
    Files use ``flock`` on a sidecar file; PostgreSQL an advisory lock, which
    the server releases when a dead worker's connection drops.
    """
    if spec.kind == "postgresql":
        rdb = rdb_of(storage)  # a study wraps its RDB storage in a cache
        assert isinstance(rdb, optuna.storages.RDBStorage)
        with rdb.engine.connect() as conn:
            key = _lock_key(study_name)
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    assert spec.path is not None
    lock_path = spec.path.with_name(spec.path.name + ".budget-lock")  # ".lock" is Optuna's own
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
