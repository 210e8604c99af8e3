"""Bounded scratch: a finished trial's checkpoint goes as soon as nothing can use it.

200 tiny trials (pruned, failed after a checkpoint, complete) with a census after every trial;
a pruned trial's checkpoint is gone when its hook runs; two worker processes keep the bound too;
the rule itself on real trials of every state.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState

from hpopipe.config import Params, parse_params
from hpopipe.sweep import scratch
from hpopipe.sweep.exports import ranked_trials
from hpopipe.sweep.recovery import CHECKPOINT, CRASHES, INTERRUPTED, RETRY_OF
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import NullTracker
from hpopipe.training import checkpoints
from tests.conftest import REPO, TINY_PARAMS

# What the census hook (an `hpo.callbacks` entry, run after the sweep's own hooks) saw.
CENSUS: dict[str, Any] = {}


def owners(folder: Path) -> set[str]:
    """The configurations with a file in a study's scratch folder (``h.pt``, ``h.prev.pt``, temp files)."""
    if not folder.is_dir():
        return set()
    return {key for p in folder.iterdir() if (key := checkpoints.owner(p.name)) is not None}


def census(study: optuna.Study, trial: FrozenTrial) -> None:
    """After every trial: how many configurations scratch holds, and whether this one's files went."""
    here = owners(checkpoints.study_folder(CENSUS["root"], study.study_name))
    CENSUS["counts"].append(len(here))
    phash = trial.user_attrs.get(CHECKPOINT)
    if trial.state in (TrialState.PRUNED, TrialState.FAIL) and phash is not None:
        CENSUS["finished"].append((trial.state, phash in here))


