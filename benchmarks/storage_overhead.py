"""What a shared Optuna storage costs per trial, with 8 worker processes and a sleep objective.

The objective does no work: it suggests hpopipe's default search space (6 parameters), sets the
user attrs hpopipe sets, and runs a 5-"epoch" loop that sleeps, reports an intermediate value and
asks ``should_prune`` (NopPruner, so nothing is pruned). Every millisecond a trial costs beyond its
sleep is therefore Optuna: sampler, storage reads and writes, and (with 8 workers on a small
machine) waiting for a CPU.

Configurations (each with TPE, Optuna's default sampler, and RandomSampler, so sampler cost and
storage cost can be told apart):

- ``postgres``: RDBStorage on the PostgreSQL at 127.0.0.1:5432 (database created and dropped here);
- ``journal``: JournalStorage over a JournalFileBackend (the local multi-process storage);
- each of those with 8 workers and with 1 worker (reference);
- ``sqlite`` with 1 worker (the single-process default, for comparison).

Workers are separate processes (forked from a ``forkserver`` that has only imported Optuna and
its dependencies, or ``--start-method spawn``) running ``study.optimize`` on the same study until a
shared total of trials exists (``MaxTrialsCallback`` counting trials in every state); racing workers can
still start a few more, reported as ``overshoot``. Imports and storage opening happen before the
clock starts: the parent starts timing when every worker is ready and stops at the last worker's
finish. Configurations are interleaved (every configuration once per round), and medians over
rounds are reported.

Measured per run: wall time, trials per second, overhead per trial =
``wall * workers / trials - sleep``, CPU per trial (user + system of the workers; the PostgreSQL
server's CPU is not in it), peak RSS per worker (``getrusage`` in each child), and the 1-minute load
average before the run. On PostgreSQL also the transactions committed per trial (from the
server's ``pg_stat_database``), each one a round trip and, with the server's default
``synchronous_commit``, a WAL flush; on the journal the lines appended per trial, each one written
under the journal's file lock and fsync-ed.

Usage: ``python benchmarks/storage_overhead.py [--trials 40] [--workers 8] [--rounds 3]``
Writes ``benchmarks/results/storage_overhead.json`` and ``benchmarks/results/storage_overhead.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import queue
import resource
import statistics
import tempfile
import time
import uuid
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import optuna
import psycopg2
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import MaxTrialsCallback

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
PG_SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
READY_TIMEOUT_S = 120.0  # generous: 8 spawned interpreters importing Optuna on 2 busy cores
RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Config:
    storage: str  # postgres | journal | sqlite
    workers: int
    sampler: str  # tpe | random

    @property
    def name(self) -> str:
        return f"{self.storage}/{self.workers}w/{self.sampler}"


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs; plain data, so it crosses the spawn boundary."""

    storage: str
    location: str  # SQLAlchemy URL, or journal file path
    study_name: str
    sampler: str
    seed: int
    total: int
    sleep_s: float
    epochs: int
    worker_id: str


def open_storage(kind: str, location: str) -> BaseStorage:
    if kind == "journal":
        return JournalStorage(JournalFileBackend(location))
    return RDBStorage(location)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)  # Optuna 5 defaults: multivariate, constant_liar


