"""Sweep overhead: a real hpopipe sweep against the same trials trained by a bare PyTorch loop.

The sweep is ``hpopipe.sweep.runner.sweep`` exactly as the ``hpo`` stage calls it: Optuna on a real
SQLite file, MLflow tracking (``MlflowTracker``, ``MLFLOW_TRACKING_URI`` -> a temp SQLite file),
per-epoch crash-recovery checkpoints and the configured pruner. Afterwards every trial is read back
from the study (params, state, epochs actually run = number of reported intermediate values) and
re-trained by :func:`bare_trial`: a minimal hand-written loop (same model from
``hpopipe.training.models.build``, AdamW, same batch size, same seed, same number of epochs, the same
per-epoch validation score that early stopping and pruning need), with no storage, no checkpoints,
no tracking and no copy of the best weights.

    ratio = sweep_s / bare_s

Timing: ``time.perf_counter`` around the ``sweep()`` call (end to end: data hashing, study
creation, sampling, training, pruning, checkpoints, MLflow runs) and around the bare loop (tensor
conversion plus every trial). Not timed: interpreter start-up, imports, data preparation, and the
MLflow store/experiment creation (reported apart as ``tracker_setup_s``). A throwaway warm-up sweep
runs first so lazy imports inside Optuna/MLflow/SQLAlchemy are not charged to the first round.
Noise is damped by ABBA interleaving: round 1 runs sweep then bare, round 2 bare then sweep (each
sweep on fresh storage; seeded, so it reruns the same trials, which is checked); the ratio uses the
mean of each side; the best-of-rounds ratio and a CPU-time ratio (``time.process_time``) are
reported too. torch runs on one thread by default (``--threads``): the tabular MLPs here gain
little from a second one, and on a shared machine two OpenMP threads turn other processes' load
into large, random slowdowns of the training side.

When a workload's ratio is above the target (1.10), one more sweep runs under cProfile and the
time is split into where it goes (training compute, Optuna storage, pruner, checkpoints, MLflow...).

Usage: ``python benchmarks/overhead.py [--quick] [--trials N] [--epochs N] [--rows N]``
Writes ``benchmarks/results/overhead.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import inspect
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import optuna.study._optimize as optuna_optimize
import pandas as pd
import torch
from sklearn.datasets import make_classification
from torch import nn

from hpopipe import metrics
from hpopipe.atomic import atomic_write_text
from hpopipe.config import Params, load_params, parse_params
from hpopipe.data import prepare, read_table, to_arrays
from hpopipe.seeding import derive_seed
from hpopipe.space import suggest
from hpopipe.sweep.objective import Objective
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import MlflowTracker
from hpopipe.training import checkpoints, loop
from hpopipe.training.loop import Task, hyper, task_of
from hpopipe.training.models import build
from hpopipe.training.split import SweepData, split_validation

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "overhead.json"
TARGET = 1.10
EXPERIMENT = "hpopipe-overhead-bench"


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """A prepared table and the params a sweep over it uses."""

    name: str
    description: str
    params: Params
    train: pd.DataFrame
    schema: dict[str, Any]


def with_budget(params: Params, n_trials: int | None, max_epochs: int | None, **data: Any) -> Params:
    """A copy of ``params`` with a different budget (and data section), validated again."""
    raw = params.model_dump(mode="json")
    if n_trials is not None:
        raw["hpo"]["n_trials"] = n_trials
    if max_epochs is not None:
        raw["train"]["max_epochs"] = max_epochs
    raw["data"].update(data)
    return parse_params(raw, "benchmark params")


def default_workload(base: Params, trials: int | None, epochs: int | None) -> Workload:
    """The repository's own table and params.yaml (budget optionally reduced)."""
    params = with_budget(base, trials, epochs)
    prepared = prepare(read_table(ROOT / params.data.path), params.data, params.seed)
    rows = len(prepared.train)
    return Workload(
        "default",
        f"{params.data.path} ({rows} train rows x {len(prepared.schema.feature_columns)} features)",
        params,
        prepared.train,
        prepared.schema.plain(),
    )


