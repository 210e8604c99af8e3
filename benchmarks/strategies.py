"""Search strategies compared on the default data at a fixed trial budget.

For each strategy (random, tpe, tpe + hyperband, gp) and each of several seeds,
a real sweep (``hpopipe.sweep.runner.sweep``, SQLite storage, no MLflow) runs the same
budget on the prepared default data. Reported per strategy: the best validation
score reached (mean and spread over seeds), the wall time, and the time it took
to first reach the score random search ends with (its median over seeds): the
measure of "pruning gets there in well under half the time".

Usage: ``python benchmarks/strategies.py [--seeds 5] [--trials 20] [--epochs 30]``
Writes ``benchmarks/results/strategies.json`` and ``benchmarks/results/strategies.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from hpopipe.config import parse_params
from hpopipe.data import prepare, read_table
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import NullTracker

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"sampler": {"name": "random"}, "pruner": {"name": "none"}},
    "tpe": {"sampler": {"name": "tpe"}, "pruner": {"name": "none"}},
    "tpe+hyperband": {"sampler": {"name": "tpe"}, "pruner": {"name": "hyperband"}},
    "gp": {"sampler": {"name": "gp"}, "pruner": {"name": "none"}},
}


def params_for(strategy: str, seed: int, trials: int, epochs: int, workdir: Path) -> Any:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["seed"] = seed
    raw["data"]["path"] = str(REPO / raw["data"]["path"])
    raw["hpo"].update(n_trials=trials, checkpoint_dir=str(workdir / "ckpt"), **STRATEGIES[strategy])
    raw["train"].update(max_epochs=epochs)
    return parse_params(raw)


def run_one(strategy: str, seed: int, trials: int, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        params = params_for(strategy, seed, trials, epochs, Path(tmp))
        prep = prepare(read_table(params.data.path), params.data, params.seed)
        start = time.perf_counter()
        study = sweep(params, prep.train, prep.schema, sqlite_spec(Path(tmp) / "study.db"), NullTracker())
        wall = time.perf_counter() - start
        return {"strategy": strategy, "seed": seed, "wall_s": wall, "curve": best_curve(study)}


def best_curve(study: optuna.Study) -> list[tuple[float, float]]:
    """(seconds since the first trial started, best value so far) after each finished trial."""
    trials = [t for t in study.trials if t.datetime_complete is not None and t.datetime_start is not None]
    if not trials:
        return []
    origin = min(t.datetime_start for t in trials if t.datetime_start is not None)
    best, curve = float("-inf"), []
    for t in sorted(trials, key=lambda t: t.datetime_complete or origin):
        if t.value is not None:
            best = max(best, t.value)
        assert t.datetime_complete is not None
        curve.append(((t.datetime_complete - origin).total_seconds(), best))
    return curve


def time_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((seconds for seconds, best in curve if best >= target), None)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    random_best = [r["curve"][-1][1] for r in runs if r["strategy"] == "random"]
    target = statistics.median(random_best)
    table: dict[str, Any] = {"target_random_median_best": target, "strategies": {}}
    for name in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == name]
        bests = [r["curve"][-1][1] for r in mine]
        reach = [time_to_reach(r["curve"], target) for r in mine]
        reached = [t for t in reach if t is not None]
        table["strategies"][name] = {
            "best_mean": statistics.fmean(bests),
            "best_std": statistics.pstdev(bests),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in mine),
            "reached_target": f"{len(reached)}/{len(mine)}",
            "time_to_target_s_median": statistics.median(reached) if reached else None,
        }
    return table


def markdown(table: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"Default data, {args.trials} trials x {args.epochs} max epochs, {args.seeds} seeds per strategy; "
        f"target = random search's median best ({table['target_random_median_best']:.4f} macro-F1).",
        "",
        "| strategy | best val. macro-F1 (mean ± std) | wall s (mean) | reached target "
        "| time to target s (median) |",
        "|---|---|---|---|---|",
    ]
    for name, row in table["strategies"].items():
        ttt = "-" if row["time_to_target_s_median"] is None else f"{row['time_to_target_s_median']:.1f}"
        lines.append(
            f"| {name} | {row['best_mean']:.4f} ± {row['best_std']:.4f} | {row['wall_s_mean']:.1f} "
            f"| {row['reached_target']} | {ttt} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    for seed in range(args.seeds):  # seeds outermost: strategies interleave, so drift hits all alike
        for name in STRATEGIES:
            runs.append(run_one(name, seed, args.trials, args.epochs))
            print(f"seed {seed} {name:<14} {runs[-1]['wall_s']:6.1f} s  best {runs[-1]['curve'][-1][1]:.4f}")
    table = summarise(runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "strategies.json").write_text(
        json.dumps({"args": vars(args), **table, "runs": runs}, indent=2)
    )
    (RESULTS / "strategies.md").write_text(markdown(table, args))
    print(markdown(table, args))


if __name__ == "__main__":
    main()
