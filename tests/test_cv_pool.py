"""CV on a local pool (hpo.n_workers > 1: this process and spawned ones): the sequential run's
results, byte for byte; a failed training is one error line naming its trial and fold,
and leaves no outputs."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpopipe import artifacts
from hpopipe.config import parse_params
from hpopipe.cv import cross_validate, summarise
from hpopipe.data import prepare, read_table, to_arrays
from hpopipe.errors import HpopipeError, TaskFailed
from hpopipe.handoffs.cv import write_cv
from hpopipe.handoffs.ranked import RankedTrial, RankedTrials, write_ranked
from hpopipe.handoffs.schema import write_schema
from hpopipe.process_pool import ordered_map
from hpopipe.processes import pid_alive
from hpopipe.tracking import NullTracker
from hpopipe.training.loop import task_of
from tests.conftest import REPO, TINY_PARAMS, subprocess_env
from tests.failing_models import exits_in, never_ready, pid_once_marked

WIDTHS = {4: 16, 1: 32, 7: 16}  # trial number -> width, best first


def raw_params(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["cv"].update(top_k=3, folds=2)
    raw["train"].update(max_epochs=2)
    raw["hpo"]["storage"] = "journal"  # several workers refuse SQLite (the cv stage never opens it)
    for section, values in changes.items():
        raw[section] = values if not isinstance(values, dict) else {**raw.get(section, {}), **values}
    return raw


def ranked() -> list[RankedTrial]:
    return [
        RankedTrial(
            number=n,
            value=0.9,
            params={"lr": 0.01, "n_layers": 1 + n % 2, "width": width, "dropout": 0.1},
            best_epoch=2,
            checkpoint=None,
            position=n,
        )
        for n, width in WIDTHS.items()
    ]


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any, Any]:
    params = parse_params(raw_params())
    prep = prepare(read_table(params.data.path), params.data, params.seed)
    x, y = to_arrays(prep.train)
    return x, y, task_of(prep.schema.plain(), "macro_f1")


def outputs(tmp_path: Path, name: str, workers: int, data: tuple[Any, Any, Any]) -> tuple[bytes, bytes]:
    """results.csv and cv.json as the cv stage writes them."""
    params = parse_params(raw_params(hpo={"n_workers": workers}))
    results = cross_validate(params, ranked(), *data, NullTracker(), workers)
    csv, summary = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
    artifacts.write_frame(csv, results)
    write_cv(summary, summarise(results, params.hpo.metric))
    return csv.read_bytes(), summary.read_bytes()


def test_two_workers_write_the_sequential_results_byte_for_byte(
    tmp_path: Path, data: tuple[Any, Any, Any]
) -> None:
    sequential = outputs(tmp_path, "sequential", 1, data)
    pooled = outputs(tmp_path, "pooled", 2, data)
    assert pooled == sequential
    rows = sequential[0].decode().splitlines()
    assert rows[0] == "trial,fold,score,best_epoch,stopped_early"
    assert [r.split(",")[:2] for r in rows[1:]] == [[str(n), str(f)] for n in WIDTHS for f in (0, 1)]


def test_a_crashed_pool_process_names_its_trial_and_fold(data: tuple[Any, Any, Any]) -> None:
    params = parse_params(raw_params(model={"name": None, "factory": "tests.failing_models:dies_when_wide"}))
    with pytest.raises(
        HpopipeError, match=r"^cv: trial 1, fold [01] failed: its process was killed by SIGKILL$"
    ):
        cross_validate(params, ranked(), *data, NullTracker(), 2)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_candidate_stops_the_stage_with_one_line_and_no_outputs(
    tmp_path: Path, workers: int
) -> None:
    raw = raw_params(
        hpo={"n_workers": workers}, model={"name": None, "factory": "tests.failing_models:flaky"}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = parse_params(raw)
    prep = prepare(read_table(params.data.path), params.data, params.seed)
    artifacts.write_frame(tmp_path / artifacts.TRAIN, prep.train)
    write_schema(tmp_path / artifacts.SCHEMA, prep.schema)
    write_ranked(tmp_path / artifacts.RANKED_JSON, RankedTrials(study="s", trials=tuple(ranked())))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.cv"],
        cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hpopipe: error:")]
    fold = "0" if workers == 1 else "[01]"  # pooled: whichever of trial 1's folds fails first
    assert len(errors) == 1, proc.stderr
    assert re.fullmatch(
        rf"hpopipe: error: cv: trial 1, fold {fold} failed: ValueError: width 32 is not allowed", errors[0]
    ), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / artifacts.CV_RESULTS).exists()
    assert not (tmp_path / artifacts.metrics_file("cv")).exists()


def test_pool_processes_do_not_outlive_a_killed_stage() -> None:
    """SIGKILL (or DVC's SIGTERM) to the stage leaves no training behind in its pool processes."""
    script = (
        "from hpopipe.process_pool import ordered_map\n"
        "from tests.failing_models import nap\n"
        "list(ordered_map(nap, None, [600.0, 600.0, 600.0], 3))\n"  # the stage's thread and 2 processes
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env=subprocess_env(PYTHONPATH=str(REPO)))
    children: list[int] = []
    deadline = time.monotonic() + 300  # a liveness bound, not a timing claim
    try:
        while len(children) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            pgrep = ["pgrep", "-P", str(parent.pid), "-f", "spawn_main"]  # not the resource tracker
            children = [
                int(pid) for pid in subprocess.run(pgrep, capture_output=True, text=True).stdout.split()
            ]
        assert len(children) == 2
    finally:
        parent.kill()
        parent.wait()
    while any(pid_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if pid_alive(pid)]


def test_with_two_workers_this_process_trains_beside_a_spawned_one(tmp_path: Path) -> None:
    """Task 0 waits until task 1 has run: they run at once, task 0 here (it starts at once), task 1
    in the spawned process."""
    got = list(ordered_map(pid_once_marked, str(tmp_path), [0, 1], 2))
    assert [i for i, _ in got] == [0, 1]
    assert got[0][1] == os.getpid() and got[1][1] != os.getpid()


def test_a_process_still_starting_when_the_work_is_done_is_terminated_not_waited_for() -> None:
    """Its setup takes ten minutes: this process does every task, and the map ends by terminating it."""
    children: list[multiprocessing.process.BaseProcess] = []
    got = []
    tasks = [2, 3, 4]  # none waits for a mark
    for index, pid in ordered_map(pid_once_marked, "", tasks, 2, setup=never_ready):
        children = children or multiprocessing.active_children()
        got.append((index, pid))
    assert got == [(0, os.getpid()), (1, os.getpid()), (2, os.getpid())]
    assert len(children) == 1
    assert children[0].exitcode == -signal.SIGTERM


def test_a_base_exception_in_this_process_s_worker_fails_its_task() -> None:
    """SystemExit in the thread ends it as a death would end a process: its task fails, nothing hangs."""
    with pytest.raises(TaskFailed, match=r"worker thread stopped: SystemExit: task 5 exits") as caught:
        list(ordered_map(exits_in, os.getpid(), [5, 6, 7], 2))
    assert caught.value.index == 0
