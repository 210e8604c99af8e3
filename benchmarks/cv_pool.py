"""The cv stage, sequential (hpo.n_workers: 1) against a pool of 2 local processes.

Runs the real ``prepare`` and ``hpo`` stages once with the repository's params.yaml (tracking
off) in a scratch project, then the real ``python -m stages.cv`` with 1 and with 2 workers,
interleaved over rounds (1,2 then 2,1, ...), each timed whole (interpreter start-up and shut-down
included). Every run's results.csv and cv.json must be byte for byte those of the first
sequential run. The load average is recorded before each run: this machine is shared, so the
ratio of the two medians measured in the same run is the figure to read, not the seconds.

    python benchmarks/cv_pool.py [--rounds 3] [--trials 30]
    python benchmarks/cv_pool.py --rows 20000             # a 20k x 40 synthetic table: cv_pool_20000.json
    python benchmarks/cv_pool.py --quick --out-dir DIR      # smoke test: 1 round, 4 trials, top 2 x 2 folds

Writes DIR/cv_pool.json (default benchmarks/results/), or DIR/cv_pool_<rows>.json with ``--rows``.
With 2 workers the stage trains in its own process from the start while the other process
imports; on the default table the trainings are short, and that process may join in for few of
them or none; ``--rows`` gives it trainings long enough to share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def params(
    n_workers: int, trials: int, cv: dict[str, int] | None = None, table: Path | None = None
) -> dict[str, Any]:
    """The repository's params.yaml (on ``table``, target ``target``, when given); several workers
    need a shared storage (cv never opens it)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["path"] = str(REPO / raw["data"]["path"])
    if table is not None:
        raw["data"].update(path=str(table), target="target")
    raw["hpo"].update(n_trials=trials, n_workers=n_workers)
    raw["cv"].update(cv or {})
    if n_workers > 1:
        raw["hpo"]["storage"] = "journal"
    return raw


def synthetic_table(path: Path, rows: int, seed: int = 42) -> Path:
    """The synthetic table of overhead.py (``rows`` x 40) written as CSV."""
    common.synthetic_frame(rows, 40, seed).to_csv(path, index=False)
    return path


def stage(root: Path, module: str) -> tuple[float, float]:
    """Run one stage in ``root`` (tracking off); its wall time and CPU time (all its processes)."""
    got = common.timed_run([sys.executable, "-m", module], root, common.child_env(HPOPIPE_TRACKING="off"))
    return got["wall_s"], got["cpu_s"]


def outputs(root: Path) -> bytes:
    return (root / "artifacts/cv/results.csv").read_bytes() + (root / "metrics/cv.json").read_bytes()


def _wall(pair: list[dict[str, Any]], n: int) -> float:
    return float(next(x["wall_s"] for x in pair if x["n_workers"] == n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=30, help="hpo.n_trials of the finished sweep")
    parser.add_argument("--top-k", type=int, help="cv.top_k (default: params.yaml's)")
    parser.add_argument("--folds", type=int, help="cv.folds (default: params.yaml's)")
    parser.add_argument(
        "--rows", type=int, default=0, help="a synthetic table of this many rows x 40 (0: params.yaml's)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke: 1 round, 4 trials, top 2 x 2 folds")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.trials, args.top_k, args.folds = 1, 4, 2, 2
    cv_set = {k: v for k, v in (("top_k", args.top_k), ("folds", args.folds)) if v}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = synthetic_table(root / "synthetic.csv", args.rows) if args.rows else None
        (root / "params.yaml").write_text(yaml.safe_dump(params(1, args.trials, cv_set, table)))
        stage(root, "stages.prepare")
        stage(root, "stages.hpo")
        reference: bytes | None = None
        for r in range(args.rounds):
            for n in (1, 2) if r % 2 == 0 else (2, 1):  # interleaved: drift in load hits both alike
                (root / "params.yaml").write_text(yaml.safe_dump(params(n, args.trials, cv_set, table)))
                load = os.getloadavg()[0]
                wall, cpu = stage(root, "stages.cv")
                got = outputs(root)
                reference = reference or got
                runs.append(
                    {
                        "round": r,
                        "n_workers": n,
                        "wall_s": round(wall, 2),
                        "cpu_s": round(cpu, 2),
                        "load_1min": load,
                        "identical": got == reference,
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
        cv = yaml.safe_load((root / "params.yaml").read_text())["cv"]
    rounds = [[x for x in runs if x["round"] == r] for r in range(args.rounds)]
    per_round = [round(_wall(pair, 1) / _wall(pair, 2), 3) for pair in rounds]
    medians = {n: statistics.median(x["wall_s"] for x in runs if x["n_workers"] == n) for n in (1, 2)}
    result = {
        "what": "python -m stages.cv on a finished pipeline (tracking off), 1 vs 2 workers",
        "table": f"synthetic {args.rows} x 40" if args.rows else "params.yaml's",
        "rows": args.rows,
        "top_k": cv["top_k"],
        "folds": cv["folds"],
        "trials": args.trials,
        "rounds": args.rounds,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "load_end": os.getloadavg(),
        },
        "commit": common.machine()["git_commit"],
        "target": 1.6,
        "load_range": [min(x["load_1min"] for x in runs), max(x["load_1min"] for x in runs)],
        "note": "read the ratio, measured interleaved, beside the load average",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "median_wall_s": {str(n): round(v, 2) for n, v in medians.items()},
        "speedup_2_vs_1": round(medians[1] / medians[2], 3),
        "speedup_per_round": per_round,
        "all_identical": all(x["identical"] for x in runs),
        "runs": runs,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = f"cv_pool_{args.rows}.json" if args.rows else "cv_pool.json"
    (args.out_dir / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if not result["all_identical"]:
        raise SystemExit("the pooled cv stage wrote other results than the sequential one")


if __name__ == "__main__":
    main()
