"""A fresh clone's ``dvc repro`` at this commit against the same at an older one, side by side.

Each round clones the repository twice into temporary folders (this checkout's ``HEAD``, or
``--new``, and ``--old``, by default ``ca38033``, the commit issue 16 measured), sets up nothing
new (the interpreter running this script, its virtual environment's ``bin`` first on ``PATH``;
``PYTHONPATH`` names the clone's own ``src``, so each runs its own code) and times ``dvc repro`` in
each, interleaved (old, new | new, old). Cloning is not timed. Per run: wall seconds, CPU seconds
of every process (``RUSAGE_CHILDREN``) and the 1-minute load average before it.

    ratio = mean(new wall) / mean(old wall)          (the issue's target: <= 0.6)

It takes minutes (every stage of the default pipeline, twice per round), so ``make bench`` runs it
only with ``REPRO=1``. ``--quick`` shrinks the same pipeline in both clones (3 trials x 5 epochs,
top 1 x 2 folds) as a smoke test; its figure is not the issue's.

    python benchmarks/repro_compare.py [--rounds 2] [--old ca38033] [--new HEAD] [--quick] [--out-dir DIR]

Writes DIR/repro_compare.json (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import yaml

ROOT = common.ROOT
TARGET = 0.6
QUICK = {"hpo": {"n_trials": 3}, "train": {"max_epochs": 5}, "cv": {"top_k": 1, "folds": 2}}


def rev(commit: str) -> str:
    out = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def clone(commit: str, into: Path, quick: bool) -> Path:
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(into)], check=True)
    subprocess.run(
        ["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", commit], cwd=into, check=True
    )
    if quick:
        raw = yaml.safe_load((into / "params.yaml").read_text())
        for section, values in QUICK.items():
            raw[section].update(values)
        (into / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return into


def repro(work: Path) -> dict[str, Any]:
    env = common.child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(work / "src"), str(work)])
    for var in ("MLFLOW_TRACKING_URI", "HPOPIPE_TRACKING", "DVC_ROOT"):
        env.pop(var, None)  # as a fresh checkout runs it
    got = common.timed_run(["dvc", "repro"], work, env)
    return {
        "wall_s": round(got["wall_s"], 2),
        "cpu_s": round(got["cpu_s"], 2),
        "load_before": got["load_before"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--old", default="ca38033", help="the commit to compare with (issue 16's)")
    parser.add_argument("--new", default="HEAD", help="the commit measured (default: this checkout's HEAD)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, a shrunken pipeline")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    commits = {"old": rev(args.old), "new": rev(args.new)}
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None and shutil.which("dvc") is None:
        raise SystemExit("dvc is not on PATH (run from the project's virtual environment)")
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
            with tempfile.TemporaryDirectory(prefix=f"hpopipe-repro-{side}-") as tmp:
                work = clone(commits[side], Path(tmp) / "repo", args.quick)
                runs.append({"round": r, "side": side, "commit": commits[side][:7], **repro(work)})
                common.log(str(runs[-1]))
    mean = {s: statistics.mean(x["wall_s"] for x in runs if x["side"] == s) for s in ("old", "new")}
    cpu = {s: statistics.mean(x["cpu_s"] for x in runs if x["side"] == s) for s in ("old", "new")}
    result = {
        "what": "dvc repro of a fresh clone, this commit vs an older one, interleaved",
        "quick": args.quick,
        "commits": {k: v[:7] for k, v in commits.items()},
        "rounds": rounds,
        "machine": common.machine(),
        "mean_wall_s": {k: round(v, 2) for k, v in mean.items()},
        "mean_cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        "ratio_wall": round(mean["new"] / mean["old"], 3),
        "ratio_cpu": round(cpu["new"] / cpu["old"], 3),
        "target_ratio_wall": TARGET,
        "runs": runs,
    }
    common.write_json(args.out_dir / "repro_compare.json", result)
    print(
        f"fresh-clone dvc repro: {commits['new'][:7]} {mean['new']:.1f} s vs {commits['old'][:7]} "
        f"{mean['old']:.1f} s = {result['ratio_wall']:.2f}x wall, {result['ratio_cpu']:.2f}x CPU "
        f"(target <= {TARGET})"
    )


if __name__ == "__main__":
    main()