def synthetic_workload(base: Params, rows: int, features: int, trials: int, epochs: int) -> Workload:
    """A bigger table from ``make_classification`` where an epoch takes a fraction of a second."""
    x, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=features // 2,
        n_redundant=features // 4,
        flip_y=0.05,
        random_state=base.seed,
    )
    frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(features)])
    frame["target"] = y
    params = with_budget(
        base,
        trials,
        epochs,
        path="synthetic.parquet",
        target="target",
        task="classification",
        drop_columns=[],
    )
    prepared = prepare(frame, params.data, params.seed)
    return Workload(
        "synthetic",
        f"make_classification ({len(prepared.train)} train rows x {features} features)",
        params,
        prepared.train,
        prepared.schema.plain(),
    )


# --------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class TrialSpec:
    """What the bare loop needs to redo one trial of the study."""

    number: int
    state: str
    params: dict[str, Any]
    seed: int
    values: tuple[float, ...]  # the reported per-epoch validation scores, in epoch order

    @property
    def epochs(self) -> int:
        return len(self.values)


@dataclass
class SweepRun:
    sweep_s: float
    sweep_cpu_s: float
    tracker_setup_s: float
    trials: list[TrialSpec]
    mlflow_runs: int


def _params_in(workload: Workload, workdir: Path) -> Params:
    raw = workload.params.model_dump(mode="json")
    raw["hpo"]["checkpoint_dir"] = str(workdir / "checkpoints")
    return parse_params(raw, "benchmark params")


def read_trials(study: optuna.Study, seed: int) -> list[TrialSpec]:
    """Every trial of the study with the epochs it actually ran (its reported steps)."""
    specs = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        if steps and steps != list(range(1, len(steps) + 1)):
            raise RuntimeError(f"trial {t.number}: unexpected reported steps {steps}")
        # The trial's seed, as the objective derives it (its place in the run, else its number).
        origin = t.user_attrs.get("position", t.user_attrs.get("retry_of", t.number))
        values = tuple(float(t.intermediate_values[s]) for s in steps)
        specs.append(
            TrialSpec(t.number, t.state.name, dict(t.params), derive_seed(seed, "trial", origin), values)
        )
    return specs


def run_sweep(workload: Workload, profile: cProfile.Profile | None = None) -> SweepRun:
    """One real sweep on fresh storage (Optuna SQLite, MLflow SQLite, checkpoints) in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="hpopipe-bench-") as tmp:
        workdir = Path(tmp)
        params = _params_in(workload, workdir)
        uri = f"sqlite:///{workdir / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        # chdir: MLflow's default artifact root is relative to the cwd; keep it out of the repo.
        with contextlib.chdir(workdir):
            start = time.perf_counter()
            tracker = MlflowTracker(EXPERIMENT)
            setup_s = time.perf_counter() - start
            start, cpu = time.perf_counter(), time.process_time()
            if profile is not None:
                profile.enable()
            study = sweep(params, workload.train, workload.schema, sqlite_spec(workdir / "study.db"), tracker)
            if profile is not None:
                profile.disable()
            sweep_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
            runs = len(
                tracker._client.search_runs(
                    [tracker._client.get_experiment_by_name(EXPERIMENT).experiment_id]
                )
            )
        return SweepRun(sweep_s, cpu_s, setup_s, read_trials(study, params.seed), runs)


# --------------------------------------------------------------------------- the bare loop


def bare_trial(
    params: Params,
    spec: TrialSpec,
    task: Task,
    fit: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, np.ndarray],
) -> list[float]:
    """Train one trial the way a hand-written script would: no storage, checkpoints or tracking.

    Seeded like the sweep's trial (same init, same batch order, same dropout masks), so its
    per-epoch scores should equal the study's intermediate values.
    """
    torch.manual_seed(spec.seed)
    model = build(params.model, spec.params, fit[0].shape[1], task.n_outputs)
    lr, weight_decay, batch_size = hyper(spec.params, params.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(spec.seed)
    x, y = fit
    scores = []
    for _ in range(spec.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue  # as hpopipe: BatchNorm cannot train on one row
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            proba = torch.softmax(model(val[0]), dim=1).double().numpy()
        scores.append(metrics.score(task.metric, val[1], proba, task.n_classes))
    return scores


def split(workload: Workload) -> tuple[SweepData, Task]:
    """The sweep's own fit/validation split (same seed), outside the timed region."""
    params = workload.params
    x, y = to_arrays(workload.train)
    task = task_of(workload.schema, params.hpo.metric)
    if task.kind != "classification":
        raise SystemExit("the bare loop only covers classification workloads")
    return split_validation(x, y, task, params.data.val_size, derive_seed(params.seed, "validation")), task


