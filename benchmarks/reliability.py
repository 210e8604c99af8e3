"""Reliability: real crashes of a real sweep, and what each one cost.

Scenarios (each on the tiny config: breast-cancer data, 5 trials x 6 epochs, a model that sleeps
``HPOPIPE_TEST_DELAY`` seconds per forward pass so a kill lands mid-trial):

- ``sigkill_x3``: the hpo stage's process group SIGKILLed mid-trial three times, restarted each time.
- ``sigterm`` / ``sigint``: one signal to the stage mid-trial (the graceful stop), then a restart.
- ``sigterm_to_dvc``: a real ``dvc repro`` in a temporary git repo; SIGTERM to the ``dvc`` process
  only (DVC does not forward it), then ``dvc repro`` again.
- ``sigkill_mlflow``: SIGKILL mid-trial with MLflow tracking on (a real SQLite store), then a restart.

For each: trials lost (finished trials of an uninterrupted run missing from the final study, or a
trial finished before a crash that changed after it), duplicates (trial numbers, or two finished
attempts of one sweep position), retries, epochs trained twice per crash (epochs the killed attempt
reported minus the epoch its retry resumed from), processes of the stage still alive 10 s after the
crash, trials left RUNNING/WAITING, MLflow runs stuck RUNNING (after the crash and after the restart),
and whether the final study equals the uninterrupted one.

Usage: ``python benchmarks/reliability.py`` (~5 min on 2 busy cores). Writes
``benchmarks/results/reliability.json`` and ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import optuna
import yaml
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The crash helpers of the recovery tests: one implementation of "start a stage", "wait until trial
# N is mid-way", "the study as a straight run lists it".
from tests.conftest import make_project, subprocess_env  # noqa: E402
from tests.sweeps import study_file  # noqa: E402
from tests.test_recovery import load, project, signature, start, sweep_params, wait_mid_trial  # noqa: E402

RESULTS = REPO / "benchmarks/results"
ORPHAN_WAIT_S = 10.0


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries ``HPOPIPE_BENCH_MARK=mark``."""
    needle = f"HPOPIPE_BENCH_MARK={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def orphans_after(mark: str) -> int:
    """Processes of the crashed run still alive ``ORPHAN_WAIT_S`` after the crash."""
    deadline = time.monotonic() + ORPHAN_WAIT_S
    while marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(marked(mark))


def run_to_end(workdir: Path, **env: str) -> None:
    proc = start(workdir, **env)
    out, _ = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the restart failed ({proc.returncode}):\n{out}")


def mlflow_running(store: Path) -> int:
    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return sum(r.info.status == "RUNNING" for r in runs)


def account(study: optuna.Study, straight: list[Any], before: list[dict[int, Any]]) -> dict[str, Any]:
    """Trials lost, duplicates, retries, re-trained epochs and leftovers of a finished study."""
    trials = study.trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    final = signature(study)
    lost = sum(1 for entry in straight if entry not in final)
    lost += sum(
        1
        for snapshot in before
        for number, (params, value) in snapshot.items()
        if (trials[number].params, trials[number].value) != (params, value)
    )
    numbers = [t.number for t in trials]
    positions = [t.user_attrs.get("position", t.number) for t in finished]
    killed = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("interrupted")]
    retrained = []
    for dead in killed:
        origin = dead.user_attrs.get("retry_of", dead.number)
        later = [t for t in trials if t.number > dead.number and t.user_attrs.get("retry_of") == origin]
        resumed = later[0].user_attrs.get("resumed_from_epoch", 0) if later else 0
        retrained.append(max(0, len(dead.intermediate_values) - resumed))
    return {
        "trials": len(trials),
        "finished": len(finished),
        "trials_lost": lost,
        "duplicates": (len(numbers) - len(set(numbers))) + (len(positions) - len(set(positions))),
        "retries": sum("retry_of" in t.user_attrs for t in trials),
        "epochs_retrained_per_crash": round(sum(retrained) / len(killed), 2) if killed else 0.0,
        "left_running_or_waiting": sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials),
        "complete_values_finite": all(
            math.isfinite(t.value) for t in trials if t.state == TrialState.COMPLETE and t.value is not None
        ),
        "equals_uninterrupted_run": final == straight,
    }


