"""Trials per minute and peak memory per worker: the hpo stage with 1 and with 2 local workers.

Runs the real ``python -m stages.hpo`` (journal storage for both, so only the
number of workers differs) in a scratch project on a synthetic 20,000 x 40
table (on the 455-row default table a trial takes a fraction of a second and
process start-up would dominate), with
pruning off and a fixed number of epochs so every trial does the same work.
Configurations are interleaved over rounds and the median is reported; the
figure that matters is the ratio of the two, measured in the same run.

    python benchmarks/workers.py [--trials 16] [--rounds 3] [--epochs 5] [--rows 20000]
    python benchmarks/workers.py --quick --out-dir DIR      # smoke test

Each run records its wall time, its CPU seconds (every process it started) and the 1-minute load
average before it. Writes DIR/workers.json and workers.md (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import optuna
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET = 1.6  # the "done when": 2 local workers >= 1.6x one, whole stage


def params(n_workers: int, trials: int, epochs: int, data: Path) -> dict[str, Any]:
    """The repository's params.yaml on the benchmark table, with a fixed amount of work per trial."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(path=str(data), target="label")
    raw["hpo"].update(
        n_trials=trials, n_workers=n_workers, storage="journal", pruner={"name": "none"}, timeout=None
    )
    raw["train"].update(max_epochs=epochs, patience=epochs)  # no early stop: equal work per trial
    return raw


def env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HPOPIPE_TRACKING": "off"}


def table(root: Path, rows: int) -> Path:
    """A synthetic classification table big enough that a trial takes seconds, not milliseconds."""
    from sklearn.datasets import make_classification

    x, y = make_classification(rows, 40, n_informative=20, n_classes=3, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(40)]).assign(label=y)
    path = root / "table.csv"
    frame.to_csv(path, index=False)
    return path


def prepare(root: Path, trials: int, epochs: int, data: Path) -> Path:
    """Prepared data, once, shared by every run."""
    (root / "params.yaml").write_text(yaml.safe_dump(params(1, trials, epochs, data)))
    cmd = [sys.executable, "-m", "stages.prepare"]
    child_env = {**env(), "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    subprocess.run(cmd, cwd=root, env=child_env, check=True, capture_output=True)
    return root / "data" / "prepared"


def run(root: Path, prepared: Path, n_workers: int, trials: int, epochs: int, data: Path) -> dict[str, Any]:
    """One sweep from scratch; wall time, trials per minute and each worker's peak RSS."""
    work = root / f"w{n_workers}-{time.monotonic_ns()}"
    work.mkdir()
    shutil.copytree(prepared, work / "data" / "prepared")
    (work / "params.yaml").write_text(yaml.safe_dump(params(n_workers, trials, epochs, data)))
    child_env = {**env(), "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    got = common.timed_run([sys.executable, "-m", "stages.hpo"], work, child_env)
    wall, cpu, load = got["wall_s"], got["cpu_s"], got["load_before"]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(work / "artifacts/hpo/study.journal"))
    )
    (name,) = optuna.study.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    workers = {k: v for k, v in study.user_attrs.items() if k.startswith("worker:")}
    trials = study.trials
    per_worker = {k[7:]: sum(t.user_attrs.get("worker") == k[7:] for t in trials) for k in workers}
    shutil.rmtree(work)
    return {
        "n_workers": n_workers,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "load_before": load,
        "trials": len(trials),
        "trials_per_min": round(len(trials) / wall * 60, 2),
        "peak_rss_mb": [v.get("peak_rss_mb") for v in workers.values()],
        "trials_per_worker": sorted(per_worker.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 round, 4 trials x 2 epochs, 3000 rows"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.trials, args.epochs, args.rows = 1, 4, 2, 3000
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(REPO / "stages", root / "stages")
        data = table(root, args.rows)
        prepared = prepare(root, args.trials, args.epochs, data)
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)  # interleave: drift hits both alike
            for n in order:
                runs.append({"round": r, **run(root, prepared, n, args.trials, args.epochs, data)})
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for n in (1, 2):
        mine = [x for x in runs if x["n_workers"] == n]
        summary[n] = {
            "median_trials_per_min": round(statistics.median(x["trials_per_min"] for x in mine), 2),
            "median_wall_s": round(statistics.median(x["wall_s"] for x in mine), 2),
            "median_cpu_s": round(statistics.median(x["cpu_s"] for x in mine), 2),
            "max_peak_rss_mb_per_worker": max(max(x["peak_rss_mb"]) for x in mine),
        }
    speedup = summary[2]["median_trials_per_min"] / summary[1]["median_trials_per_min"]
    result = {
        "what": "python -m stages.hpo, synthetic table, journal storage, pruning off, fixed epochs",
        "rows": args.rows,
        "trials": args.trials,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "commit": common.machine()["git_commit"],
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "summary": summary,
        "speedup_2_vs_1": round(speedup, 3),
        "target": TARGET,
        "load_range": [min(x["load_before"] for x in runs), max(x["load_before"] for x in runs)],
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "workers.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| workers | trials/min (median) | wall s (median) | peak RSS per worker (MB, max) |",
        "|---|---|---|---|",
    ]
    for n in (1, 2):
        s = summary[n]
        cells = [n, s["median_trials_per_min"], s["median_wall_s"], s["max_peak_rss_mb_per_worker"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append(
        f"\n2 workers / 1 worker: **{speedup:.2f}x** trials per minute (target >= {TARGET} on 2 cores)."
    )
    load = os.getloadavg()
    lines.append(f"Load average at the end: {load}; {args.rounds} interleaved rounds, {args.trials} trials.")
    (args.out_dir / "workers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