def run_bare(workload: Workload, trials: list[TrialSpec]) -> tuple[float, float, float]:
    """Wall and CPU seconds of the bare loop over ``trials``, and its largest deviation from the study."""
    data, task = split(workload)
    start, cpu = time.perf_counter(), time.process_time()
    fit = (
        torch.from_numpy(np.array(data.fit[0], dtype=np.float32)),
        torch.from_numpy(data.fit[1].astype(np.int64)),
    )
    val = (torch.from_numpy(np.array(data.val[0], dtype=np.float32)), data.val[1])
    deviation = 0.0
    for spec in trials:
        if spec.epochs == 0:
            continue  # failed before its first epoch: nothing to redo
        scores = bare_trial(workload.params, spec, task, fit, val)
        deviation = max(deviation, max(abs(a - b) for a, b in zip(scores, spec.values, strict=True)))
    return time.perf_counter() - start, time.process_time() - cpu, deviation


# --------------------------------------------------------------------------- profile


Key = tuple[str, int, str]  # how cProfile names a function: (file, first line, name)


def _key(func: Any) -> Key:
    code = inspect.unwrap(func).__code__
    return (code.co_filename, code.co_firstlineno, code.co_name)


def _total(stats: dict[Key, Any], func: Any) -> float:
    """Cumulative seconds spent in ``func`` and below."""
    entry = stats.get(_key(func))
    return float(entry[3]) if entry else 0.0


def _edge(stats: dict[Key, Any], callee: Any, caller: Any) -> float:
    """Cumulative seconds of ``callee`` when called directly from ``caller``."""
    entry = stats.get(_key(callee))
    return float(entry[4].get(_key(caller), (0, 0, 0, 0.0))[3]) if entry else 0.0


def _with_block(stats: dict[Key, Any], caller: Any) -> float:
    """Seconds a ``with <contextmanager>`` in ``caller`` spends entering and leaving (not in the block)."""
    cm = contextlib._GeneratorContextManager
    return _edge(stats, cm.__enter__, caller) + _edge(stats, cm.__exit__, caller)


def split_profile(stats: dict[Key, Any]) -> dict[str, float]:
    """Split the profiled ``sweep()`` call into parts that add up to it exactly."""
    objective = Objective.__call__
    inside = {
        "train: batches (train_epoch)": _total(stats, loop._Loop.train_epoch),
        "train: validation forward (predict)": _total(stats, loop.predict),
        "train: validation metric (metrics.score)": _total(stats, metrics.score),
        "train: build model": _total(stats, build),
        "train: deepcopy of best state": _edge(stats, copy.deepcopy, loop.fit),
        "optuna: trial.report (storage write)": _total(stats, optuna.trial.Trial.report),
        "optuna: trial.should_prune (pruner reads trials)": _total(stats, optuna.trial.Trial.should_prune),
        "optuna: sampling (suggest.suggest -> suggest_*)": _total(stats, suggest.suggest),
        "optuna: trial.set_user_attr": _total(stats, optuna.trial.Trial.set_user_attr),
        "checkpoint: torch.save + rename": _total(stats, checkpoints.save),
        "checkpoint: gather state dict": _total(stats, loop._Loop.state),
        "mlflow: trial run start/log_params/end": _with_block(stats, objective),
        "mlflow: log_history": _total(stats, MlflowTracker.log_history),
        "mlflow: set_tags": _total(stats, MlflowTracker.set_tags),
    }
    total = _total(stats, sweep)
    optimize = _total(stats, optuna_optimize._optimize)
    parent = _with_block(stats, sweep)
    parts = dict(inside)
    parts["rest of objective/fit (tensor copies, loss checks, ...)"] = _total(stats, objective) - sum(
        inside.values()
    )
    parts["optuna: per-trial bookkeeping (create, tell, callbacks)"] = optimize - _total(stats, objective)
    parts["mlflow: parent 'hpo' run start/end"] = parent
    parts["sweep setup (hash data, open study, split)"] = total - optimize - parent
    return parts