def snapshot(workdir: Path) -> dict[int, Any]:
    return {t.number: (t.params, t.value) for t in load(workdir).trials if t.state == TrialState.COMPLETE}


def crash_loop(
    workdir: Path, kills: list[Callable[[subprocess.Popen[str]], None]], **env: str
) -> tuple[list[dict[int, Any]], list[int], list[float]]:
    """Start the stage, crash it with each of ``kills`` in turn (restarting between), then finish."""
    before, orphans, exit_s = [], [], []
    for kill in kills:
        mark = uuid.uuid4().hex
        proc = start(workdir, HPOPIPE_BENCH_MARK=mark, **env)
        n = len(load(workdir).trials) if study_file(workdir).exists() else 0
        wait_mid_trial(workdir, proc, n + 1)  # a fresh trial, after any queued retry ran
        sent = time.monotonic()
        kill(proc)
        proc.communicate(timeout=120)
        exit_s.append(round(time.monotonic() - sent, 2))
        orphans.append(orphans_after(mark))
        before.append(snapshot(workdir))
    run_to_end(workdir, **env)
    return before, orphans, exit_s


def killpg(sig: signal.Signals) -> Callable[[subprocess.Popen[str]], None]:
    return lambda proc: os.killpg(proc.pid, sig)


def to_stage(sig: signal.Signals) -> Callable[[subprocess.Popen[str]], None]:
    return lambda proc: proc.send_signal(sig)