def objective(trial: optuna.Trial, job: Job) -> float:
    """hpopipe's default space and trial bookkeeping around a sleep instead of training."""
    lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
    wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    layers = trial.suggest_int("n_layers", 1, 3)
    width = trial.suggest_categorical("width", [32, 64, 128, 256])
    dropout = trial.suggest_float("dropout", 0.0, 0.5, step=0.05)
    trial.suggest_categorical("batch_size", [32, 64, 128])
    trial.set_user_attr("worker", job.worker_id)
    trial.set_user_attr("seed", job.seed * 100_003 + trial.number)
    trial.set_user_attr("checkpoint", f".hpopipe/checkpoints/{job.study_name}/{trial.number}")
    # A smooth made-up score, so TPE has a landscape to model.
    target = 1.0 - abs(lr - 3e-3) * 20 - wd * 5 - abs(dropout - 0.2) * 0.3 - layers * 0.01
    target -= abs(width - 128) / 5000
    value = 0.0
    for epoch in range(job.epochs):
        time.sleep(job.sleep_s / job.epochs)
        value = target * (1.0 - 0.5 ** (epoch + 1))
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(job: Job, start: Any, results: Any) -> None:
    """One worker: open the storage, say ready, wait for the start signal, optimize, report."""
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job.storage, job.location)
    study = optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=make_sampler(job.sampler, job.seed),
        pruner=optuna.pruners.NopPruner(),
    )
    results.put(("ready", job.worker_id, None))
    start.wait()
    cpu0 = cpu_s()
    study.optimize(lambda trial: objective(trial, job), callbacks=[MaxTrialsCallback(job.total, states=None)])
    finished = time.monotonic()  # CLOCK_MONOTONIC: one system-wide clock, comparable across processes
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    results.put(("done", job.worker_id, {"t": finished, "cpu_s": cpu_s() - cpu0, "rss_kib": peak_kib}))


def collect(results: Any, procs: list[Any], kind: str, timeout_s: float) -> dict[str, Any]:
    """One message of ``kind`` from every worker, failing fast if one of them dies."""
    got: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            msg_kind, worker_id, payload = results.get(timeout=1.0)
        except queue.Empty as empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"workers failed (exit codes {dead}) or timed out waiting for {kind}"
                ) from empty
            continue
        assert msg_kind == kind, (msg_kind, kind)
        got[worker_id] = payload
    return got


def run_one(
    cfg: Config, location: str, args: argparse.Namespace, seed: int, pg: Postgres | None
) -> dict[str, Any]:
    sleep_s = args.sleep_ms / 1000
    study_name = f"bench-{cfg.storage}-{cfg.workers}-{cfg.sampler}-{uuid.uuid4().hex[:8]}"
    storage = open_storage(cfg.storage, location)
    optuna.create_study(study_name=study_name, storage=storage, direction="maximize")
    if isinstance(storage, RDBStorage):
        storage.engine.dispose()  # the parent holds no connection while the workers run
    ctx = mp.get_context(args.start_method)
    if args.start_method == "forkserver":
        # The server imports these once; each worker is a fork of that clean process (nothing of the
        # parent's state), so 8 workers do not each pay a second of imports on a busy 2-core machine.
        ctx.set_forkserver_preload(["optuna", "sqlalchemy", "psycopg2", "numpy", "scipy"])
    start, results = ctx.Event(), ctx.Queue()
    jobs = [
        Job(
            cfg.storage,
            location,
            study_name,
            cfg.sampler,
            seed * 1000 + i,
            args.trials,
            sleep_s,
            args.epochs,
            f"w{i}",
        )
        for i in range(cfg.workers)
    ]
    load_before = os.getloadavg()[0]
    xacts_before = pg.commits() if pg else 0
    spawned = time.monotonic()
    procs = [ctx.Process(target=worker_main, args=(job, start, results)) for job in jobs]
    for p in procs:
        p.start()
    try:
        collect(results, procs, "ready", READY_TIMEOUT_S)
        t0 = time.monotonic()
        start.set()
        done = collect(results, procs, "done", RUN_TIMEOUT_S)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    wall = max(d["t"] for d in done.values()) - t0
    xacts = pg.commits() - xacts_before if pg else None  # workers have exited: their stats are flushed
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    if isinstance(storage, RDBStorage):
        storage.engine.dispose()
    n = len(trials)
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    return {
        "config": cfg.name,
        **asdict(cfg),
        "seed": seed,
        "startup_s": t0 - spawned,
        "wall_s": wall,
        "trials": n,
        "states": {k: v for k, v in states.items() if v},
        "overshoot": n - args.trials,
        "trials_per_s": n / wall,
        "ideal_wall_s": n * sleep_s / cfg.workers,
        "overhead_ms_per_trial": (wall * cfg.workers / n - sleep_s) * 1000,
        "cpu_ms_per_trial": sum(d["cpu_s"] for d in done.values()) / n * 1000,
        "peak_rss_mb_per_worker": sorted(round(d["rss_kib"] / 1024, 1) for d in done.values()),
        "pg_commits_per_trial": xacts / n if xacts is not None else None,
        # One line per storage operation, each appended under the file lock and fsync-ed.
        "journal_appends_per_trial": count_lines(location) / n if cfg.storage == "journal" else None,
        "load1_before": load_before,
    }


