"""Sweep overhead: a real hpopipe sweep against a bare PyTorch replay of its own trials, and a
hand-written Optuna script against a bare replay of its trials, interleaved in one run.

The sweep is ``hpopipe.sweep.runner.sweep`` as the ``hpo`` stage calls it: Optuna on a real SQLite
file, MLflow tracking (``MlflowTracker``, ``MLFLOW_TRACKING_URI`` -> a temp SQLite file), the
trainer's crash-recovery checkpoints and the configured pruner. Afterwards every trial is read back
from the study (parameters, seed, the epochs it actually ran and their validation scores) and
re-trained by ``benchmarks/bare.py``: plain PyTorch, no hpopipe code, same model, optimiser,
schedule, batches, seed and epochs. The replay must reproduce every per-epoch validation score
exactly (``replay_exact``; the script exits 1 when it does not, after writing its results).

The peer (``benchmarks/peer.py``) is what a typical user writes: Optuna + SQLite, TPE and the same
Hyperband pruner, a DataLoader, no tracking. Its own trials are replayed by the same bare loop.

    ratio       = sweep / bare(sweep's trials)        wall and CPU seconds, means over rounds
    peer_ratio  = peer  / bare(peer's trials)
    vs_peer     = ratio / peer_ratio                  (< 1: hpopipe costs less than the peer)

Rounds are ABBA-interleaved (sweep, bare, peer, peer-bare, then the reverse); each measurement is
stored with the 1-minute load average before and after it. Timed: the ``sweep()`` call end to end,
the peer's sweep (tensor conversion included), and the bare replays (tensor conversion plus every
trial). Not timed: interpreter start-up, imports, data preparation, the fit/validation split, and
MLflow store/experiment creation (``tracker_setup_s``, reported apart). A throwaway warm-up of each
side runs first, so lazy imports are not charged to the first round.

With ``--profile always`` (or ``auto`` when the ratio is above the issue's target), one more sweep
runs under cProfile and its time is split into parts that add up to the whole ``sweep()`` call
(see :func:`split_profile`).

Usage: ``python benchmarks/overhead.py [--quick] [--out-dir DIR] [--trials N] [--epochs N]``
``[--storage sqlite]`` runs hpopipe's sweeps on a SQLite file instead of the default journal (what
the journal saves); ``[--tracking off]`` runs them without MLflow (what tracking costs).
Writes ``DIR/overhead.json`` (default ``benchmarks/results/``) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import importlib
import inspect
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bare  # benchmarks/ is on sys.path: the scripts run as `python benchmarks/X.py`
import common
import numpy as np
import optuna
import pandas as pd
import peer
import torch
import yaml

from hpopipe.config import Params, load_params, parse_params
from hpopipe.data import prepare, read_table, to_arrays
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import resolve as storage_spec
from hpopipe.tracking import MlflowTracker, NullTracker, writer_for

ROOT = common.ROOT
# The issue's "done when": sweep loop / bare loop on the default table and on 20k x 40.
TARGETS = {"default": 1.3, "synthetic": 1.05}
EXPERIMENT = "hpopipe-overhead-bench"
SIDES = ("sweep", "bare", "peer", "peer_bare")


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    """A prepared table and the params a sweep over it uses."""

    name: str
    description: str
    params: Params
    train: pd.DataFrame
    schema: dict[str, Any]
    tracking: bool = True  # False: the sweep runs with tracking off (what MLflow costs)


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
    frame = common.synthetic_frame(rows, features, base.seed)
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


# --------------------------------------------------------------------------- the four sides


@dataclass
class Timed:
    """One measurement: wall and CPU seconds of this process, load average around it."""

    wall_s: float
    cpu_s: float
    load_before: float | None
    load_after: float | None


@contextlib.contextmanager
def timed(out: list[Timed]) -> Any:
    load, start, cpu = common.load1(), time.perf_counter(), time.process_time()
    yield
    out.append(Timed(time.perf_counter() - start, time.process_time() - cpu, load, common.load1()))


def run_sweep(
    workload: Workload, out: list[Timed], profile: cProfile.Profile | None = None
) -> tuple[dict[str, Any], float, int]:
    """One real sweep on fresh storage (hpo.storage: journal or SQLite; MLflow SQLite; checkpoints)
    in a temp dir.

    Returns the bare loop's job for its trials, the MLflow store set-up seconds and the MLflow runs.
    """
    with tempfile.TemporaryDirectory(prefix="hpopipe-bench-") as tmp:
        workdir = Path(tmp)
        raw = workload.params.model_dump(mode="json")
        raw["hpo"]["checkpoint_dir"] = str(workdir / "checkpoints")
        params = parse_params(raw, "benchmark params")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
        # chdir: MLflow's default artifact root is relative to the cwd; keep it out of the repo.
        with contextlib.chdir(workdir):
            start = time.perf_counter()
            # The writer the hpo stage would take for this sweep (a process, on an idle core).
            writer = writer_for(params.hpo.n_trials, params.hpo.n_workers)
            tracker = MlflowTracker(EXPERIMENT, writer) if workload.tracking else NullTracker()
            setup_s = time.perf_counter() - start
            with timed(out):
                if profile is not None:
                    profile.enable()
                spec = storage_spec(params.hpo.storage, root=workdir)  # study.db, or study.journal
                study = sweep(params, workload.train, workload.schema, spec, tracker)
                if profile is not None:
                    profile.disable()
            runs = 0
            if isinstance(tracker, MlflowTracker):
                client = tracker._client
                runs = len(client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id]))
        return common.job_of(params, workload.schema, study, torch.get_num_threads()), setup_s, runs


def split(workload: Workload, job: dict[str, Any]) -> tuple[Any, Any]:
    """The sweep's fit/validation split, made by the bare side's own code (outside any timing)."""
    x, y = to_arrays(workload.train)
    return bare.split(job, x, y)


def run_bare(job: dict[str, Any], data: tuple[Any, Any], out: list[Timed]) -> list[list[float]]:
    with timed(out):
        return bare.replay(job, *data)


def run_peer(
    workload: Workload, job: dict[str, Any], data: tuple[Any, Any], out: list[Timed]
) -> dict[str, Any]:
    """The hand-written Optuna script on fresh SQLite storage; the bare job for its trials."""
    params = workload.params
    space = yaml.safe_load((ROOT / "params.yaml").read_text())["search_space"]
    pruner = {"min_resource": 1, "reduction_factor": 3}
    cfg = params.hpo.pruner
    if getattr(cfg, "name", None) == "hyperband":
        pruner = {"min_resource": cfg.min_resource, "reduction_factor": cfg.reduction_factor}  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory(prefix="hpopipe-peer-") as tmp:
        with timed(out):
            study = peer.run(
                job,
                space,
                *data,
                storage=Path(tmp) / "peer.db",
                n_trials=params.hpo.n_trials,
                pruner=pruner,
                patience=params.train.patience,
                seed=params.seed,
            )
        return peer.job_of_peer(job, study, params.seed)


# --------------------------------------------------------------------------- profile


Key = tuple[str, int, str]  # how cProfile names a function: (file, first line, name)


def resolve(name: str) -> Callable[..., Any] | None:
    """``module:Qual.name`` -> the function, or None when the library no longer has it."""
    module, _, qual = name.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj  # type: ignore[no-any-return]


def _key(func: Any) -> Key | None:
    code = getattr(inspect.unwrap(func), "__code__", None)
    return None if code is None else (code.co_filename, code.co_firstlineno, code.co_name)


class Profile:
    """Cumulative seconds of named functions in a cProfile run, and which of them never ran."""

    def __init__(self, stats: dict[Key, Any]) -> None:
        self.stats = stats
        self.missing: set[str] = set()

    def _entry(self, name: str) -> Any:
        func = resolve(name)
        key = None if func is None else _key(func)
        if key is None or key not in self.stats:
            self.missing.add(name)
            return None
        return self.stats[key]

    def total(self, *names: str) -> float:
        """Seconds spent in each named function and below, summed."""
        return sum(float(e[3]) for e in map(self._entry, names) if e is not None)

    def edge(self, callee: str, caller: str) -> float:
        """Seconds of ``callee`` when called directly from ``caller``."""
        entry, func = self._entry(callee), resolve(caller)
        key = None if func is None else _key(func)
        if entry is None or key is None:
            return 0.0
        found = entry[4].get(key)
        if found is None:
            self.missing.add(f"{callee} <- {caller}")
            return 0.0
        return float(found[3])

    def with_block(self, caller: str) -> float:
        """Seconds the ``with <contextmanager>`` statements of ``caller`` spend entering and leaving."""
        cm = "contextlib:_GeneratorContextManager"
        return self.edge(f"{cm}.__enter__", caller) + self.edge(f"{cm}.__exit__", caller)


OBJECTIVE = "hpopipe.sweep.objective:Objective.__call__"
RUN_TRIAL = "hpopipe.sweep.workers:run_trial"
WORK = "hpopipe.sweep.workers:work"
JOIN = "hpopipe.sweep.runner:join"
SWEEP = "hpopipe.sweep.runner:sweep"
LOOP = "hpopipe.training.loop"
TRACKER = "hpopipe.tracking:MlflowTracker"


def split_profile(prof: Profile) -> dict[str, float]:
    """Split the profiled ``sweep()`` call into parts that add up to it exactly.

    The call tree as the library has it now: ``sweep`` -> ``join`` -> ``workers.work`` (claim a
    trial, ``run_trial`` -> ``Objective.__call__`` -> ``training.loop.fit``, tell, after-trial
    hooks) and around it the study set-up, the parent MLflow run and the sweep's end. Each named
    part is a disjoint subtree; each "rest of" line is its parent minus its named children, so the
    parts add up to the ``sweep()`` total. A hooked function that no longer exists, or never ran,
    is listed in ``hooks_not_seen`` (the split then needs updating to the library).
    """
    inside = {
        "train: batches (_Loop.train_epoch)": prof.total(f"{LOOP}:_Loop.train_epoch"),
        "train: validation forward (predict)": prof.total(f"{LOOP}:predict"),
        "train: validation metric (metrics.score)": prof.total("hpopipe.metrics:score"),
        "train: build model": prof.total("hpopipe.training.models:build"),
        "train: copy of the best state (weights_copy in fit)": prof.edge(
            f"{LOOP}:weights_copy", f"{LOOP}:fit"
        ),
        "optuna: trial.report": prof.total("optuna.trial:Trial.report"),
        "optuna: trial.should_prune": prof.total("optuna.trial:Trial.should_prune"),
        "optuna: sample_trial (suggest + sweep position)": prof.total(
            "hpopipe.sweep.trial_steps:sample_trial"
        ),
        "optuna: set_user_attr in the objective": prof.edge("optuna.trial:Trial.set_user_attr", OBJECTIVE),
        "checkpoint: save": prof.total("hpopipe.training.checkpoints:save"),
        "checkpoint: gather state (_Loop.state)": prof.total(f"{LOOP}:_Loop.state"),
        "mlflow: trial run start + batch + end": prof.with_block(OBJECTIVE),
        "mlflow: buffered log calls": sum(
            prof.edge(f"{TRACKER}.{m}", OBJECTIVE)
            for m in ("log_history", "log_metrics", "log_series", "set_tags")
        ),
    }
    objective = prof.total(OBJECTIVE)
    parts = dict(inside)
    parts["rest of the objective (fit's tensors, checks, values, warm-start lookup)"] = objective - sum(
        inside.values()
    )
    worker = {
        "optuna: claim a trial (fail stale, ask, budget lock)": prof.total(
            "hpopipe.sweep.workers:claim_trial"
        ),
        "optuna: tell": prof.total(RUN_TRIAL) - objective,
        "after-trial hooks (progress, failure guard, callbacks)": prof.total(
            "hpopipe.sweep.workers:after_trial"
        ),
        "sweep gate (lifecycle state read per trial)": prof.total("hpopipe.sweep.workers:sweep_gate"),
    }
    parts.update(worker)
    work = prof.total(WORK)
    parts["rest of the worker loop (heartbeat thread start/stop)"] = (
        work - prof.total(RUN_TRIAL) - sum(v for k, v in worker.items() if k != "optuna: tell")
    )
    parts["join: validation split, hooks, warm-start index"] = prof.total(JOIN) - work
    around = {
        "mlflow: parent 'hpo' run start/end": prof.with_block(SWEEP),
        "sweep end: outcome metrics, lifecycle, end hooks": prof.total(
            "hpopipe.sweep.runner:outcome_metrics", "hpopipe.sweep.runner:_end"
        ),
    }
    parts.update(around)
    parts["sweep setup (checks, data hash, storage, study, warm start)"] = (
        prof.total(SWEEP) - prof.total(JOIN) - sum(around.values())
    )
    return parts


def profile_sweep(workload: Workload) -> dict[str, Any]:
    """One more sweep under cProfile, its time split into named parts (profiler-inflated seconds)."""
    profiler = cProfile.Profile()
    job, _, _ = run_sweep(workload, [], profiler)
    prof = Profile(pstats.Stats(profiler).stats)  # type: ignore[attr-defined]
    parts = split_profile(prof)
    total = prof.total(SWEEP)
    epochs, n_trials = sum(t["epochs"] for t in job["trials"]), len(job["trials"])
    compute = sum(v for k, v in parts.items() if k.startswith("train:") and "best state" not in k)
    negative = {k: round(v, 4) for k, v in parts.items() if v < -1e-3}
    return {
        "note": "cProfile adds a cost to every Python call, so Python-heavy parts (Optuna, SQLAlchemy, "
        "MLflow) look larger than they are unprofiled; training compute is mostly C++ and barely changes",
        "profiled_sweep_s": round(total, 3),
        "parts_sum_s": round(sum(parts.values()), 3),
        "parts_consistent": not negative and not prof.missing,
        "negative_parts": negative,
        "hooks_not_seen": sorted(prof.missing),
        "training_compute_s": round(compute, 3),
        "epochs": epochs,
        "trials": n_trials,
        "parts": {
            label: {
                "s": round(s, 3),
                "ms_per_epoch": round(1000 * s / max(epochs, 1), 2),
                "ms_per_trial": round(1000 * s / max(n_trials, 1), 1),
                "pct_of_sweep": round(100 * s / total, 1) if total else None,
            }
            for label, s in sorted(parts.items(), key=lambda kv: -kv[1])
        },
        "top_functions_by_own_time": _top(prof.stats, 15),
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
    peer_total_epochs: int = 0
    runs: dict[str, list[Timed]] = field(default_factory=lambda: {side: [] for side in SIDES})
    order: list[str] = field(default_factory=list)
    tracker_setup_s: list[float] = field(default_factory=list)
    mlflow_runs: int = 0
    trials_identical_across_sweeps: bool = True
    bare_max_score_deviation: float = 0.0
    profile: dict[str, Any] | None = None

    def mean(self, side: str, what: str = "wall_s") -> float:
        return (
            float(np.mean([getattr(t, what) for t in self.runs[side]])) if self.runs[side] else float("nan")
        )

    def ratio(self, a: str, b: str, what: str = "wall_s") -> float:
        return self.mean(a, what) / self.mean(b, what)

    def summary(self) -> dict[str, Any]:
        ratio, ratio_cpu = self.ratio("sweep", "bare"), self.ratio("sweep", "bare", "cpu_s")
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k not in ("runs", "profile")}
        out["runs"] = {side: [t.__dict__ for t in ts] for side, ts in self.runs.items()}
        out["replay_exact"] = self.bare_max_score_deviation == 0.0
        out["target_ratio"] = TARGETS.get(self.workload)
        out.update(
            {
                f"{side}_{what}_mean": round(self.mean(side, what), 3)
                for side in SIDES
                for what in ("wall_s", "cpu_s")
                if self.runs[side]
            }
        )
        out["ratio"] = round(ratio, 3)
        out["ratio_cpu"] = round(ratio_cpu, 3)
        out["ratio_best_of_rounds"] = round(
            min(t.wall_s for t in self.runs["sweep"]) / min(t.wall_s for t in self.runs["bare"]), 3
        )
        out["ratio_incl_tracker_setup"] = round(
            (self.mean("sweep") + float(np.mean(self.tracker_setup_s))) / self.mean("bare"), 3
        )
        out["overhead_ms_per_epoch"] = round(
            1000 * (self.mean("sweep") - self.mean("bare")) / max(self.total_epochs, 1), 2
        )
        out["bare_ms_per_epoch"] = round(1000 * self.mean("bare") / max(self.total_epochs, 1), 2)
        if self.runs["peer"]:
            peer_ratio, peer_cpu = self.ratio("peer", "peer_bare"), self.ratio("peer", "peer_bare", "cpu_s")
            out["peer_ratio"], out["peer_ratio_cpu"] = round(peer_ratio, 3), round(peer_cpu, 3)
            out["hpopipe_vs_peer"] = round(ratio / peer_ratio, 3)
            out["hpopipe_vs_peer_cpu"] = round(ratio_cpu / peer_cpu, 3)
        target = TARGETS.get(self.workload)
        out["meets_target"] = None if target is None else ratio <= target
        loads = [
            x for ts in self.runs.values() for t in ts for x in (t.load_before, t.load_after) if x is not None
        ]
        out["load_range"] = [min(loads), max(loads)] if loads else None
        if self.profile is not None:
            out["profile"] = self.profile
        return out


def warm_up(workload: Workload, with_peer: bool) -> None:
    """A tiny untimed run of every side: pays lazy imports and first-call costs once."""
    tiny = Workload(workload.name, "", with_budget(workload.params, 2, 2), workload.train, workload.schema)
    job, _, _ = run_sweep(tiny, [])
    data = split(tiny, job)
    run_bare(job, data, [])
    if with_peer:
        run_bare(run_peer(tiny, job, data, []), data, [])


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return [(t["params"], t["state"], t["epochs"]) for t in a["trials"]] == [
        (t["params"], t["state"], t["epochs"]) for t in b["trials"]
    ]


def measure(workload: Workload, rounds: int, profile: str, with_peer: bool) -> Result:
    """ABBA-interleaved runs of every side of one workload."""
    sides = SIDES if with_peer else SIDES[:2]
    job: dict[str, Any] | None = None
    peer_job: dict[str, Any] | None = None
    data: tuple[Any, Any] | None = None
    result: Result | None = None
    for r in range(rounds):
        for side in sides if r % 2 == 0 else tuple(reversed(sides)):
            runs: list[Timed] = []
            if side == "sweep":
                got, setup_s, mlflow_runs = run_sweep(workload, runs)
                if job is None:
                    job, data = got, split(workload, got)
                    result = _new_result(workload, got, mlflow_runs)
                assert result is not None
                result.tracker_setup_s.append(setup_s)
                result.trials_identical_across_sweeps &= _same(job, got)
            elif side == "bare":
                assert job is not None and data is not None and result is not None
                scores = run_bare(job, data, runs)
                deviation = bare.max_deviation(job, scores)
                result.bare_max_score_deviation = max(result.bare_max_score_deviation, deviation)
            elif side == "peer":
                assert job is not None and data is not None and result is not None
                got_peer = run_peer(workload, job, data, runs)
                if peer_job is None:
                    peer_job = got_peer
                    result.peer_total_epochs = sum(t["epochs"] for t in got_peer["trials"])
            else:
                assert peer_job is not None and data is not None
                run_bare(peer_job, data, runs)
            assert result is not None
            result.runs[side] += runs
            result.order.append(side)
            t = runs[-1]
            common.log(
                f"  round {r + 1}: {side:<9} {t.wall_s:7.2f} s wall {t.cpu_s:7.2f} s cpu  "
                f"load {t.load_before} -> {t.load_after}"
            )
    assert result is not None
    target = TARGETS.get(workload.name, 1.0)
    if profile == "always" or (profile == "auto" and result.ratio("sweep", "bare") > target):
        common.log(f"  profiling one more sweep (ratio target {target})")
        result.profile = profile_sweep(workload)
    return result


def _new_result(workload: Workload, job: dict[str, Any], mlflow_runs: int) -> Result:
    states: dict[str, int] = {}
    for t in job["trials"]:
        states[t["state"]] = states.get(t["state"], 0) + 1
    return Result(
        workload=workload.name,
        description=workload.description,
        n_trials=len(job["trials"]),
        states=states,
        max_epochs=workload.params.train.max_epochs,
        total_epochs=sum(t["epochs"] for t in job["trials"]),
        mlflow_runs=mlflow_runs,
    )


# --------------------------------------------------------------------------- reporting


def table(results: list[Result]) -> str:
    head = (
        f"{'workload':<10} {'trials C/P/F':>13} {'epochs':>7} {'sweep s':>8} {'bare s':>8} "
        f"{'ratio':>6} {'cpu':>6} {'peer':>6} {'vs peer':>7} {'exact':>6} {'load':>11}"
    )
    lines = [head, "-" * len(head)]
    for res in results:
        s = res.summary()
        cpf = "/".join(str(res.states.get(k, 0)) for k in ("COMPLETE", "PRUNED", "FAIL"))
        load = "-".join(f"{x:.1f}" for x in s["load_range"]) if s["load_range"] else "?"
        lines.append(
            f"{res.workload:<10} {f'{res.n_trials} ({cpf})':>13} {res.total_epochs:>7} "
            f"{s['sweep_wall_s_mean']:>8.2f} {s['bare_wall_s_mean']:>8.2f} {s['ratio']:>6.2f} "
            f"{s['ratio_cpu']:>6.2f} {s.get('peer_ratio', float('nan')):>6.2f} "
            f"{s.get('hpopipe_vs_peer', float('nan')):>7.2f} {s['replay_exact']!s:>6} {load:>11}"
        )
    return "\n".join(lines)


def profile_table(res: Result) -> str:
    assert res.profile is not None
    prof = res.profile
    lines = [
        f"where the {res.workload} sweep's time goes (cProfile, {prof['profiled_sweep_s']} s profiled, "
        f"parts sum {prof['parts_sum_s']} s, {prof['trials']} trials, {prof['epochs']} epochs):",
        f"  {'part':<72} {'s':>7} {'ms/epoch':>9} {'ms/trial':>9} {'%':>6}",
    ]
    for label, row in prof["parts"].items():
        lines.append(
            f"  {label:<72} {row['s']:>7.3f} {row['ms_per_epoch']:>9.2f} {row['ms_per_trial']:>9.1f} "
            f"{row['pct_of_sweep']:>6.1f}"
        )
    if not prof["parts_consistent"]:
        lines.append(
            f"  SPLIT OUT OF DATE: negative {prof['negative_parts']}, not seen {prof['hooks_not_seen']}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, help="n_trials for every workload (default: per workload)")
    parser.add_argument(
        "--epochs", type=int, help="train.max_epochs for every workload (default: per workload)"
    )
    parser.add_argument("--rows", type=int, help="rows of the synthetic table (default 20000; --quick 3000)")
    parser.add_argument("--features", type=int, default=40, help="columns of the synthetic table")
    parser.add_argument("--rounds", type=int, help="ABBA rounds, one run of every side each (default 4)")
    parser.add_argument(
        "--workloads", nargs="+", choices=("default", "synthetic"), default=["default", "synthetic"]
    )
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument(
        "--peer", action=argparse.BooleanOptionalAction, default=True, help="the hand-written Optuna peer"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1, as train.threads: auto)"
    )
    parser.add_argument(
        "--storage",
        choices=("sqlite", "journal"),
        default="journal",
        help="the sweep's hpo.storage (default journal, as params.yaml; sqlite: what the journal saves)",
    )
    parser.add_argument(
        "--tracking",
        choices=("mlflow", "off"),
        default="mlflow",
        help="the sweep's tracking (default mlflow, as by default; off: what MLflow costs)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny budgets: a smoke test of every side")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS, help="where overhead.json goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network calls from a benchmark
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one log line per trial is noise here
    rounds = args.rounds or (2 if args.quick else 4)
    base = load_params(ROOT / "params.yaml")
    base = parse_params(
        {
            **base.model_dump(mode="json"),
            "hpo": {**base.hpo.model_dump(mode="json"), "storage": args.storage},
        },
        "benchmark params",
    )
    budgets = {  # the repo's params for its own table; a few short trials for the big one
        "default": (args.trials or (4 if args.quick else None), args.epochs or (4 if args.quick else None)),
        "synthetic": (args.trials or (3 if args.quick else 8), args.epochs or (3 if args.quick else 8)),
    }
    rows = args.rows or (3000 if args.quick else 20_000)
    facts = common.machine()
    results = []
    for name in args.workloads:
        trials, epochs = budgets[name]
        workload = (
            default_workload(base, trials, epochs)
            if name == "default"
            else synthetic_workload(base, rows, args.features, trials or 8, epochs or 8)
        )
        common.log(
            f"{name}: {workload.description}, n_trials={workload.params.hpo.n_trials}, "
            f"max_epochs={workload.params.train.max_epochs}"
        )
        workload = dataclasses.replace(workload, tracking=args.tracking == "mlflow")
        warm_up(workload, args.peer)
        results.append(measure(workload, rounds, args.profile, args.peer))
    report = {
        "targets": TARGETS,
        "method": {
            "ratio": "mean(sweep) / mean(bare replay of the sweep's trials), ABBA-interleaved rounds",
            "ratio_cpu": "the same in process CPU seconds: steadier on a shared machine, blind to disk waits",
            "peer_ratio": "mean(hand-written Optuna script) / mean(bare replay of its own trials)",
            "hpopipe_vs_peer": "ratio / peer_ratio (< 1: hpopipe's machinery costs less than the peer's)",
            "replay_exact": "the bare replay reproduced every per-epoch validation score of the study",
            "timed": "sweep(): hpopipe.sweep.runner.sweep end to end; bare: tensor conversion + all trials",
            "not_timed": "start-up, imports, data preparation, the split, MLflow store creation",
            "rounds": rounds,
            "torch_threads": torch.get_num_threads(),
            "storage": args.storage,
            "tracking": args.tracking,
        },
        "machine": facts,
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "workloads": {res.workload: res.summary() for res in results},
    }
    common.write_json(args.out_dir / "overhead.json", report)
    print(table(results))
    for res in results:
        if res.profile is not None:
            print()
            print(profile_table(res))
    inexact = [r.workload for r in results if r.bare_max_score_deviation != 0.0]
    if inexact:
        sys.exit(f"the bare replay did not reproduce the study's scores on {inexact}: not like for like")


if __name__ == "__main__":
    main()
