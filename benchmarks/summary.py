"""One table of every ratio ``make bench`` measured, beside issue 16's figures and targets.

Reads the JSON files the benchmark scripts wrote to ``--out-dir`` (``overhead.json``,
``stage_cpu.json``, ``workers.json``, ``cv_pool.json`` and, when it ran, ``repro_compare.json``)
and writes ``summary.md`` there. A missing file is a row that says so, not an error.

    python benchmarks/summary.py [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import common

# Issue 16's figures (measured at commit ca38033's time, idle 2-core machine), to show beside the new.
OLD = {
    "default": "3.0× (5.10 s vs 1.67 s)",
    "stage": "2.3× (10.0 s vs 4.3 s CPU)",
    "synthetic": "1.26× (9.54 s vs 7.63 s)",
    "peer": "2.3× / 1.49×",
    "vs_peer": "1.26× / 0.85×",
    "workers": "1.19× (75.1 vs 63.0 trials/min)",
    "cv": "sequential only (no pool)",
    "repro": "34–36 s",
}


# A key each script's current output has: a file without it was written by an older version.
CURRENT = {
    "overhead.json": "targets",
    "stage_cpu.json": "ratio_cpu",
    "workers.json": "load_range",
    "cv_pool.json": "load_range",
    "cv_pool_20000.json": "load_range",
    "repro_compare.json": "ratio_wall",
}


def _read(out: Path, name: str) -> dict[str, Any] | None:
    """A script's results, or None when it did not run (or the file predates this summary)."""
    path = out / name
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data if CURRENT[name] in data else None


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _load(values: list[float] | None) -> str:
    return "—" if not values else f"{min(values):.1f}–{max(values):.1f}"


def rows(out: Path) -> list[list[str]]:
    """(what, issue 16, now, target, load average, note) per measured ratio."""
    table: list[list[str]] = []
    over = _read(out, "overhead.json")
    for name, label in (("default", "default table"), ("synthetic", "20k × 40 synthetic table")):
        w = (over or {}).get("workloads", {}).get(name)
        if w is None:
            table.append([f"sweep loop / bare loop, {label}", OLD[name], "not run", "", "", ""])
            continue
        now = (
            f"**{_x(w['ratio'])}** ({w['sweep_wall_s_mean']:.2f} s vs {w['bare_wall_s_mean']:.2f} s; "
            f"CPU {_x(w['ratio_cpu'])})"
        )
        note = f"{w['n_trials']} trials, {w['total_epochs']} epochs; replay exact: {w['replay_exact']}"
        target = f"≤ {w['target_ratio']}" if w.get("target_ratio") else ""
        table.append(
            [f"sweep loop / bare loop, {label}", OLD[name], now, target, _load(w["load_range"]), note]
        )
    stage = _read(out, "stage_cpu.json")
    if stage is None:
        table.append(["whole hpo stage CPU / bare script CPU", OLD["stage"], "not run", "≤ 1.5", "", ""])
    else:
        cpu = stage["mean_cpu_s"]
        loads = [x["load_before"] for x in stage["runs"]]
        table.append(
            [
                "whole hpo stage CPU / bare script CPU, default table",
                OLD["stage"],
                f"**{_x(stage['ratio_cpu'])}** ({cpu['stage']:.1f} s vs {cpu['bare']:.1f} s)",
                f"≤ {stage['target_ratio_cpu']}",
                _load(loads),
                f"{stage['trials']} trials, {stage['epochs']} epochs, tracking {stage['tracking']}; "
                f"replay exact: {stage['replay_exact']}",
            ]
        )
    works = [(over or {}).get("workloads", {}).get(n) or {} for n in ("default", "synthetic")]
    if any("peer_ratio" in w for w in works):
        peer = " / ".join(_x(w.get("peer_ratio")) for w in works)
        vs = " / ".join(_x(w.get("hpopipe_vs_peer")) for w in works)
        loads = [x for w in works for x in (w.get("load_range") or [])]
        table.append(
            ["hand-written Optuna peer / bare loop (default / 20k)", OLD["peer"], peer, "", _load(loads), ""]
        )
        table.append(
            [
                "hpopipe's ratio / the peer's (default / 20k)",
                OLD["vs_peer"],
                vs,
                "",
                _load(loads),
                "< 1: hpopipe costs less",
            ]
        )
    else:
        table.append(["hand-written Optuna peer / bare loop", OLD["peer"], "not run", "", "", ""])
    workers = _read(out, "workers.json")
    if workers is None:
        table.append(
            ["2 vs 1 local workers, trials/min, whole stage", OLD["workers"], "not run", "≥ 1.6", "", ""]
        )
    else:
        s = workers["summary"]
        table.append(
            [
                "2 vs 1 local workers, trials/min, whole stage",
                OLD["workers"],
                f"**{_x(workers['speedup_2_vs_1'])}** ({s['2']['median_trials_per_min']} vs "
                f"{s['1']['median_trials_per_min']} trials/min)",
                "≥ 1.6",
                _load(workers.get("load_range")),
                f"{workers['rows']} rows, {workers['trials']} trials × {workers['epochs']} epochs",
            ]
        )
    for name, label in (("cv_pool.json", "default table"), ("cv_pool_20000.json", "20k × 40 table")):
        cv = _read(out, name)
        what = f"cv stage, 2 workers vs sequential (wall), {label}"
        if cv is None:
            table.append([what, OLD["cv"], "not run", "≥ 1.6", "", ""])
            continue
        walls = cv["median_wall_s"]
        table.append(
            [
                what,
                OLD["cv"],
                f"**{_x(cv['speedup_2_vs_1'])}** ({walls['2']} s vs {walls['1']} s)",
                "≥ 1.6, identical results.csv",
                _load(cv.get("load_range")),
                f"top {cv['top_k']} × {cv['folds']} folds; results identical: {cv['all_identical']}",
            ]
        )
    repro = _read(out, "repro_compare.json")
    if repro is None:
        table.append(
            ["fresh-clone `dvc repro`, new / ca38033", OLD["repro"], "not run (REPRO=1)", "≤ 0.6", "", ""]
        )
    else:
        m = repro["mean_wall_s"]
        table.append(
            [
                f"fresh-clone `dvc repro`, {repro['commits']['new']} / {repro['commits']['old']}",
                OLD["repro"],
                f"**{_x(repro['ratio_wall'])}** ({m['new']:.1f} s vs {m['old']:.1f} s)",
                "≤ 0.6",
                _load([x["load_before"] for x in repro["runs"]]),
                "quick (shrunken pipeline)" if repro["quick"] else f"{repro['rounds']} rounds",
            ]
        )
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    facts = common.machine()
    lines = [
        "# Benchmark summary (`make bench`)",
        "",
        f"{facts['date']}, commit {facts['git_commit']}, {facts['cpu_count']} CPUs, "
        f"Python {facts['python']}, "
        f"torch {facts['versions']['torch']}, Optuna {facts['versions']['optuna']}, "
        f"MLflow {facts['versions']['mlflow']}. Every ratio is measured interleaved in one run; the "
        "load column is the 1-minute load average around its measurements (a ratio measured beside "
        "other heavy work is noise). Issue 16's figures were measured on an idle machine.",
        "",
        "| what | issue 16 | now | target | load | note |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows(args.out_dir)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