def count_lines(path: str) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


class Postgres:
    """A throwaway database on the local server: created on enter, dropped (forcibly) on exit."""

    def __init__(self) -> None:
        self.db = f"hpopipe_bench_{uuid.uuid4().hex[:10]}"
        self.url = (
            f"postgresql+psycopg2://{PG_SERVER['user']}@{PG_SERVER['host']}:{PG_SERVER['port']}/{self.db}"
        )
        self.server_version = ""

    def _admin(self, sql: str) -> Any:
        conn = psycopg2.connect(dbname="postgres", **PG_SERVER)
        conn.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()

    def __enter__(self) -> Postgres:
        self.server_version = self._admin("SHOW server_version")[0]
        self._admin(f'CREATE DATABASE "{self.db}"')
        return self

    def commits(self) -> int:
        """Transactions committed in the benchmark database so far (the server's statistics)."""
        return int(self._admin(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{self.db}'")[0])

    def __exit__(self, *exc: object) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def configs(workers: int, storages: list[str]) -> list[Config]:
    out = []
    for storage in storages:
        counts = [1] if storage == "sqlite" else [workers, 1]
        out += [Config(storage, w, s) for w in counts for s in ("tpe", "random")]
    return out


def location_for(cfg: Config, pg: Postgres | None, tmp: Path, run: int) -> str:
    if cfg.storage == "postgres":
        assert pg is not None
        return pg.url  # one database, a fresh study per run
    if cfg.storage == "journal":
        return str(tmp / f"run{run}.journal")
    return f"sqlite:///{tmp / f'run{run}.db'}"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == name]

        def med(key: str, mine: list[dict[str, Any]] = mine) -> float:
            return float(statistics.median(r[key] for r in mine))

        rows.append(
            {
                "config": name,
                "storage": mine[0]["storage"],
                "workers": mine[0]["workers"],
                "sampler": mine[0]["sampler"],
                "runs": len(mine),
                "trials_median": med("trials"),
                "overshoot_max": max(r["overshoot"] for r in mine),
                "wall_s_median": med("wall_s"),
                "ideal_wall_s": mine[0]["ideal_wall_s"],
                "trials_per_s_median": med("trials_per_s"),
                "overhead_ms_per_trial_median": med("overhead_ms_per_trial"),
                "overhead_ms_per_trial_range": [
                    min(r["overhead_ms_per_trial"] for r in mine),
                    max(r["overhead_ms_per_trial"] for r in mine),
                ],
                "cpu_ms_per_trial_median": med("cpu_ms_per_trial"),
                "peak_rss_mb_per_worker_median": statistics.median(
                    x for r in mine for x in r["peak_rss_mb_per_worker"]
                ),
                "writes_per_trial_median": writes_per_trial(mine),
                "startup_s_median": med("startup_s"),
                "load1_median": med("load1_before"),
            }
        )
    return rows


def writes_per_trial(runs: list[dict[str, Any]]) -> float | None:
    """PostgreSQL commits or journal appends per trial (None for SQLite, which has no counter here)."""
    values = [r["pg_commits_per_trial"] or r["journal_appends_per_trial"] for r in runs]
    return statistics.median(values) if None not in values else None


def machine_info(pg: Postgres | None) -> dict[str, Any]:
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "nproc_usable": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "sqlalchemy": version("sqlalchemy"),
        "psycopg2": psycopg2.__version__.split()[0],
        "postgres_server": pg.server_version if pg else None,
        "loadavg_start": os.getloadavg(),
    }