def scenario_dvc(tmp: Path, straight: list[Any]) -> dict[str, Any]:
    """SIGTERM to `dvc repro` alone while its hpo stage trains."""
    raw = sweep_params()
    raw["data"]["path"] = "data/raw/breast_cancer.csv"
    # Same key order as the other scenarios' params.yaml: the search space's order is the order of
    # suggest calls, so another order samples other trials (under the same study name).
    root = make_project(tmp / "dvc", yaml.safe_dump(raw))
    mark = uuid.uuid4().hex
    env = subprocess_env(PYTHONPATH=str(REPO), HPOPIPE_TEST_DELAY="0.01", HPOPIPE_BENCH_MARK=mark)
    with (root / "repro.log").open("w") as log:
        dvc = subprocess.Popen(
            ["dvc", "repro", "hpo"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        wait_mid_trial(root, dvc, 1)
        sent = time.monotonic()
        dvc.send_signal(signal.SIGTERM)
        dvc.wait()
        orphans = orphans_after(mark)
        gone_s = round(time.monotonic() - sent, 2)
    before = snapshot(root)
    env["HPOPIPE_BENCH_MARK"] = uuid.uuid4().hex
    proc = subprocess.run(["dvc", "repro", "hpo"], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr)
    return {
        "crashes": 1,
        "orphaned_processes": orphans,
        "stage_gone_after_s": gone_s,
        **account(load(root), straight, [before]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    args = parser.parse_args()
    os.environ.update(HPOPIPE_TRACKING="off", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hpopipe-reliability-") as name:
        tmp = Path(name)
        prep = tmp / "prep"
        prep.mkdir()
        (prep / "params.yaml").write_text(yaml.safe_dump(sweep_params()))
        run_to_end_module(prep, "stages.prepare")
        prepared = prep / "data/prepared"
        straight_dir = project(tmp / "straight", prepared)
        run_to_end(straight_dir)
        straight = signature(load(straight_dir))
        scenarios: dict[str, Callable[[], dict[str, Any]]] = {
            "sigkill_x3": lambda: stage_scenario(tmp, prepared, straight, [killpg(signal.SIGKILL)] * 3),
            "sigterm": lambda: stage_scenario(tmp, prepared, straight, [to_stage(signal.SIGTERM)]),
            "sigint": lambda: stage_scenario(tmp, prepared, straight, [to_stage(signal.SIGINT)]),
            "sigterm_to_dvc": lambda: scenario_dvc(tmp, straight),
            "sigkill_mlflow": lambda: mlflow_scenario(tmp, prepared, straight),
        }
        results = {}
        for key, scenario in scenarios.items():
            if args.only and key not in args.only:
                continue
            print(f"{key} ...", flush=True)
            results[key] = scenario()
            print(f"  {results[key]}", flush=True)
    report = {
        "config": "tests.test_recovery.sweep_params(): 5 trials, 6 epochs, median pruner, TPE, slow MLP",
        "orphan_wait_s": ORPHAN_WAIT_S,
        "versions": {m.__name__: m.__version__ for m in (optuna, mlflow)},
        "wall_s": round(time.monotonic() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # timings on a busy machine stretch
        "scenarios": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.only and (RESULTS / "reliability.json").exists():  # re-ran some: keep the others' rows
        previous = json.loads((RESULTS / "reliability.json").read_text())
        report["scenarios"] = {**previous["scenarios"], **results}
        report["rerun"] = {
            "scenarios": args.only,
            "wall_s": report["wall_s"],
            "load_average": report["load_average"],
        }
        report["wall_s"], report["load_average"] = previous["wall_s"], previous.get("load_average")
    (RESULTS / "reliability.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "reliability.md").write_text(markdown(report))
    print(markdown(report))


def run_to_end_module(workdir: Path, module: str) -> None:
    proc = start(workdir, module)
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(out)


def stage_scenario(
    tmp: Path, prepared: Path, straight: list[Any], kills: list[Callable[[subprocess.Popen[str]], None]]
) -> dict[str, Any]:
    workdir = project(tmp / uuid.uuid4().hex, prepared)
    before, orphans, exit_s = crash_loop(workdir, kills)
    return {
        "crashes": len(kills),
        "orphaned_processes": sum(orphans),
        "stage_gone_after_s": max(exit_s),
        **account(load(workdir), straight, before),
    }


def mlflow_scenario(tmp: Path, prepared: Path, straight: list[Any]) -> dict[str, Any]:
    workdir = project(tmp / "mlflow", prepared)
    store = tmp / "mlflow.db"
    env = {"HPOPIPE_TRACKING": "on", "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    stuck: list[int] = []

    def kill_and_count(proc: subprocess.Popen[str]) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stuck.append(mlflow_running(store))

    before, orphans, exit_s = crash_loop(workdir, [kill_and_count], **env)
    return {
        "crashes": 1,
        "orphaned_processes": sum(orphans),
        "stage_gone_after_s": max(exit_s),
        "mlflow_running_after_crash": stuck[0],
        "mlflow_stuck_running_after_restart": mlflow_running(store),
        **account(load(workdir), straight, before),
    }


def markdown(report: dict[str, Any]) -> str:
    cols = [
        ("crashes", "crashes"),
        ("trials_lost", "trials lost"),
        ("duplicates", "duplicates"),
        ("retries", "retries"),
        ("epochs_retrained_per_crash", "epochs retrained / crash"),
        ("orphaned_processes", f"orphans after {report['orphan_wait_s']:.0f} s"),
        ("stage_gone_after_s", "stage gone after s"),
        ("left_running_or_waiting", "left RUNNING/WAITING"),
        ("equals_uninterrupted_run", "= uninterrupted run"),
    ]
    lines = [
        f"Crash scenarios on {report['config']} (wall {report['wall_s']} s"
        + (f", load average {report['load_average']}" if report.get("load_average") else "")
        + (f"; re-ran {', '.join(report['rerun']['scenarios'])}" if report.get("rerun") else "")
        + ").",
        "",
        "| scenario | " + " | ".join(label for _, label in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, row in report["scenarios"].items():
        lines.append(f"| {name} | " + " | ".join(str(row.get(key, "")) for key, _ in cols) + " |")
    ml = report["scenarios"].get("sigkill_mlflow")
    if ml:
        after = ml["mlflow_stuck_running_after_restart"]
        lines += [
            "",
            f"MLflow (SQLite store, tracking on): {ml['mlflow_running_after_crash']} run(s) "
            f"RUNNING right after the SIGKILL, {after} still RUNNING after the restart.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
