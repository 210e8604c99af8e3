"""Where a study lives, and its two locks: the budget lock that keeps several workers to an exact
budget, and the sweep lock that lets one run at a time grow the study (DVC experiments run at once).

Three storages, chosen by ``hpo.storage``:

- ``journal``: ``artifacts/hpo/study.journal``, Optuna's append-only journal file (the default):
  several processes on one machine, and the cheapest per trial (docs/benchmarks.md measures it
  against SQLite: a trial's dozen writes are appended lines, not SQL transactions);
- ``sqlite``: ``artifacts/hpo/study.db``, one writer;
- ``postgresql://...``: for workers on several machines. A password never sits in params.yaml
  (DVC copies every param into dvc.lock and git): ``env:NAME`` reads the URL from an environment
  variable at run time.

The study storage is not a DVC output: DVC neither deletes nor caches it, like a database server.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import optuna
import sqlalchemy
import sqlalchemy.exc

from hpopipe import artifacts, workspace
from hpopipe.atomic import disk_full, no_space
from hpopipe.config import check_storage_url
from hpopipe.errors import HpopipeError, StorageReconnected
from hpopipe.redact import mask_url, register_url
from hpopipe.sweep.journal_file import is_journal, open_journal, unreadable_line
from hpopipe.sweep.optuna_internals import rdb_of
from hpopipe.sweep.outage import Outage, RetryingStorage, connection_lost, critical

log = logging.getLogger(__name__)
LOCK_POLL_S = 0.2  # how often a run waiting for a sweep lock tries again

Kind = Literal["sqlite", "journal", "postgresql"]
T = TypeVar("T")


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


def journal_spec(path: Path) -> StorageSpec:
    """An Optuna journal file at ``path``."""
    return StorageSpec("journal", str(path.resolve()), path)


def file_spec(path: Path) -> StorageSpec:
    """The study file a ``--storage PATH`` option names: a journal by its ``.journal`` suffix, else SQLite."""
    return journal_spec(path) if is_journal(path) else sqlite_spec(path)


def resolve(setting: str, root: Path | None = None) -> StorageSpec:
    """The storage an ``hpo.storage`` setting names; ``env:NAME`` is read from the environment now.

    Study files live in ``root``: by default ``artifacts/hpo`` of the workspace, also when a stage
    runs in a DVC experiment copy (see :mod:`hpopipe.workspace`), so that an experiment grows
    the workspace's study instead of a new one that DVC deletes with the copy.
    """
    root = workspace.state_path(artifacts.HPO) if root is None else root
    if setting == "sqlite":
        return sqlite_spec(root / artifacts.STUDY_DB.name)
    if setting == "journal":
        return journal_spec(root / artifacts.STUDY_JOURNAL.name)
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


def open_storage(spec: StorageSpec, retry_s: float = 0.0) -> optuna.storages.BaseStorage:
    """An Optuna storage object for the spec; an unreachable database is one clear line.

    A database storage rides out an outage of up to ``retry_s`` seconds (``hpo.storage_retry_s``,
    which the sweep's workers pass; see :mod:`hpopipe.sweep.outage`), at start-up too. A write
    that finds the disk full is one line naming the study file (or the database).
    """
    if spec.kind in ("sqlite", "journal"):
        path, kind = spec.path, spec.kind
        assert path is not None
        files = Outage(str(path), 0.0, retries=False)  # maps a full disk, retries nothing
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if no_space(err):
                raise disk_full(path.parent) from None
            raise
        opened = files.call(lambda: sqlite_storage(path) if kind == "sqlite" else _journal(path))
        return RetryingStorage(opened, files)
    outage = Outage(spec.display, retry_s)

    def connect() -> optuna.storages.RDBStorage:
        with _creating_tables(spec):
            return optuna.storages.RDBStorage(spec.url, engine_kwargs={"pool_pre_ping": True})

    try:
        rdb = outage.call(connect) if retry_s > 0 else connect()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        raise _unusable(spec, err) from None
    return RetryingStorage(rdb, outage)


def _journal(path: Path) -> optuna.storages.JournalStorage:
    """The journal at ``path``, replayed; a damaged one is one line naming it and the way back."""
    try:
        return open_journal(path.resolve())  # the storage object outlives any chdir
    except (ValueError, KeyError, TypeError) as err:  # a line that is no JSON, or no journal entry
        problem = unreadable_line(path) or str(err).strip().splitlines()[0]
        raise damaged(path, "journal", problem) from None


_TABLES_KEY = 0x6870_6F70_7462_6C73  # "hpoptbls": the advisory lock around table creation


@contextmanager
def _creating_tables(spec: StorageSpec) -> Iterator[None]:
    """One process at a time opens a PostgreSQL storage: Optuna creates its tables on the first open.

    Two processes that open a fresh database at once (external scripts, workers) both run
    ``CREATE TABLE`` and one fails on a duplicate type or key; a session advisory lock (released
    by the server if the process dies) makes the second wait and then find the tables made.
    """
    engine = sqlalchemy.create_engine(spec.url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _TABLES_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _TABLES_KEY})
                conn.commit()
    finally:
        engine.dispose()


def _unusable(spec: StorageSpec, err: Exception) -> HpopipeError:
    """An unreachable or uninstalled database as one line (the password masked)."""
    lines = str(getattr(err, "orig", err)).strip().splitlines()
    first = lines[0] if lines else type(err).__name__
    hint = " (pip install 'hpopipe[postgres]')" if isinstance(err, ImportError) else ""
    return HpopipeError(f"hpo.storage: cannot use {spec.display}: {mask_url(first)}{hint}")


def check_study_file(path: Path) -> None:
    """A damaged study file is one line naming it and the way back, not a "malformed" traceback.

    SQLite's quick_check reads every page once (milliseconds for a study of thousands of
    trials); without it a truncated file fails at some later query, deep inside Optuna. A
    journal's lines are parsed once (about 80 µs a trial); a torn last line is no damage.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return  # a new study: the storage creates it
    if is_journal(path):
        problem = unreadable_line(path)
        if problem is not None:
            raise damaged(path, "journal", problem)
        return
    problem = _quick_check(path)
    if problem is not None:
        raise damaged(path, "database", problem)


