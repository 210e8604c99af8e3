"""What the benchmark scripts share: machine facts, the load average, the bare loop's job, writing results."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# Measure this checkout's code, whatever the virtual environment's editable install points at.
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))


def load1() -> float | None:
    """The 1-minute load average: other work on the machine shows up in every timing beside it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child stage or script: this interpreter's bin first, this checkout's code."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``, which must succeed: its wall and CPU seconds (all its processes, through
    ``RUSAGE_CHILDREN``), the load average before it and its stdout. A failure exits with the
    command and the tails of its output."""
    load = load1()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise SystemExit(f"{' '.join(cmd)} in {cwd} failed ({proc.returncode}):\n{tail}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load, "stdout": proc.stdout.strip()}


def synthetic_frame(rows: int, features: int, seed: int) -> Any:
    """The bigger benchmark table: ``make_classification`` rows (``x00``, ``x01``, ... and ``target``)
    on which an epoch takes a fraction of a second."""
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=features // 2,
        n_redundant=features // 4,
        flip_y=0.05,
        random_state=seed,
    )
    return pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(features)]).assign(target=y)


def machine() -> dict[str, Any]:
    """Facts that decide whether two result files are comparable."""
    versions = {}
    for dist in ("torch", "optuna", "mlflow", "sqlalchemy", "scikit-learn", "numpy", "pandas", "dvc"):
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
                ["git", "status", "--porcelain", "src", "stages"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": commit,
        "uncommitted_changes_in_src_or_stages": dirty,
        "versions": versions,
    }


def job_of(params: Any, schema: dict[str, Any], study: Any, threads: int = 1) -> dict[str, Any]:
    """What ``benchmarks/bare.py`` needs to replay a finished study: settings and every trial's
    parameters, seed (as the objective derives it) and reported per-epoch scores."""
    from hpopipe.metrics import resolve_metric
    from hpopipe.seeding import derive_seed

    params = params.for_task(schema["task"])
    train = params.train
    trials = []
    for t in study.get_trials(deepcopy=False):
        steps = sorted(t.intermediate_values)
        if steps and steps != list(range(1, len(steps) + 1)):
            raise RuntimeError(f"trial {t.number}: unexpected reported steps {steps}")
        origin = t.user_attrs.get("position", t.user_attrs.get("retry_of", t.number))
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "seed": derive_seed(params.seed, "trial", origin),
                "epochs": len(steps),
                "values": [float(t.intermediate_values[s]) for s in steps],
            }
        )
    return {
        "train": {
            "lr": train.lr,
            "weight_decay": train.weight_decay,
            "batch_size": train.batch_size,
            "optimizer": train.optimizer,
            "momentum": train.momentum,
            "schedule": train.schedule,
            "step_size": train.step_size,
            "gamma": train.gamma,
            "max_epochs": train.max_epochs,
        },
        "model_params": dict(params.model.params),
        "model_name": params.model.name,
        "n_classes": len(schema["classes"]),
        "metric": resolve_metric(params.hpo.metric, schema["task"]),
        "val_size": params.data.val_size,
        "val_seed": derive_seed(params.seed, "validation"),
        "threads": threads,
        "trials": trials,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
