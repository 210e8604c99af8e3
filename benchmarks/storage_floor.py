"""What each Optuna storage costs per trial by itself: plain Optuna, no training, no hpopipe loop.

A study with the default space (8 parameters, one conditional), TPE and Hyperband as params.yaml
sets them, runs 30 trials of an objective that only reports 7 made-up epoch values. What is left
is Optuna: sampling, pruning, and the storage's writes and reads. Storages, interleaved round by
round on fresh files:

- ``memory``: ``InMemoryStorage``, the floor;
- ``journal-optuna``: Optuna's ``JournalFileBackend`` as its docs open it (an ``fsync`` per append);
- ``journal-hpopipe``: hpopipe's study journal (:mod:`hpopipe.sweep.journal_file`: ``flock``, a
  torn tail cut, ``fsync`` only when a trial is created or finished);
- ``sqlite-optuna``: ``RDBStorage("sqlite:///...")`` with SQLite's defaults;
- ``sqlite-hpopipe``: hpopipe's SQLite (WAL, ``synchronous=NORMAL``).

The bare training loop of the default sweep takes about 64 ms a trial on this machine
(docs/benchmarks.md): a storage's ms/trial against it is its share of the sweep/bare ratio.

Usage: ``python benchmarks/storage_floor.py [--rounds N] [--out-dir DIR]``; writes
``DIR/storage_floor.json`` (default ``benchmarks/results/storage/``).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import optuna

from hpopipe.sweep.journal_file import open_journal
from hpopipe.sweep.storage import sqlite_storage

N_TRIALS = 30
EPOCHS = 7


def _journal_optuna(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


STORAGES: dict[str, Callable[[Path], Any]] = {
    "memory": lambda d: optuna.storages.InMemoryStorage(),
    "journal-optuna": lambda d: _journal_optuna(d / "study.journal"),
    "journal-hpopipe": lambda d: open_journal(d / "study.journal"),
    "sqlite-optuna": lambda d: optuna.storages.RDBStorage(f"sqlite:///{d / 'study.db'}"),
    "sqlite-hpopipe": lambda d: sqlite_storage(d / "study.db"),
}


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 3e-2, log=True)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    trial.suggest_int("n_layers", 1, 3)
    trial.suggest_categorical("width", [32, 64, 128, 256])
    trial.suggest_float("dropout", 0.0, 0.5, step=0.05)
    trial.suggest_categorical("batch_size", [32, 64, 128])
    if trial.suggest_categorical("embedding", ["none", "periodic"]) == "periodic":
        trial.suggest_float("embedding_scale", 0.1, 3.0, log=True)
    rng = random.Random(trial.number)
    value = 0.0
    for step in range(1, EPOCHS + 1):
        value = 0.9 - 0.1 / step + rng.random() * 0.05 - math.log10(lr) * 0.001
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def one_sweep(make: Callable[[Path], Any]) -> tuple[float, list[Any]]:
    with tempfile.TemporaryDirectory(prefix="hpopipe-floor-") as tmp:
        study = optuna.create_study(
            study_name="floor",  # Hyperband hashes the name into each trial's bracket
            storage=make(Path(tmp)),
            sampler=optuna.samplers.TPESampler(seed=42),
            pruner=optuna.pruners.HyperbandPruner(1, 60, 3),
            direction="maximize",
        )
        start = time.perf_counter()
        study.optimize(objective, n_trials=N_TRIALS)
        elapsed = time.perf_counter() - start
        return elapsed, [(t.state.name, t.params) for t in study.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS / "storage")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seconds: dict[str, list[float]] = {name: [] for name in STORAGES}
    trials: dict[str, list[Any]] = {}
    loads = [common.load1()]
    for r in range(args.rounds):
        order = list(STORAGES) if r % 2 == 0 else list(reversed(STORAGES))  # ABBA: drift cancels
        for name in order:
            elapsed, seen = one_sweep(STORAGES[name])
            seconds[name].append(elapsed)
            trials.setdefault(name, seen)
        loads.append(common.load1())
    same = all(seen == trials["memory"] for seen in trials.values())
    rows = {
        name: {
            "median_s": round(statistics.median(times), 4),
            "ms_per_trial": round(statistics.median(times) / N_TRIALS * 1000, 2),
            "seconds": [round(t, 4) for t in times],
        }
        for name, times in seconds.items()
    }
    result = {
        "what": "plain Optuna, 30 trials x 7 reported epochs, TPE(seed=42), Hyperband(1, 60, 3), no training",
        "rounds": args.rounds,
        "same_trials_everywhere": same,
        "load1": loads,
        "machine": common.machine(),
        "storages": rows,
    }
    common.write_json(args.out_dir / "storage_floor.json", result)
    print(f"{'storage':<18} {'median s':>9} {'ms/trial':>9}")
    for name, row in rows.items():
        print(f"{name:<18} {row['median_s']:>9.3f} {row['ms_per_trial']:>9.2f}")
    print(f"same trials everywhere: {same}; load {loads[0]} -> {loads[-1]}")


if __name__ == "__main__":
    main()