def profile_sweep(workload: Workload) -> dict[str, Any]:
    """One more sweep under cProfile, its time split into named parts (profiler-inflated seconds)."""
    profiler = cProfile.Profile()
    run = run_sweep(workload, profiler)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    parts = split_profile(stats)
    total = _total(stats, sweep)
    epochs, n_trials = sum(t.epochs for t in run.trials), len(run.trials)
    compute = sum(v for k, v in parts.items() if k.startswith("train:") and "deepcopy" not in k)
    commits = [
        (v[1], v[2]) for k, v in stats.items() if k[2] == "<method 'commit' of 'sqlite3.Connection' objects>"
    ]
    return {
        "note": "cProfile adds a cost to every Python call, so Python-heavy parts (Optuna, SQLAlchemy, "
        "MLflow) look larger than they are unprofiled; training compute is mostly C++ and barely changes",
        "profiled_sweep_s": round(total, 3),
        "training_compute_s": round(compute, 3),
        "epochs": epochs,
        "trials": n_trials,
        "sqlite_commits": {"calls": sum(c for c, _ in commits), "s": round(sum(t for _, t in commits), 3)},
        "parts": {
            label: {
                "s": round(s, 3),
                "ms_per_epoch": round(1000 * s / max(epochs, 1), 2),
                "ms_per_trial": round(1000 * s / max(n_trials, 1), 1),
                "pct_of_sweep": round(100 * s / total, 1),
            }
            for label, s in sorted(parts.items(), key=lambda kv: -kv[1])
        },
        "top_functions_by_own_time": _top(stats, 15),
    }


def _top(stats: dict[Any, Any], n: int) -> list[dict[str, Any]]:
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:n]
    return [
        {"function": f"{Path(path).name}:{line}:{name}", "tottime_s": round(tt, 3), "calls": nc}
        for (path, line, name), (_cc, nc, tt, _ct, _callers) in rows
    ]


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    workload: str
    description: str
    n_trials: int
    states: dict[str, int]
    max_epochs: int
    total_epochs: int
    sweep_s: list[float] = field(default_factory=list)
    bare_s: list[float] = field(default_factory=list)
    sweep_cpu_s: list[float] = field(default_factory=list)
    bare_cpu_s: list[float] = field(default_factory=list)
    tracker_setup_s: list[float] = field(default_factory=list)
    mlflow_runs: int = 0
    trials_identical_across_sweeps: bool = True
    bare_max_score_deviation: float = 0.0
    profile: dict[str, Any] | None = None

    @property
    def ratio(self) -> float:
        return float(np.mean(self.sweep_s) / np.mean(self.bare_s))

    def summary(self) -> dict[str, Any]:
        sweep_s, bare_s = float(np.mean(self.sweep_s)), float(np.mean(self.bare_s))
        out = asdict(self)
        out.update(
            {
                "sweep_s_mean": round(sweep_s, 3),
                "bare_s_mean": round(bare_s, 3),
                "ratio": round(self.ratio, 3),
                "ratio_best_of_rounds": round(min(self.sweep_s) / min(self.bare_s), 3),
                "ratio_cpu": round(float(np.mean(self.sweep_cpu_s) / np.mean(self.bare_cpu_s)), 3),
                "ratio_incl_tracker_setup": round(
                    (sweep_s + float(np.mean(self.tracker_setup_s))) / bare_s, 3
                ),
                "overhead_ms_per_epoch": round(1000 * (sweep_s - bare_s) / max(self.total_epochs, 1), 2),
                "bare_ms_per_epoch": round(1000 * bare_s / max(self.total_epochs, 1), 2),
                "meets_target": self.ratio <= TARGET,
            }
        )
        return out