def markdown(info: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Sleep objective: {args.sleep_ms:g} ms per trial in {args.epochs} reported epochs, hpopipe's "
        f"6-parameter space, 3 user attrs; {args.trials} trials per run (shared by the workers), "
        f"medians of {args.rounds} interleaved rounds.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['nproc_usable']} usable), {info['platform']}, "
        f"Python {info['python']}; Optuna {info['optuna']}, SQLAlchemy {info['sqlalchemy']}, "
        f"psycopg2 {info['psycopg2']}, PostgreSQL server {info['postgres_server']}; {info['date_utc']}. "
        f"Load average (1/5/15 min) at start {fmt_load(info['loadavg_start'])}, at end "
        f"{fmt_load(info['loadavg_end'])}: the machine is shared with other work.",
        "",
        "overhead = wall x workers / trials - sleep (worker-time per trial beyond the sleep, "
        "waiting for a CPU included); CPU = user + system of the workers per trial (the PostgreSQL "
        "server's CPU is not in it); writes = PostgreSQL commits or journal-file appends per trial "
        "(each one a WAL flush or an fsync under the journal's file lock).",
        "",
        "| storage | workers | sampler | trials | overshoot (max) | wall s (ideal) | trials/s "
        "| overhead ms/trial (min-max) | CPU ms/trial | writes/trial | peak RSS MB/worker | load1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["overhead_ms_per_trial_range"]
        lines.append(
            f"| {r['storage']} | {r['workers']} | {r['sampler']} | {r['trials_median']:g} "
            f"| {r['overshoot_max']} | {r['wall_s_median']:.2f} ({r['ideal_wall_s']:.2f}) "
            f"| {r['trials_per_s_median']:.1f} | {r['overhead_ms_per_trial_median']:.1f} "
            f"({lo:.1f}-{hi:.1f}) | {r['cpu_ms_per_trial_median']:.1f} "
            f"| {fmt_opt(r['writes_per_trial_median'])} | {r['peak_rss_mb_per_worker_median']:.0f} "
            f"| {r['load1_median']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def fmt_opt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def fmt_load(load: list[float] | tuple[float, ...]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=40, help="trials per run, shared by the workers")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep-ms", type=float, default=50.0, help="sleep per trial")
    parser.add_argument("--epochs", type=int, default=5, help="intermediate values per trial")
    parser.add_argument("--storages", default="postgres,journal,sqlite", help="comma-separated subset to run")
    parser.add_argument(
        "--start-method",
        default="forkserver",
        choices=["forkserver", "spawn"],
        help="how worker processes start (not timed either way; forkserver starts faster)",
    )
    parser.add_argument("--out", default="storage_overhead", help="results file stem")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storages = args.storages.split(",")
    plan = configs(args.workers, storages)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, Postgres() if "postgres" in storages else nullcontext() as pg:
        info = machine_info(pg)
        for rnd in range(args.rounds):  # rounds outermost: drift in machine load hits every config alike
            for cfg in plan:
                loc = location_for(cfg, pg, Path(tmp), len(runs))
                runs.append(run_one(cfg, loc, args, rnd, pg if cfg.storage == "postgres" else None))
                r = runs[-1]
                print(
                    f"round {rnd} {cfg.name:<22} wall {r['wall_s']:6.2f} s  {r['trials']} trials "
                    f"(+{r['overshoot']})  overhead {r['overhead_ms_per_trial']:6.1f} ms/trial  "
                    f"cpu {r['cpu_ms_per_trial']:5.1f} ms/trial  load1 {r['load1_before']:.2f}",
                    flush=True,
                )
    info["loadavg_end"] = os.getloadavg()
    rows = summarise(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"args": vars(args), "machine": info, "summary": rows, "runs": runs}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(payload, indent=2) + "\n")
    text = markdown(info, rows, args)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
