"""One torch thread or two for one training process: the default table's sweep, interleaved.

Each round runs the same seeded sweep (``params.yaml``, ``--trials`` trials, SQLite in a temp folder,
no tracking) in a fresh process with 1 and with 2 torch intra-op threads, alternating which goes
first, and records wall time, process CPU time and the load average. Every run's trial values and
per-epoch intermediate values are compared with the first run's: ``same_values`` says whether the
thread count changed any result. This is how ``train.threads: auto`` was chosen (docs/benchmarks.md).

    python benchmarks/threads.py [--trials 10] [--rounds 3]

Writes benchmarks/results/threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

CHILD = """
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[1]))
import yaml
from hpopipe.config import parse_params
from hpopipe.data import prepare, read_table
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import NullTracker
from hpopipe.training import loop
loop.AUTO_THREADS = int(sys.argv[1])  # fit applies train.threads: auto; here it means the run's count
raw = yaml.safe_load(Path(sys.argv[3], "params.yaml").read_text())
raw["hpo"]["n_trials"] = int(sys.argv[2])
raw["data"]["path"] = str(Path(sys.argv[3], raw["data"]["path"]))
raw["hpo"]["checkpoint_dir"] = "ckpt"
params = parse_params(raw)
prepared = prepare(read_table(params.data.path), params.data, params.seed)
schema = prepared.schema.plain()
params = params.for_task(schema["task"])
t0, c0 = time.perf_counter(), time.process_time()
study = sweep(params, prepared.train, schema, sqlite_spec(Path("study.db").resolve()), NullTracker())
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
trials = [[t.number, t.state.name, t.value, sorted(t.intermediate_values.items())] for t in study.trials]
print(json.dumps({"wall_s": wall, "cpu_s": cpu, "torch_threads": torch.get_num_threads(), "trials": trials}))
"""


def run_once(threads: int, trials: int) -> dict[str, Any]:
    env = {**os.environ, "HPOPIPE_TRACKING": "off", "HPOPIPE_LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        load = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(threads), str(trials), str(REPO)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(threads=threads, load_before=load, load_after=os.getloadavg()[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for threads in (1, 2) if r % 2 == 0 else (2, 1):
            run = run_once(threads, args.trials)
            runs.append(run)
            print(
                f"round {r} threads {threads}: wall {run['wall_s']:.2f} s, cpu {run['cpu_s']:.2f} s, "
                f"load {run['load_before']:.1f}"
            )
    first = runs[0]["trials"]
    summary = {
        str(n): {
            "wall_s_median": statistics.median(r["wall_s"] for r in runs if r["threads"] == n),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs if r["threads"] == n),
        }
        for n in (1, 2)
    }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "trials": args.trials,
        "rounds": args.rounds,
        "same_values": all(r["trials"] == first for r in runs),
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "trials"} for r in runs],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "threads.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"same_values": result["same_values"], "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
