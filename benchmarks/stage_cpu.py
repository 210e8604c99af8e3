"""The whole hpo stage against a bare script: CPU seconds of ``python -m stages.hpo`` over those
of a standalone script that trains the same trials with no Optuna, MLflow or DVC.

In a scratch project (the repository's params.yaml, its table, ``prepare`` run once and not timed)
each round runs, interleaved (stage, bare | bare, stage):

- the stage: ``python -m stages.hpo`` from nothing (no study, no checkpoints, a new MLflow store:
  tracking on, as ``dvc repro`` runs it; ``--tracking off`` sets ``HPOPIPE_TRACKING=off``), its
  interpreter start-up, imports, sweep, exports and exit included;
- the bare script: ``python benchmarks/bare.py JOB --check`` in the same folder, which imports
  numpy, pandas, scikit-learn and torch, reads the prepared table, splits it and re-trains every
  trial of the stage's study (parameters, seeds and epochs read from the first stage run's study)
  for the epochs it ran, and exits 1 unless every per-epoch validation score equals the study's.

CPU time is the children's user + system seconds (``RUSAGE_CHILDREN``), so every process a stage
starts counts; wall time and the 1-minute load average before each run are stored beside it.

    ratio = mean(stage CPU) / mean(bare script CPU)      (the issue's target: <= 1.5)

    python benchmarks/stage_cpu.py [--rounds 3] [--quick] [--out-dir DIR]

Writes DIR/stage_cpu.json (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import yaml

ROOT = common.ROOT
TARGET = 1.5


def scratch_params(trials: int | None, epochs: int | None) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["path"] = str(ROOT / raw["data"]["path"])
    if trials:
        raw["hpo"]["n_trials"] = trials
    if epochs:
        raw["train"]["max_epochs"] = epochs
    return raw


def child(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; its wall and CPU seconds (all its processes) and the load average before it."""
    got = common.timed_run(cmd, cwd, env)
    return got | {"wall_s": round(got["wall_s"], 3), "cpu_s": round(got["cpu_s"], 3)}


def fresh(root: Path, n: int) -> Path:
    """A run folder with the prepared data and params.yaml, nothing else."""
    work = root / f"run{n}"
    work.mkdir()
    shutil.copytree(root / "data", work / "data")
    shutil.copy(root / "params.yaml", work / "params.yaml")
    return work


def job_from(work: Path, threads: int) -> dict[str, Any]:
    """The bare script's job: the finished stage's study, read back."""
    here = Path.cwd()
    os.chdir(work)
    try:
        import optuna

        from hpopipe.config import load_params
        from hpopipe.handoffs.schema import read_schema
        from hpopipe.sweep.storage import open_storage, resolve

        params = load_params(work / "params.yaml")
        schema = read_schema(work / "data/prepared/schema.json").plain()
        storage = open_storage(resolve(params.hpo.storage))
        (name,) = optuna.study.get_all_study_names(storage)
        study = optuna.load_study(study_name=name, storage=storage)
        return common.job_of(params, schema, study, threads)
    finally:
        os.chdir(here)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, help="hpo.n_trials (default: params.yaml's)")
    parser.add_argument("--epochs", type=int, help="train.max_epochs (default: params.yaml's)")
    parser.add_argument("--tracking", choices=("on", "off"), default="on")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round, 4 trials x 4 epochs")
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    trials, epochs = (args.trials or 4, args.epochs or 4) if args.quick else (args.trials, args.epochs)
    env = common.child_env(HPOPIPE_TRACKING=args.tracking)
    env.pop("MLFLOW_TRACKING_URI", None)  # the stage's own store in its folder, as in a fresh checkout
    runs: list[dict[str, Any]] = []
    job_path: Path | None = None
    with tempfile.TemporaryDirectory(prefix="hpopipe-stagecpu-") as tmp:
        root = Path(tmp)
        (root / "params.yaml").write_text(yaml.safe_dump(scratch_params(trials, epochs)))
        child([sys.executable, "-m", "stages.prepare"], root, env)
        n = 0
        for r in range(rounds):
            for side in ("stage", "bare") if r % 2 == 0 else ("bare", "stage"):
                n += 1
                work = fresh(root, n)
                if side == "stage":
                    got = child([sys.executable, "-m", "stages.hpo"], work, env)
                    job = job_from(work, 1)
                    if job_path is None:
                        job_path = root / "job.json"
                        job_path.write_text(json.dumps(job))
                    # seeded: every stage run must train the same trials the bare script replays
                    got["same_trials_as_first"] = job["trials"] == json.loads(job_path.read_text())["trials"]
                else:
                    if job_path is None:  # the first round runs the stage first
                        raise AssertionError("no job yet")
                    script = [sys.executable, str(ROOT / "benchmarks" / "bare.py"), str(job_path), "--check"]
                    got = child(script, work, env)
                    got["replay"] = json.loads(got["stdout"].splitlines()[-1])
                got.pop("stdout")
                runs.append({"round": r, "side": side, **got})
                common.log(json.dumps(runs[-1]))
                shutil.rmtree(work)
        job = json.loads(job_path.read_text()) if job_path else {"trials": []}
    mean = {s: statistics.mean(x["cpu_s"] for x in runs if x["side"] == s) for s in ("stage", "bare")}
    wall = {s: statistics.mean(x["wall_s"] for x in runs if x["side"] == s) for s in ("stage", "bare")}
    ratio = mean["stage"] / mean["bare"]
    result = {
        "what": "whole `python -m stages.hpo` (fresh study) vs the standalone bare script on its trials",
        "tracking": args.tracking,
        "trials": len(job["trials"]),
        "epochs": sum(t["epochs"] for t in job["trials"]),
        "rounds": rounds,
        "machine": common.machine(),
        "mean_cpu_s": {k: round(v, 3) for k, v in mean.items()},
        "mean_wall_s": {k: round(v, 3) for k, v in wall.items()},
        "ratio_cpu": round(ratio, 3),
        "ratio_wall": round(wall["stage"] / wall["bare"], 3),
        "target_ratio_cpu": TARGET,
        "stage_runs_identical": all(x["same_trials_as_first"] for x in runs if x["side"] == "stage"),
        "replay_exact": all(x["replay"]["max_deviation"] == 0.0 for x in runs if x["side"] == "bare"),
        "runs": runs,
    }
    common.write_json(args.out_dir / "stage_cpu.json", result)
    print(
        f"hpo stage CPU {mean['stage']:.2f} s / bare script CPU {mean['bare']:.2f} s = {ratio:.2f}x "
        f"(target <= {TARGET}); {result['trials']} trials, {result['epochs']} epochs, "
        f"tracking {args.tracking}"
    )


if __name__ == "__main__":
    main()
