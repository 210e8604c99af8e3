"""MLflow tracking: the only module that imports mlflow.

The library takes a tracker object; tests that are not about tracking pass
:class:`NullTracker`. MLflow is a browsable record, never the source of truth
for metrics (the DVC metrics files are).

Without ``MLFLOW_TRACKING_URI`` the store is ``mlflow.db`` in the workspace (and artifacts go
to its ``mlruns/``), also for a stage that runs in a DVC experiment's temporary copy, so the
runs of ``dvc exp run --temp`` and of queued experiments outlive the copy (see
:mod:`hpopipe.workspace`). Several experiments may then write that SQLite file at once:
every write goes through :meth:`MlflowTracker._writing`, which takes turns on a lock file.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpopipe import workspace
from hpopipe.background import InOrder, InProcess
from hpopipe.errors import HpopipeError
from hpopipe.names import check_name
from hpopipe.processes import pid_alive, usable_cpus
from hpopipe.redact import mask_url, register_url

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


DEFAULT_EXPERIMENT = "hpopipe"
DEFAULT_STORE = "mlflow.db"  # in the workspace, when MLFLOW_TRACKING_URI is not set
ARTIFACTS = "mlruns"  # the default store's artifact folder, in the workspace too


def default_tracking_uri(root: Path | None = None) -> str:
    """The store used when ``MLFLOW_TRACKING_URI`` is unset: ``mlflow.db`` in the workspace ``root``."""
    return f"sqlite:///{(root or workspace.root()).resolve() / DEFAULT_STORE}"


def local_sqlite_file(uri: str) -> Path | None:
    """The file of a local SQLite store URI (``sqlite:///path``), or None for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


CHAMPION = "champion"  # the registry alias of the version to serve: set once, then moved by the retrain gate
MODEL_CODE = Path(__file__).with_name("model_code.py")  # the registered model's code file


def experiment_name() -> str:
    """The MLflow experiment: ``HPOPIPE_EXPERIMENT``, else ``hpopipe``; refused when unsafe as a name."""
    return check_name(os.environ.get("HPOPIPE_EXPERIMENT", DEFAULT_EXPERIMENT), "HPOPIPE_EXPERIMENT")


class NullTracker:
    """Tracks nothing; the default for library calls and unit tests."""

    enabled = False  # whether anything is recorded (a stage skips building what would be dropped)

    @contextmanager
    def run(
        self,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        nested: bool = False,
    ) -> Iterator[None]:
        """Open a (possibly nested) run for the duration of the block."""
        yield

    def log_history(self, history: list[dict[str, float]]) -> None:
        """Per-epoch metrics of one training run."""

    def log_metrics(self, values: dict[str, float]) -> None:
        """Final metrics of the current run."""

    def log_series(self, key: str, points: Sequence[tuple[int, float]]) -> None:
        """One metric as a step series of the current run: ``(step, value)`` pairs."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags on the current run (e.g. the trial's final state)."""

    def end_as_killed(self) -> None:
        """End the current run as KILLED (a trial stopped by a signal) instead of FINISHED."""

    def log_artifact(self, path: Path) -> None:
        """A file produced by the current run."""

    def log_model(self, package: Any) -> None:
        """The refit model (an :class:`hpopipe.served.ModelPackage`); registered when it is named."""

    def run_id(self) -> str | None:
        """The current run's id, if any."""
        return None

    def drain(self) -> None:
        """Wait until every run this tracker sends in the background is written."""

    def check_several_writers(self, why: str) -> None:
        """Refuse a tracking store that several processes cannot write to at once."""

    def nest_under(self, run_id: str | None) -> None:
        """Nest this process's runs, when it has no active run, under ``run_id`` (another process's).

        A worker process's trial runs nest under the hpo stage's run; by default the run
        ``HPOPIPE_PARENT_RUN_ID`` names.
        """

    def shared_parent(self, run_id: str | None, name: str, tags: dict[str, str]) -> str | None:
        """The run that nests the trials of several processes: ``run_id`` (marked running) or a new one.

        Not tied to this process's active run: external training code's processes
        (:mod:`hpopipe.sweep.external`) find its id in the study and nest under it.
        """
        return None

    def end_shared_parent(self, run_id: str | None) -> None:
        """Mark a :meth:`shared_parent` run FINISHED (idempotent: any process may)."""

    def trial_run(self, name: str, parent: str | None, params: dict[str, Any]) -> TrialRun:
        """A nested run for one trial of external code, open until its :meth:`TrialRun.end`.

        Several may be open at once in one process (trials asked before others were told).
        """
        return TrialRun()

    def reattach(self, run_id: str) -> TrialRun:
        """The open trial run ``run_id``, made by another process (:meth:`TrialRun.detach`)."""
        return TrialRun()


class TrialRun:
    """One external trial's MLflow run: intermediate values, final values, tags, its end."""

    run_id: str | None = None

    def log(self, key: str, value: float, step: int = 0) -> None:
        """A metric at ``step`` (sent in one batch at the end)."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags sent with the end."""

    def end(self, status: str = "FINISHED") -> None:
        """Send what was logged and end the run (FINISHED, FAILED or KILLED)."""

    def flush(self) -> None:
        """Send what was logged so far; the run stays open (a trial driven by several processes)."""

    def detach(self) -> None:
        """Send what was logged and disown the run: no process's death closes it as stale; another
        process takes it up by id with :meth:`NullTracker.reattach` (``hpopipe trial report|tell``)."""


@dataclass
class _Batch:
    """What one open run will send in its closing batch."""

    params: dict[str, str]
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "FINISHED"


@contextmanager
def _requirements_known(modules: dict[str, str]) -> Iterator[None]:
    """MLflow's module map, given for our requirements while it logs the model (MLflow internals).

    Before saving a model MLflow warns about requirements this environment does not satisfy
    (``requirements_utils.warn_dependency_requirement_mismatches``). It reads each version with
    ``importlib.metadata.version``, but first maps every module of every installed distribution
    (``packages_distributions()``, cached in ``_MODULES_TO_PACKAGES``): 0.5 s, an eighth of the
    refit stage, for a fallback used only when that read fails. ``modules`` (distribution ->
    module, :data:`hpopipe.served.REQUIRED`) is that map for the requirements we pass; it is put
    in place for the call when MLflow has not built its own, and taken out afterwards. The
    check's outcome is the same; tests/test_tracking.py pins the name.
    """
    from mlflow.utils import requirements_utils

    if requirements_utils._MODULES_TO_PACKAGES is not None:  # already built: nothing to spare
        yield
        return
    given = {module: [name] for name, module in modules.items()} | {"mlflow": ["mlflow"]}
    requirements_utils._MODULES_TO_PACKAGES = given  # type: ignore[assignment]
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None


@contextmanager
def _turns(lock_path: Path | None) -> Iterator[None]:
    """Take turns with other processes writing the same local SQLite store (None: a server, no turns).

    Queued DVC experiments run at once (``--jobs 2``) and all write the workspace's
    ``mlflow.db``: SQLite would make a second writer wait at most five seconds, then fail,
    and two first runs would both create its tables. Each write here is one short batch.
    """
    if lock_path is None:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_QUICK: set[str] = set()  # the SQLite stores whose connections get quick_commits' pragmas, in this process


def quick_commits(db: Path) -> None:
    """WAL and ``synchronous=NORMAL`` on every connection this process opens to the SQLite store ``db``.

    MLflow's defaults (a rollback journal, full syncing) cost several ``fsync`` calls per commit and
    seven commits per trial run: on a virtual disk that stole time from the training beside it
    (measured: docs/benchmarks.md). The study's SQLite file has the same settings; a killed process
    loses nothing, and an operating-system crash can lose the last commits, not the file. Listens
    on every SQLAlchemy engine (MLflow makes its own) and acts on connections to ``db`` only. A
    store that cannot switch to WAL now (another program holds it open) keeps its journal.
    """
    import sqlite3

    import sqlalchemy.event
    from sqlalchemy.engine import Engine

    target = str(db.resolve())
    if target in _QUICK:
        return
    _QUICK.add(target)

    def pragmas(connection: Any, _record: Any) -> None:
        if not isinstance(connection, sqlite3.Connection):
            return
        files = {row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main"}
        if target not in files:
            return
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as err:
            log.debug("%s: journal mode unchanged (%s)", target, err)
        connection.execute("PRAGMA synchronous=NORMAL")

    sqlalchemy.event.listen(Engine, "connect", pragmas)


def _send_batch(client: Any, run_id: str, batch: _Batch) -> None:
    """A run's params, metrics and tags in as few ``log_batch`` calls as MLflow's limits allow."""
    from mlflow.entities import Metric, Param, RunTag

    now = _now_ms()
    metrics = [Metric(k, v, now, step) for k, v, step in batch.metrics]
    params = [Param(k, v) for k, v in batch.params.items()]
    tags = [RunTag(k, v) for k, v in batch.tags.items()]
    if params or tags or metrics:
        client.log_batch(run_id, metrics=metrics[:1000], params=params, tags=tags)
    for start in range(1000, len(metrics), 1000):  # MLflow's per-request limit
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


class TrialRunWriter:
    """Writes nested runs (trials, CV folds) from commands that are plain data, in the order sent.

    ``("create", key, experiment_id, start_ms, tags, name)`` creates a run; ``("end", key, batch,
    status, end_ms)`` sends its batch and ends it, skipped when its create failed (that error is
    already reported). The same writer runs on the tracker's background thread or, made from
    ``(tracking URI, lock file)`` alone, in a writer process (:class:`hpopipe.background.InProcess`).
    """

    def __init__(self, setup: tuple[str, str | None], client: Any = None) -> None:
        uri, lock = setup
        self._lock = None if lock is None else Path(lock)
        if client is None:  # in the writer process: its own client, the store opened now
            import mlflow

            db = local_sqlite_file(uri)
            if db is not None:
                quick_commits(db)
            client = mlflow.MlflowClient(tracking_uri=uri)
            with _turns(self._lock):
                client.search_experiments(max_results=1)
        self._client = client
        self._runs: dict[int, str] = {}

    def __call__(self, command: tuple[Any, ...]) -> None:
        if command[0] == "create":
            _, key, experiment, started, tags, name = command
            with _turns(self._lock):
                run = self._client.create_run(experiment, start_time=started, tags=tags, run_name=name)
            self._runs[key] = str(run.info.run_id)
        elif command[0] == "end":
            _, key, batch, status, ended = command
            run_id = self._runs.pop(key, None)
            if run_id is None:
                return
            with _turns(self._lock):
                _send_batch(self._client, run_id, batch)
                self._client.set_terminated(run_id, status=status, end_time=ended)
        else:
            raise ValueError(f"not a trial-run command: {command[0]!r}")


WRITER_ENV = "HPOPIPE_TRACKING_WRITER"
# From this many nested runs a writer process pays for its start-up (importing MLflow: about
# 1.5 s of CPU, on a core the training leaves idle). With fewer, the sweep may end before the
# process is ready, and the thread (about 30 ms of CPU a run) is the cheaper way.
PROCESS_FROM_RUNS = 20


def writer_for(nested_runs: int, trainers: int) -> str:
    """How a tracker sends its nested runs: ``thread`` or ``process`` (see :mod:`hpopipe.background`).

    ``HPOPIPE_TRACKING_WRITER`` (``auto``, ``thread`` or ``process``) decides; ``auto`` takes a
    process when there are at least :data:`PROCESS_FROM_RUNS` runs to write (``nested_runs``) and
    a core that the ``trainers`` (training processes on this machine) leave free. Always a thread
    off the main thread: the child's parent-death signal follows the thread that started it.
    """
    chosen = os.environ.get(WRITER_ENV, "").strip().lower() or "auto"
    if chosen not in ("auto", "thread", "process"):
        raise HpopipeError(f"{WRITER_ENV}: {chosen!r} is not one of auto, thread, process")
    if threading.current_thread() is not threading.main_thread():
        return "thread"
    if chosen != "auto":
        return chosen
    return "process" if nested_runs >= PROCESS_FROM_RUNS and usable_cpus() > trainers else "thread"


class MlflowTracker(NullTracker):
    """Tracks to MLflow: the tracking URI from the environment, else MLflow's default.

    ``writer``: how nested runs reach the store, ``thread`` or ``process`` (:func:`writer_for`).
    """

    enabled = True

    def __init__(self, experiment: str | None = None, writer: str = "thread") -> None:
        import mlflow

        experiment = experiment_name() if experiment is None else check_name(experiment, "experiment")

        artifacts: Path | None = None
        if not mlflow.is_tracking_uri_set():  # the workspace's store, not one in a temporary copy
            root = workspace.root()
            mlflow.set_tracking_uri(default_tracking_uri(root))
            artifacts = root.resolve() / ARTIFACTS / experiment
        uri = mlflow.get_tracking_uri()
        if with_driver(uri) != uri:  # set only then: a set URI would outrank the environment from now on
            mlflow.set_tracking_uri(with_driver(uri))
        self._mlflow = mlflow
        uri = mlflow.get_tracking_uri()
        db = local_sqlite_file(uri)
        self._lock_path = None if db is None else db.with_name(db.name + ".hpopipe-lock")
        if db is not None:
            quick_commits(db)
        self._pending: list[_Batch] = []
        self._context_tags: dict[str, str] | None = None
        self._parent_run = os.environ.get("HPOPIPE_PARENT_RUN_ID") or None  # see nest_under
        self._keys = itertools.count()
        with self._writing():  # a new store's tables are created here, by one process only
            self._client = mlflow.MlflowClient()
            self._experiment = self._open_experiment(experiment, artifacts)
            log.info("MLflow tracking at %s", mask_url(uri))
            self._close_stale_runs()
        setup = (uri, None if self._lock_path is None else str(self._lock_path))
        self._sender: InOrder | InProcess = InOrder("mlflow-trial-runs", TrialRunWriter(setup, self._client))
        if writer == "process":
            try:
                self._sender = InProcess("mlflow-trial-runs", (__name__, TrialRunWriter.__name__), setup)
                log.info("MLflow trial runs are written by process %d", self._sender.pid)
            except OSError as err:  # no process to be had (limits, memory): the thread writes them
                log.warning("MLflow trial runs: no writer process (%s), a thread writes them", err)

    def _open_experiment(self, name: str, artifacts: Path | None) -> Any:
        """Set the MLflow experiment, creating it with its artifacts in the workspace when it is new.

        MLflow would put a new experiment's artifacts under the current directory: in a DVC
        experiment's copy, a folder deleted with it (the refit model among them).
        """
        if artifacts is not None and self._client.get_experiment_by_name(name) is None:
            self._client.create_experiment(name, artifact_location=str(artifacts))
        return self._mlflow.set_experiment(name)

    def _writing(self) -> Any:
        """Turns on the local SQLite store's lock file (:func:`_turns`)."""
        return _turns(self._lock_path)

    def _close_stale_runs(self) -> None:
        """Runs left RUNNING by a process that died on this host are marked KILLED.

        A SIGKILL gives MLflow no chance to end its run; without this they would
        show as running forever.
        """
        from mlflow.entities import ViewType

        stale = self._client.search_runs(
            [self._experiment.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`hpopipe.host` = '{socket.gethostname()}'",
            run_view_type=ViewType.ACTIVE_ONLY,
        )
        for run in stale:
            pid = int(run.data.tags.get("hpopipe.pid", "0"))
            if pid and not pid_alive(pid):
                self._client.set_terminated(run.info.run_id, status="KILLED")
                log.warning("closed MLflow run %s (left RUNNING by dead process %d)", run.info.run_id, pid)

    @contextmanager
    def run(
        self,
        name: str,
        *,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        nested: bool = False,
    ) -> Iterator[None]:
        """Open a run; it ends FINISHED, or FAILED/KILLED when the block raises.

        Params, metrics and tags logged inside the block are buffered and sent in
        one batch when it ends: per-call round trips would dominate short trials.
        """
        mlflow = self._mlflow
        masked = {k: mask_url(v) for k, v in (tags or {}).items()}
        masked.update({"hpopipe.host": socket.gethostname(), "hpopipe.pid": str(os.getpid())})
        if os.environ.get("DVC_EXP_NAME"):  # the DVC experiment this run belongs to, to filter by
            masked["hpopipe.dvc_exp"] = mask_url(os.environ["DVC_EXP_NAME"])
        batch = _Batch({k: mask_url(str(v)) for k, v in (params or {}).items()})
        if nested:
            with self._in_background(name, masked, batch):
                yield
            return
        with self._writing():
            active = mlflow.start_run(run_name=name, tags=masked)

        def end(status: str) -> None:
            try:
                self._sender.drain()  # its nested runs are all in the store before it ends
            finally:
                with self._writing():
                    _send_batch(self._client, active.info.run_id, batch)
                    mlflow.end_run(status=batch.status if status == "FINISHED" else status)

        with self._buffering(batch, end):
            yield

    @contextmanager
    def _buffering(self, batch: _Batch, end: Callable[[str], None]) -> Iterator[None]:
        """What the block logs goes to ``batch``; then ``end(status)``: FINISHED, or KILLED (Ctrl-C)
        or FAILED when the block raises."""
        self._pending.append(batch)
        status = "FINISHED"
        try:
            yield
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            self._pending.pop()
            end(status)

    @contextmanager
    def _in_background(self, name: str, tags: dict[str, str], batch: _Batch) -> Iterator[None]:
        """A nested run (a trial, a CV candidate) sent to the store by a background thread.

        Its creation is queued at the start and its batch and end at the end, in order, so
        the store's round trips overlap training; the parent run's end (or :meth:`drain`)
        waits for them. Under the active run, or the one :meth:`nest_under` set
        (a worker process nesting under the coordinator's ``hpo`` run).
        """
        active = self._mlflow.active_run()
        parent = active.info.run_id if active else self._parent_run
        tags = {**self._default_tags(), **tags, "mlflow.runName": name}
        if parent:
            tags["mlflow.parentRunId"] = parent
        key = next(self._keys)
        self._sender.send(("create", key, self._experiment.experiment_id, _now_ms(), tags, name))

        def end(status: str) -> None:
            final = batch.status if status == "FINISHED" else status
            self._sender.send(("end", key, batch, final, _now_ms()))

        with self._buffering(batch, end):
            yield

    def _default_tags(self) -> dict[str, str]:
        """The tags MLflow's ``start_run`` adds to every run (source, user, git commit), once a process."""
        if self._context_tags is None:
            from mlflow.tracking.context.registry import resolve_tags

            self._context_tags = {k: str(v) for k, v in resolve_tags({}).items()}
        return self._context_tags

    def drain(self) -> None:
        """Wait until every nested run handed to the background thread or process is in the store."""
        self._sender.drain()

    def log_history(self, history: list[dict[str, float]]) -> None:
        if self._pending:
            self._pending[-1].metrics += [
                (key, float(value), int(row["epoch"]))
                for row in history
                for key, value in row.items()
                if key != "epoch"
            ]

    def log_metrics(self, values: dict[str, float]) -> None:
        if self._pending:
            self._pending[-1].metrics += [(k, float(v), 0) for k, v in values.items()]

    def log_series(self, key: str, points: Sequence[tuple[int, float]]) -> None:
        if self._pending:
            self._pending[-1].metrics += [(key, float(value), int(step)) for step, value in points]

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._pending:
            self._pending[-1].tags.update({k: mask_url(v) for k, v in tags.items()})

    def end_as_killed(self) -> None:
        if self._pending:
            self._pending[-1].status = "KILLED"

    def log_artifact(self, path: Path) -> None:
        self._mlflow.log_artifact(str(path))

    def log_model(self, package: Any) -> None:
        """Log the model as a pyfunc "from code" (no pickle), register it, tag it, crown the first.

        The signature lists the raw table's feature columns with their types; the hpopipe
        package travels in the model's ``code/`` folder, so serving needs only the pinned
        requirements. The first version of a name gets the ``champion`` alias; later ones
        get it from the retrain gate (:func:`move_champion`).
        """
        import shutil
        import tempfile

        from mlflow.models import infer_signature

        with (
            tempfile.TemporaryDirectory(prefix="hpopipe-code-") as tmp,
            self._writing(),
            _requirements_known(package.modules),
        ):
            code = Path(tmp) / "hpopipe"
            shutil.copytree(package.code, code, ignore=shutil.ignore_patterns("__pycache__"))
            info = self._mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts={key: str(path) for key, path in package.files.items()},
                code_paths=[str(code)],
                signature=infer_signature(package.signature_rows, package.output),
                input_example=package.example,
                pip_requirements=package.requirements,
                registered_model_name=package.name,
            )
        if package.name is None or info.registered_model_version is None:
            return
        version = str(info.registered_model_version)
        with self._writing():
            for key, value in package.tags.items():
                self._client.set_model_version_tag(package.name, version, key, mask_url(value))
            crowned = CHAMPION not in self._client.get_registered_model(package.name).aliases
            if crowned:
                self._client.set_registered_model_alias(package.name, CHAMPION, version)
        if crowned:
            log.info("registered %s version %s as @%s", package.name, version, CHAMPION)
        else:
            log.info("registered %s version %s (the retrain gate moves @%s)", package.name, version, CHAMPION)

    def run_id(self) -> str | None:
        active = self._mlflow.active_run()
        return active.info.run_id if active else None

    def check_several_writers(self, why: str) -> None:
        _refuse_one_writer(self._mlflow.get_tracking_uri(), why)

    def nest_under(self, run_id: str | None) -> None:
        self._parent_run = run_id

    def shared_parent(self, run_id: str | None, name: str, tags: dict[str, str]) -> str | None:
        from mlflow.exceptions import MlflowException

        with self._writing():
            if run_id:
                try:
                    if self._client.get_run(run_id).info.status != "RUNNING":
                        self._client.update_run(run_id, status="RUNNING")
                    return run_id
                except MlflowException:  # deleted, or the store changed: a new parent
                    log.warning("MLflow run %s not found: a new parent run for the sweep", run_id)
            # No hpopipe.pid tag: it is no one process's run, so none closes it as stale.
            masked = {k: mask_url(v) for k, v in tags.items()}
            run = self._client.create_run(self._experiment.experiment_id, tags=masked, run_name=name)
        return str(run.info.run_id)

    def end_shared_parent(self, run_id: str | None) -> None:
        if run_id:
            with self._writing():
                self._client.set_terminated(run_id, status="FINISHED")

    def trial_run(self, name: str, parent: str | None, params: dict[str, Any]) -> TrialRun:
        tags = {"hpopipe.host": socket.gethostname(), "hpopipe.pid": str(os.getpid())}
        if parent:
            tags["mlflow.parentRunId"] = parent
        with self._writing():
            run = self._client.create_run(self._experiment.experiment_id, tags=tags, run_name=name)
        batch = _Batch({k: mask_url(str(v)) for k, v in params.items()})
        return _MlflowTrialRun(self, str(run.info.run_id), batch)

    def reattach(self, run_id: str) -> TrialRun:
        return _MlflowTrialRun(self, run_id, _Batch({}))


class _MlflowTrialRun(TrialRun):
    def __init__(self, tracker: MlflowTracker, run_id: str, batch: _Batch) -> None:
        self.tracker, self.batch = tracker, batch
        self.run_id: str = run_id

    def log(self, key: str, value: float, step: int = 0) -> None:
        self.batch.metrics.append((key, float(value), int(step)))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.batch.tags.update({k: mask_url(v) for k, v in tags.items()})

    def end(self, status: str = "FINISHED") -> None:
        tracker = self.tracker
        with tracker._writing():
            _send_batch(tracker._client, self.run_id, self.batch)
            tracker._client.set_terminated(self.run_id, status=status)

    def flush(self) -> None:
        with self.tracker._writing():
            _send_batch(self.tracker._client, self.run_id, self.batch)
        self.batch = _Batch({}, status=self.batch.status)  # sent: a second flush repeats nothing

    def detach(self) -> None:
        self.set_tags({"hpopipe.pid": "0"})  # no process's run: _close_stale_runs leaves it alone
        self.flush()


# Database schemes MLflow opens through SQLAlchemy, whose default driver may not be installed.
_DATABASES = ("postgresql", "mysql", "mssql", "oracle")


def with_driver(uri: str) -> str:
    """``uri`` (MLFLOW_TRACKING_URI) with a database driver that is installed; else one line.

    Its secrets are registered for masking first. A bare ``postgresql://`` means psycopg 3
    to SQLAlchemy 2.1, while hpopipe[postgres] installs psycopg2: that one is used when it
    is the one there. Any other missing driver is an HpopipeError naming the module, not an
    import traceback from deep inside MLflow.
    """
    register_url(uri)
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme.split("+", 1)[0] not in _DATABASES:
        return uri
    import sqlalchemy.exc

    try:
        _driver_of(uri)
        return uri
    except (ImportError, sqlalchemy.exc.ArgumentError) as err:
        problem = err
    if scheme == "postgresql":
        psycopg2 = "postgresql+psycopg2://" + uri[len("postgresql://") :]
        try:
            _driver_of(psycopg2)
            return psycopg2
        except ImportError:
            pass  # neither driver: the error names the one the URI asked for
    missing = problem.name if isinstance(problem, ImportError) else None
    what = f"its driver {missing!r} is not installed" if missing else f"cannot be read ({problem})"
    raise HpopipeError(
        f"MLFLOW_TRACKING_URI: {mask_url(uri)}: {what} "
        "(pip install it, or name an installed one: postgresql+psycopg2://...)"
    )


def _driver_of(uri: str) -> None:
    """Import the DB-API module SQLAlchemy would use for ``uri`` (ImportError when it is missing)."""
    import sqlalchemy.engine

    sqlalchemy.engine.make_url(uri).get_dialect().import_dbapi()


def git_commit() -> str:
    """The commit the code runs from ("unknown" outside a git checkout): a tag on every stage run."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def set_served_model(load: Callable[[dict[str, str]], Any]) -> None:
    """Hand MLflow the registered model's wrapper; run by the model's code file when it is loaded.

    The wrapper only adapts ``load`` (:func:`hpopipe.served.load`: the model's files in, a
    predictor out) to MLflow's pyfunc interface; predictions come from ``hpopipe predict``'s code.
    """
    import mlflow
    import pandas as pd
    from mlflow.pyfunc import PythonModel

    def load_context(self: Any, context: Any) -> None:
        self.predictor = load(dict(context.artifacts))

    def predict(self: Any, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return self.predictor.predict(model_input)

    # Real objects, not this module's postponed strings: MLflow reads the input's hint, and a
    # DataFrame hint leaves the input to the logged signature (the raw table's columns and types).
    predict.__annotations__ = {"model_input": pd.DataFrame, "return": pd.DataFrame}
    model_class = type("HpopipeModel", (PythonModel,), {"load_context": load_context, "predict": predict})
    mlflow.models.set_model(model_class())


def _client_for(root: Path) -> Any:
    from mlflow import MlflowClient

    # Unset, MLflow's store is mlflow.db in the workspace the stages ran in (see the README).
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(root)
    return MlflowClient(tracking_uri=with_driver(uri))


def move_champion(root: Path, run_id: str) -> str | None:
    """Point ``@champion`` at the model version the refit run ``run_id`` registered (a passed gate).

    Returns ``name@version`` (None when that run registered nothing: logging off, no name).
    """
    from mlflow.exceptions import MlflowException

    try:
        client = _client_for(root)
        versions = client.search_model_versions(f"run_id = '{run_id}'")
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        client.set_registered_model_alias(newest.name, CHAMPION, newest.version)
    except MlflowException as err:
        log.warning("MLflow: @%s not moved (%s)", CHAMPION, str(err).splitlines()[0])
        return None
    return f"{newest.name}@{newest.version}"


def make_tracker(enabled: bool = True, *, nested_runs: int = 0, trainers: int = 1) -> NullTracker:
    """MLflow unless tracking is switched off (``HPOPIPE_TRACKING=off``).

    ``nested_runs`` (trials, CV folds) and ``trainers`` (training processes on this machine)
    choose how the nested runs are written (:func:`writer_for`). A bad ``HPOPIPE_EXPERIMENT``
    or ``HPOPIPE_TRACKING_WRITER`` is refused even with tracking off: the stage calls this
    before any training, and the mistake should not wait for the day tracking is switched
    back on.
    """
    experiment = experiment_name()
    writer = writer_for(nested_runs, trainers)
    if not enabled or tracking_off():
        return NullTracker()
    return MlflowTracker(experiment, writer)


def check_several_writers_early(why: str) -> None:
    """:meth:`NullTracker.check_several_writers` before MLflow is imported (it takes a second), from
    the environment alone: the hpo stage refuses a shared SQLite store before it starts its workers.

    The store is the one :class:`MlflowTracker` would use: ``MLFLOW_TRACKING_URI``, else the
    workspace's ``mlflow.db``. A bad ``HPOPIPE_EXPERIMENT`` is refused too, as :func:`make_tracker` does.
    """
    experiment_name()
    if not tracking_off():
        _refuse_one_writer(os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(), why)


def _refuse_one_writer(uri: str, why: str) -> None:
    """An error when the store ``uri`` takes one writer (a SQLite file, a folder) but ``why`` needs more."""
    if not uri.startswith(("http://", "https://", "postgresql", "mysql", "databricks")):
        raise HpopipeError(
            f"MLflow: {mask_url(uri)} takes one writer, but {why}: point MLFLOW_TRACKING_URI "
            "at a tracking server (mlflow server --backend-store-uri postgresql://...) "
            "or set HPOPIPE_TRACKING=off"
        )


def tracking_off() -> bool:
    """Whether ``HPOPIPE_TRACKING`` switches MLflow off (``0``, ``off`` or ``false``)."""
    return os.environ.get("HPOPIPE_TRACKING", "").lower() in {"0", "off", "false"}


def mlflow_run_ids(root: Path, stages: Sequence[str], since_ms: int) -> dict[str, str]:
    """The top-level MLflow run each stage opened since ``since_ms`` (stages that did not run have none).

    A stage's run name starts with the stage's name (``hpo mlp-e3b5cd04``, ``refit penguins-body_mass_g``).

    Read-only, for the retrain summary. MLflow is a browsable record, so a store that cannot
    be read costs the summary its run ids, not the retrain its result.
    """
    if tracking_off() or not stages:
        return {}
    from mlflow.exceptions import MlflowException

    try:
        client = _client_for(root)
        experiment = client.get_experiment_by_name(experiment_name())
        if experiment is None:
            return {}
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"attributes.start_time >= {since_ms}",
            order_by=["attributes.start_time ASC"],
            max_results=5000,
        )
    except (MlflowException, HpopipeError) as err:
        log.warning("MLflow runs not listed (%s)", mask_url(str(err).splitlines()[0]))
        return {}
    return {
        stage: run.info.run_id
        for run in runs
        if (stage := (run.info.run_name or "").split(" ", 1)[0]) in stages
        and "mlflow.parentRunId" not in run.data.tags
    }