def census_to_file(study: optuna.Study, trial: FrozenTrial) -> None:
    """The census of a stage's worker process (run in the project): one JSON line per trial."""
    here = owners(checkpoints.study_folder(Path(".hpopipe/checkpoints"), study.study_name))
    with open(".hpopipe/census.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"worker": os.getpid(), "count": len(here)}) + "\n")


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    """In-process sweeps of many tiny trials: torch's intra-op threads would only contend here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_params(tmp_path: Path, **hpo: Any) -> Params:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["model"] = {"factory": "tests.failing_models:fails_late_when_wide", "params": {}}
    raw["hpo"].update(
        checkpoint_dir=str(tmp_path / "ckpt"),
        sampler={"name": "random"},
        # Pruned at epoch 1 or 2 when below the median: every pruned trial wrote a checkpoint first.
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        max_failures=1000,  # width 32 fails by design, sometimes several in a row
        callbacks=["tests.test_scratch_bound:census"],
        **hpo,
    )
    # Every epoch saved (the most files a sweep can leave): each pruned or failed trial has a checkpoint
    # to delete. Under the default interval these trials would save only when they complete.
    raw["train"].update(max_epochs=2, patience=5, checkpoint_every_s=0)
    raw["cv"]["top_k"] = 3
    raw["cleanup"]["keep_best"] = 1
    return parse_params(raw)


def test_two_hundred_trials_never_hold_more_than_the_bound(tmp_path: Path, prepared: tuple) -> None:
    params = tiny_params(tmp_path, n_trials=200)
    CENSUS.update(root=params.hpo.checkpoint_dir, counts=[], finished=[])

    study = sweep(params, prepared[0], prepared[1], sqlite_spec(tmp_path / "study.db"), NullTracker())

    trials = study.get_trials(deepcopy=False)
    states = pd.Series([t.state.name for t in trials]).value_counts().to_dict()
    assert states["COMPLETE"] + states["PRUNED"] == 200  # the budget; failures come on top
    assert states["COMPLETE"] > 3 and states["PRUNED"] > 0 and states["FAIL"] > 0
    keep = scratch.kept_best(params)
    assert keep == 3 and scratch.bound(params) == 1 + 3
    # Each census ran after the sweep's own hooks, when no trial is in flight: the best `keep` only.
    assert len(CENSUS["counts"]) == len(trials) and max(CENSUS["counts"]) <= keep
    # Every pruned or failed trial had written a checkpoint; none was left once its trial ended.
    assert {s for s, _ in CENSUS["finished"]} == {TrialState.PRUNED, TrialState.FAIL}
    assert [kept for _, kept in CENSUS["finished"] if kept] == []
    folder = checkpoints.study_folder(params.hpo.checkpoint_dir, study.study_name)
    ranked = ranked_trials(study)
    assert owners(folder) == {t.checkpoint for t in ranked[:keep]}
    # The cleanup stage then keeps its keep_best and counts what it frees, as before.
    report = checkpoints.cleanup_study(
        params.hpo.checkpoint_dir, study.study_name, [t.plain() for t in ranked], keep_best=1
    )
    assert report["kept"] == 1 and report["deleted"] == 2 * (keep - 1)  # each: the .pt and its .prev.pt
    assert owners(folder) == {ranked[0].checkpoint}


def test_a_pruned_trials_checkpoint_is_gone_right_after_it_is_pruned(tmp_path: Path, prepared: tuple) -> None:
    """A few trials, each checked by the hook that runs right after it was told."""
    params = tiny_params(tmp_path, n_trials=12)
    CENSUS.update(root=params.hpo.checkpoint_dir, counts=[], finished=[])

    sweep(params, prepared[0], prepared[1], sqlite_spec(tmp_path / "study.db"), NullTracker())

    pruned = [kept for state, kept in CENSUS["finished"] if state == TrialState.PRUNED]
    assert pruned and not any(pruned)


# --------------------------------------------------------------------------------------- the rule


def attempt(state: TrialState, phash: str, **attrs: Any) -> FrozenTrial:
    values: dict[str, Any] = {"value": 0.5} if state == TrialState.COMPLETE else {}
    return optuna.trial.create_trial(state=state, user_attrs={CHECKPOINT: phash, **attrs}, **values)


def test_only_attempts_no_retry_can_resume_lose_their_checkpoints(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    study.add_trials(
        [
            attempt(TrialState.PRUNED, "pruned"),
            attempt(TrialState.FAIL, "error", fail_reason="RuntimeError: x"),
            attempt(TrialState.FAIL, "killed", **{INTERRUPTED: True, CRASHES: 1}),  # retry queued
            attempt(TrialState.FAIL, "given-up", **{INTERRUPTED: True, CRASHES: 3}),  # past max_retry
            attempt(TrialState.FAIL, "signal", **{INTERRUPTED: True}),  # SIGTERM: retry queued
            attempt(TrialState.COMPLETE, "best"),
            attempt(TrialState.COMPLETE, "not-best"),
            attempt(TrialState.FAIL, "retried", **{INTERRUPTED: True, CRASHES: 1}),
            attempt(TrialState.PRUNED, "retried", **{RETRY_OF: 7, CRASHES: 1}),  # the retry decides
        ]
    )
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={RETRY_OF: 2}))
    running = study.ask()
    running.set_user_attr(CHECKPOINT, "in-flight")  # RUNNING: a live worker's, or a dead one's
    gone = scratch.doomed(study.get_trials(deepcopy=False), {"best"}, max_retry=2)
    assert gone == {"pruned", "error", "given-up", "not-best", "retried"}


def test_a_symlinked_study_folder_is_never_deleted_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "pruned.pt").write_bytes(b"x")
    root = tmp_path / "ckpt"
    root.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    (root / "s").symlink_to(elsewhere)
    study.add_trial(attempt(TrialState.PRUNED, "pruned"))
    hook = scratch.ScratchBound(root, keep=1, max_retry=2)
    hook(study, study.trials[0])
    assert (elsewhere / "pruned.pt").exists() and hook.refused


# --------------------------------------------------------------------------------- several workers


@pytest.mark.slow
def test_two_worker_processes_keep_the_bound(tmp_path: Path, prepared_dir: Path) -> None:
    from tests.sweeps import run_stage, sweep_params

    callbacks = ["tests.sweeps:second_worker_joined", "tests.test_scratch_bound:census_to_file"]
    hpo = {"sampler": {"name": "random"}, "callbacks": callbacks, "max_failures": 100}
    raw = sweep_params(n_trials=16, n_workers=2, storage="journal", **hpo)
    raw["model"] = {"factory": "tests.failing_models:fails_late_when_wide", "params": {}}
    raw["train"].update(max_epochs=3)
    raw["cv"]["top_k"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    shutil.copytree(prepared_dir, tmp_path / "data/prepared")

    proc = run_stage(tmp_path)

    assert proc.returncode == 0, proc.stdout
    lines = [json.loads(x) for x in (tmp_path / ".hpopipe/census.jsonl").read_text().splitlines()]
    params = parse_params(raw)
    summary = json.loads((tmp_path / "metrics/hpo.json").read_text())
    assert summary["complete"] + summary["pruned"] == 16 and len(lines) == summary["n_trials"]
    assert len({x["worker"] for x in lines}) == 2  # both workers ran trials and took a census
    assert max(x["count"] for x in lines) <= scratch.bound(params)
    ranked = json.loads((tmp_path / "artifacts/hpo/ranked_trials.json").read_text())
    (folder,) = (tmp_path / ".hpopipe/checkpoints").iterdir()
    assert owners(folder) == {t["checkpoint"] for t in ranked["trials"][: scratch.kept_best(params)]}