def damaged(path: Path, what: str, problem: str) -> HpopipeError:
    """The one line for a study file that cannot be read: which file, what is wrong, the way back."""
    return HpopipeError(
        f"{path}: the study {what} is damaged ({problem}): "
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
    the server releases when a dead worker's connection drops. Holding it, the storage's
    remembered reads are dropped (:mod:`hpopipe.sweep.read_memo`): the count sees every worker.
    """
    if spec.kind == "postgresql":
        with _advisory_budget_lock(storage, _lock_key(study_name)):
            _read_afresh(storage)
            yield
        return
    assert spec.path is not None
    lock_path = spec.path.with_name(spec.path.name + ".budget-lock")  # ".lock" is Optuna's own
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _read_afresh(storage)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_afresh(storage: optuna.storages.BaseStorage) -> None:
    if isinstance(storage, RetryingStorage):
        storage.forget()


@contextmanager
def _advisory_budget_lock(storage: optuna.storages.BaseStorage, key: int) -> Iterator[None]:
    """The PostgreSQL budget lock: a session lock on a connection of its own.

    Taking it rides out an outage like any storage call. The server drops the lock with the
    connection, so inside it a lost connection ends the section (StorageReconnected, see
    :func:`under_budget_lock`); releasing it then has nothing left to release.
    """
    if isinstance(storage, RetryingStorage) and storage.rdb is not None:
        engine, outage = storage.rdb.engine, storage.outage
    else:  # a study wraps a plain RDB storage in a cache
        rdb = rdb_of(storage)
        assert isinstance(rdb, optuna.storages.RDBStorage)
        engine, outage = rdb.engine, Outage("the study storage", 0.0)

    def take() -> sqlalchemy.engine.Connection:
        conn = engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        except BaseException:
            conn.close()
            raise
        return conn

    conn = outage.call(take)
    try:
        with critical():
            yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        except sqlalchemy.exc.SQLAlchemyError as err:
            if not connection_lost(err):
                raise
        finally:
            conn.close()


def under_budget_lock(
    spec: StorageSpec, storage: optuna.storages.BaseStorage, study_name: str, section: Callable[[], T]
) -> T:
    """``section()`` holding the budget lock; from the start again when the database went away in it.

    The lock went with the connection: what the section counted may be stale, and another
    worker may have taken the lock meanwhile, so the whole section runs again.
    """
    while True:
        try:
            with budget_lock(spec, storage, study_name):
                return section()
        except StorageReconnected:
            log.info("study %s: the database went away inside the budget lock; counting again", study_name)


@contextmanager
def sweep_lock(spec: StorageSpec, study_name: str, stop: Callable[[], bool] | None = None) -> Iterator[None]:
    """One run at a time grows a study (the hpo stage: sweep and exports) or prunes its scratch (cleanup).

    Several DVC experiments at once (``dvc exp run --run-all --jobs 2``) share the workspace's
    study (see :mod:`hpopipe.workspace`). Their sweeps take turns instead of writing side by
    side, because only then is each experiment's output a function of its params:

    - the seeded sampler proposes the trial at sweep position k from the trials before it. Two
      sweeps interleaving their trials would make each proposal depend on timing, as several
      workers do. Taking turns, the study is always the one straight sweep to the larger
      budget, whichever experiment runs first, and each exports its first ``n_trials`` places
      of it (:func:`hpopipe.sweep.exports.within_budget`);
    - SQLite takes one writer (the rule ``hpo.storage`` enforces for workers; a busy timeout
      would only make two writers wait on each other mid-trial), and the sweep's lifecycle
      record (running, finished, its budget) has one owner at a time;
    - cleanup deletes the checkpoints of all but the best trials: holding the lock, it never
      deletes those of a trial another experiment is running.

    A file storage (sqlite, journal) is locked whole by ``flock`` on a sidecar file, which the
    kernel releases when its holder dies, however it dies; PostgreSQL takes a session advisory
    lock on the study, which the server releases when the connection drops. A waiting run says
    once whom it waits for, and gives up (one line) when ``stop`` turns true. Workers the sweep
    starts, or that join it (``hpopipe worker``), do not take this lock: they share the holder's
    sweep, its budget kept exact by :func:`budget_lock`.
    """
    stop = stop or (lambda: False)
    if spec.kind == "postgresql":
        with _advisory_sweep_lock(spec, study_name, stop):
            yield
        return
    assert spec.path is not None
    check_study_file(spec.path)  # a damaged study is refused before the lock file is touched
    lock_path = spec.path.with_name(spec.path.name + ".sweep-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as handle:

        def try_lock() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        def holder() -> str:
            handle.seek(0)
            return handle.read().strip() or "another run"

        _wait_for(try_lock, stop, study_name, holder)
        try:
            handle.truncate(0)
            handle.write(_holder() + "\n")
            handle.flush()
        except OSError as err:
            if no_space(err):
                raise disk_full(lock_path) from None
            raise
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for(
    try_lock: Callable[[], bool], stop: Callable[[], bool], study_name: str, holder: Callable[[], str]
) -> None:
    """Poll ``try_lock`` until it succeeds; log the holder once; a stop request ends the wait."""
    if try_lock():
        return
    log.info("study %s: another run holds it (%s); waiting for it to end", study_name, holder())
    while not try_lock():
        if stop():
            raise HpopipeError(f"study {study_name}: stopped while waiting for the run that holds it")
        time.sleep(LOCK_POLL_S)
    log.info("study %s: the other run ended; going on", study_name)


def _holder() -> str:
    """Who holds a sweep lock, for the line a waiting run logs."""
    exp = os.environ.get("DVC_EXP_NAME")
    where = f"DVC experiment {exp}, " if exp else ""
    return f"{where}pid {os.getpid()} on {socket.gethostname()}"


@contextmanager
def _advisory_sweep_lock(spec: StorageSpec, study_name: str, stop: Callable[[], bool]) -> Iterator[None]:
    """The PostgreSQL form of :func:`sweep_lock`, on a connection of its own for as long as it is held."""
    key = _lock_key("sweep:" + study_name)  # never the budget lock's key
    try:
        engine = sqlalchemy.create_engine(spec.url, poolclass=sqlalchemy.pool.NullPool)
        conn = engine.connect()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        raise _unusable(spec, err) from None

    def try_lock() -> bool:
        got = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()  # a session lock outlives the transaction: hold nothing else open
        return bool(got)

    try:
        _wait_for(try_lock, stop, study_name, lambda: f"another run on {spec.display}")
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            except sqlalchemy.exc.SQLAlchemyError as err:  # closing the connection releases it too
                if not connection_lost(err):  # lost: the server released it with the connection
                    log.warning("study %s: sweep lock not released (%s)", study_name, type(err).__name__)
    finally:
        conn.close()
        engine.dispose()