def warm_up(workload: Workload) -> None:
    """A tiny untimed sweep + bare run: pays lazy imports and first-call costs once."""
    tiny = Workload(workload.name, "", with_budget(workload.params, 2, 2), workload.train, workload.schema)
    run = run_sweep(tiny)
    run_bare(tiny, run.trials)


def _same(a: list[TrialSpec], b: list[TrialSpec]) -> bool:
    return [(t.params, t.state, t.epochs) for t in a] == [(t.params, t.state, t.epochs) for t in b]


def measure(workload: Workload, rounds: int, profile: str) -> Result:
    """ABBA-interleaved sweeps and bare runs of one workload."""
    first: SweepRun | None = None
    result: Result | None = None
    for r in range(rounds):
        order = ("sweep", "bare") if r % 2 == 0 else ("bare", "sweep")
        for side in order:
            if side == "sweep":
                run = run_sweep(workload)
                _log(f"  round {r + 1}: sweep {run.sweep_s:7.2f} s  load {_load()}")
                if first is None:
                    first, result = run, _new_result(workload, run)
                assert result is not None
                result.sweep_s.append(run.sweep_s)
                result.sweep_cpu_s.append(run.sweep_cpu_s)
                result.tracker_setup_s.append(run.tracker_setup_s)
                result.trials_identical_across_sweeps &= _same(first.trials, run.trials)
            else:
                assert first is not None and result is not None
                seconds, cpu_s, deviation = run_bare(workload, first.trials)
                _log(f"  round {r + 1}: bare  {seconds:7.2f} s  load {_load()}")
                result.bare_s.append(seconds)
                result.bare_cpu_s.append(cpu_s)
                result.bare_max_score_deviation = max(result.bare_max_score_deviation, deviation)
    assert result is not None
    if profile == "always" or (profile == "auto" and result.ratio > TARGET):
        _log(
            f"  ratio {result.ratio:.2f} > {TARGET}: profiling one more sweep"
            if profile == "auto"
            else "  profiling"
        )
        result.profile = profile_sweep(workload)
    return result


def _new_result(workload: Workload, run: SweepRun) -> Result:
    states: dict[str, int] = {}
    for t in run.trials:
        states[t.state] = states.get(t.state, 0) + 1
    return Result(
        workload=workload.name,
        description=workload.description,
        n_trials=len(run.trials),
        states=states,
        max_epochs=workload.params.train.max_epochs,
        total_epochs=sum(t.epochs for t in run.trials),
        mlflow_runs=run.mlflow_runs,
    )


# --------------------------------------------------------------------------- reporting


def machine() -> dict[str, Any]:
    """Facts that decide whether two result files are comparable."""
    versions = {}
    for dist in ("hpopipe", "torch", "optuna", "mlflow", "sqlalchemy", "scikit-learn", "numpy", "pandas"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
        "src_has_uncommitted_changes": dirty,
        "versions": versions,
    }


def table(results: list[Result]) -> str:
    head = (
        f"{'workload':<10} {'trials C/P/F':>13} {'epochs':>7} {'sweep s':>8} {'bare s':>8} "
        f"{'ratio':>6} {'best-of':>7} {'cpu':>6} {'ovh ms/ep':>9} {'bare ms/ep':>10}  target<={TARGET}"
    )
    lines = [head, "-" * len(head)]
    for res in results:
        s = res.summary()
        cpf = "/".join(str(res.states.get(k, 0)) for k in ("COMPLETE", "PRUNED", "FAIL"))
        trials = f"{res.n_trials} ({cpf})"
        lines.append(
            f"{res.workload:<10} {trials:>13} {res.total_epochs:>7} {s['sweep_s_mean']:>8.2f} "
            f"{s['bare_s_mean']:>8.2f} {s['ratio']:>6.2f} {s['ratio_best_of_rounds']:>7.2f} "
            f"{s['ratio_cpu']:>6.2f} "
            f"{s['overhead_ms_per_epoch']:>9.1f} {s['bare_ms_per_epoch']:>10.1f}  "
            f"{'ok' if s['meets_target'] else 'ABOVE'}"
        )
    return "\n".join(lines)


