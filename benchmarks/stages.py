"""What a stage costs when it has (almost) nothing to do: imports, start-up and exit.

On a finished pipeline (run ``dvc repro`` first), for the code in this checkout ("new") and, with
``--old PATH``, another checkout of the project ("old"; e.g. ``git worktree add /tmp/old f3cf860``),
it times in fresh processes:

- ``import_<stage>``: ``python -c "import stages.<stage>"``, for every stage;
- ``run_<stage>``: ``python -m stages.<stage>`` for the stages whose run is cheap on a finished
  pipeline (``hpo`` with its budget met, ``select``, ``report``, ``cleanup``; ``hpo_untracked`` is the
  hpo stage with ``HPOPIPE_TRACKING=off``); cv and refit train, so only their import is timed;
- ``dvc_repro_noop``: ``dvc repro`` with every stage up to date (DVC's own cost, the same code).

Each code tree runs in its own copy of the workspace's outputs (so the old code never overwrites
the new code's outputs), with ``python -P`` and ``PYTHONPATH`` naming the tree, so each version
imports its own ``stages`` and ``hpopipe``. Rounds interleave old and new (alternating which goes
first); wall time, CPU time of the child (user + sys) and the load average are recorded per run,
and medians are reported.

    python benchmarks/stages.py [--old /tmp/old] [--rounds 3]

Writes benchmarks/results/stages.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # benchmarks/ is on sys.path: the scripts run as `python benchmarks/X.py`

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
STAGES = ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]
CHEAP_RUNS = ["hpo", "select", "report", "cleanup"]
# What a finished pipeline's stages read and write (the code is not copied: PYTHONPATH names it).
STATE = [
    "params.yaml",
    "dvc.yaml",
    "data",
    "artifacts",
    "metrics",
    "models",
    "plots",
    "reports",
    "mlflow.db",
    "mlruns",
    ".hpopipe",
]


def workspace_copy(source: Path, into: Path) -> Path:
    """The pipeline's state (not its code) copied to ``into``."""
    into.mkdir(parents=True)
    for name in STATE:
        path = source / name
        if path.is_dir():
            shutil.copytree(path, into / name, symlinks=True)
        elif path.exists():
            shutil.copy2(path, into / name)
    return into


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall and child CPU seconds of one command, which must succeed (:func:`common.timed_run`),
    with the load average before it under this script's key, ``load``."""
    run = common.timed_run(cmd, cwd, env)
    return {"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "load": run["load_before"]}


def env_for(tree: Path, **extra: str) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "src")])
    env.pop("DVC_STAGE", None)
    return env


def measure(tree: Path, ws: Path) -> dict[str, dict[str, float]]:
    """One round of every measurement for one code tree, in its workspace copy."""
    out: dict[str, dict[str, float]] = {}
    py = [sys.executable, "-P"]  # -P: the stages package comes from PYTHONPATH, not the folder
    for stage in STAGES:
        out[f"import_{stage}"] = timed([*py, "-c", f"import stages.{stage}"], ws, env_for(tree))
    for stage in CHEAP_RUNS:
        out[f"run_{stage}"] = timed([*py, "-m", f"stages.{stage}"], ws, env_for(tree))
    out["run_hpo_untracked"] = timed([*py, "-m", "stages.hpo"], ws, env_for(tree, HPOPIPE_TRACKING="off"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="another checkout of the project, to compare with")
    parser.add_argument("--workspace", type=Path, default=REPO, help="a finished pipeline (default: here)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trees = {"new": REPO, **({"old": args.old.resolve()} if args.old else {})}
    samples: dict[str, dict[str, list[dict[str, float]]]] = {name: {} for name in trees}
    noop: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        spaces = {name: workspace_copy(args.workspace, Path(tmp) / name) for name in trees}
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                for key, value in measure(trees[name], spaces[name]).items():
                    samples[name].setdefault(key, []).append(value)
                print(f"round {r} {name}: done (load {os.getloadavg()[0]:.1f})", flush=True)
            noop.append(timed(["dvc", "repro"], args.workspace, env_for(REPO)))
    medians = {
        name: {
            key: {f: statistics.median(s[f] for s in runs) for f in ("wall_s", "cpu_s", "load")}
            for key, runs in per.items()
        }
        for name, per in samples.items()
    }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "trees": {name: str(path) for name, path in trees.items()},
        "rounds": args.rounds,
        "median": medians,
        "dvc_repro_noop": {f: statistics.median(s[f] for s in noop) for f in ("wall_s", "cpu_s", "load")},
        "runs": samples,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stages.json").write_text(json.dumps(result, indent=2) + "\n")
    keys = list(medians["new"])
    print(f"{'measurement':24} " + " ".join(f"{n + ' wall/cpu s':>20}" for n in trees))
    for key in keys:
        cells = [f"{medians[n][key]['wall_s']:9.2f}/{medians[n][key]['cpu_s']:<9.2f}" for n in trees]
        print(f"{key:24} " + " ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