def profile_table(res: Result) -> str:
    assert res.profile is not None
    prof = res.profile
    lines = [
        f"where the {res.workload} sweep's time goes (cProfile, {prof['profiled_sweep_s']} s profiled, "
        f"{prof['trials']} trials, {prof['epochs']} epochs):",
        f"  {'part':<56} {'s':>7} {'ms/epoch':>9} {'ms/trial':>9} {'%':>6}",
    ]
    for label, row in prof["parts"].items():
        lines.append(
            f"  {label:<56} {row['s']:>7.3f} {row['ms_per_epoch']:>9.2f} {row['ms_per_trial']:>9.1f} "
            f"{row['pct_of_sweep']:>6.1f}"
        )
    return "\n".join(lines)


def _load() -> str:
    """1-minute load average: other work on the machine shows up in the timings."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, help="n_trials for every workload (default: per workload)")
    parser.add_argument(
        "--epochs", type=int, help="train.max_epochs for every workload (default: per workload)"
    )
    parser.add_argument("--rows", type=int, help="rows of the synthetic table (default 30000; --quick 5000)")
    parser.add_argument("--features", type=int, default=40, help="columns of the synthetic table")
    parser.add_argument("--rounds", type=int, help="ABBA rounds, one sweep + one bare run each (default 2)")
    parser.add_argument(
        "--workloads", nargs="+", choices=("default", "synthetic"), default=["default", "synthetic"]
    )
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 0 keeps torch's own choice (default 1: see the README)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny budgets: a smoke test in well under a minute"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a benchmark
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one log line per trial is noise here
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    rounds = args.rounds or (1 if args.quick else 2)
    base = load_params(ROOT / "params.yaml")
    # Per-workload budgets: the repo's params for its own table; a few short trials for the big one.
    budgets = {
        "default": (args.trials or (8 if args.quick else None), args.epochs or (10 if args.quick else None)),
        "synthetic": (args.trials or (4 if args.quick else 8), args.epochs or (4 if args.quick else 8)),
    }
    rows = args.rows or (5000 if args.quick else 30000)
    facts = machine()
    results = []
    for name in args.workloads:
        trials, epochs = budgets[name]
        workload = (
            default_workload(base, trials, epochs)
            if name == "default"
            else synthetic_workload(base, rows, args.features, trials or 8, epochs or 8)
        )
        _log(
            f"{name}: {workload.description}, n_trials={workload.params.hpo.n_trials}, "
            f"max_epochs={workload.params.train.max_epochs}"
        )
        if not results:
            warm_up(workload)
        results.append(measure(workload, rounds, args.profile))
    report = {
        "target_ratio": TARGET,
        "method": {
            "ratio": "mean(sweep_s) / mean(bare_s) over ABBA-interleaved rounds (sweep,bare | bare,sweep)",
            "ratio_best_of_rounds": "min(sweep_s) / min(bare_s)",
            "ratio_cpu": "the same with process CPU seconds: steadier on a shared machine, but blind to "
            "time spent waiting on disk (SQLite commits, fsync)",
            "timed": "sweep(): hpopipe.sweep.runner.sweep end to end; bare: tensor conversion + all trials",
            "not_timed": "interpreter start-up, imports, data preparation, the fit/val split for the bare "
            "loop, MLflow store + experiment creation (tracker_setup_s, reported apart)",
            "bare_loop": "training.models.build + AdamW + same batch size/seed/epochs + per-epoch validation "
            "score; no storage, checkpoints, tracking, or copy of the best weights",
            "rounds": rounds,
        },
        "machine": facts,
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "workloads": {res.workload: res.summary() for res in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2, default=_plain) + "\n")
    print(table(results))
    for res in results:
        if res.profile is not None:
            print()
            print(profile_table(res))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


if __name__ == "__main__":
    main()
