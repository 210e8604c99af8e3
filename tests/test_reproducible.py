"""Reproducible by construction: the default sweep's trials are a function of its inputs.

The kill-and-resume proofs with real processes are in test_recovery.py; these run in-process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpopipe.artifacts import sqlite_url
from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.sweep import lifecycle
from hpopipe.sweep.backup import backup_study, check_integrity, restore_sqlite
from hpopipe.sweep.optuna_internals import queued_params
from hpopipe.sweep.recovery import retry_states
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.seeded_sampler import sweep_position
from hpopipe.sweep.storage import open_storage, resolve, sqlite_storage
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, inside, params_variant, subprocess_env
from tests.sweeps import load, run_stage, sweep_params


def default_sweep(root: Path, prepared: tuple[Any, dict], n_trials: int) -> optuna.Study:
    """The committed params.yaml (TPE + Hyperband, the default space), shortened to a few epochs."""
    text = params_variant(
        (REPO / "params.yaml").read_text(), {"hpo.n_trials": n_trials, "train.max_epochs": 6}
    )
    raw = yaml.safe_load(text)
    raw["data"]["path"] = str(REPO / raw["data"]["path"])
    params = parse_params(raw)
    assert params.hpo.sampler.name == "tpe" and params.hpo.pruner.name == "hyperband"
    train, schema = prepared
    with inside(root):
        return sweep(params, train, schema, resolve("sqlite"), NullTracker())


def test_a_default_sweep_never_repeats_a_configuration(tmp_path: Path, prepared: tuple[Any, dict]) -> None:
    # Optuna hands the sampler a bracket-filtered study under Hyperband; counted there, positions
    # went 0, 1, 0, ... and re-seeded the sampler into configurations it had already run.
    study = default_sweep(tmp_path, prepared, n_trials=8)
    configs = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(configs) == 8 and len(set(configs)) == 8
    assert [t.user_attrs["position"] for t in study.trials] == list(range(8))
    assert [sweep_position(study, t) for t in study.trials] == list(range(8))


HPO_OUTPUTS = (
    "artifacts/hpo/trials.csv",
    "artifacts/hpo/ranked_trials.json",
    "artifacts/hpo/pareto.csv",
    "artifacts/hpo/statistics.json",
    "artifacts/hpo/best_parameters.json",
    "metrics/hpo.json",
)


@pytest.mark.slow
def test_a_study_larger_than_the_budget_exports_its_first_n_trials(
    tmp_path: Path, prepared_dir: Path
) -> None:
    # dvc repro -f and a run-cache restore must agree: the outputs depend on hpo.n_trials alone,
    # not on how far an experiment grew the study.
    shutil.copytree(prepared_dir, tmp_path / "data/prepared")

    def hpo(n_trials: int) -> dict[str, bytes]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(sweep_params(n_trials=n_trials)))
        proc = run_stage(tmp_path)
        assert proc.returncode == 0, proc.stdout
        return {path: (tmp_path / path).read_bytes() for path in HPO_OUTPUTS}

    four = hpo(4)
    six = hpo(6)
    assert len(load(tmp_path).trials) == 6 and six != four
    assert hpo(4) == four


# --- hpopipe resume and restore: safe on every storage, never duplicating, never undone by a WAL ---


def _study_with_a_retried_failure(storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Trial 0 COMPLETE, trial 1 FAIL, trial 2 its COMPLETE retry, trial 3 FAIL never retried."""
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dist: dict[str, BaseDistribution] = {"x": FloatDistribution(0.0, 1.0)}
    for number, (state, value, attrs) in enumerate(
        [
            (TrialState.COMPLETE, 0.5, {}),
            (TrialState.FAIL, None, {"position": 1}),
            (TrialState.COMPLETE, 0.7, {"retry_of": 1, "position": 1}),
            (TrialState.FAIL, None, {"position": 2}),
        ]
    ):
        study.add_trial(
            create_trial(
                state=state, value=value, params={"x": number / 10}, distributions=dist, user_attrs=attrs
            )
        )
    return study


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_resume_retries_only_what_has_no_finished_retry_and_twice_writes_nothing(
    tmp_path: Path, kind: str
) -> None:
    spec = resolve(kind, root=tmp_path)
    study = _study_with_a_retried_failure(open_storage(spec))
    backup, n = retry_states(study, [TrialState.FAIL], grace_s=60)
    assert (backup, n) == ("s_backup-0", 1)  # trial 3 only: trial 1's retry completed
    study = optuna.load_study(study_name="s", storage=open_storage(spec))
    (queued,) = study.get_trials(states=(TrialState.WAITING,))
    assert queued_params(queued) == {"x": 0.3} and queued.user_attrs["retry_of"] == 3
    names = optuna.study.get_all_study_names(open_storage(spec))
    assert retry_states(study, [TrialState.FAIL], grace_s=60) == (None, 0)  # its retry is queued
    assert optuna.study.get_all_study_names(open_storage(spec)) == names  # no second backup
    assert len(optuna.load_study(study_name="s", storage=open_storage(spec)).trials) == 4


def test_resume_is_refused_while_a_worker_runs_the_sweep(tmp_path: Path) -> None:
    study = _study_with_a_retried_failure(open_storage(resolve("sqlite", root=tmp_path)))
    lifecycle.beat(study, lifecycle.worker_id(), trial=None)  # this process: alive, fresh heartbeat
    with pytest.raises(HpopipeError, match=r"sweep s is running \(worker .*\): hpopipe resume would rewrite"):
        retry_states(study, [TrialState.FAIL], grace_s=60)
    assert optuna.study.get_all_study_names(open_storage(resolve("sqlite", root=tmp_path))) == ["s"]


def test_restore_with_a_wal_present_brings_the_backup_back_and_keeps_everything(tmp_path: Path) -> None:
    live = tmp_path / "hpo/study.db"
    live.parent.mkdir()
    storage = sqlite_storage(live)
    study = optuna.create_study(study_name="s", storage=storage)
    for x in (0.1, 0.2, 0.3):
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert backup_study(live, tmp_path / "backup") is not None
    # Two more trials, then the process dies: they sit in the write-ahead log, not the file.
    code = (
        "import os, optuna; from hpopipe.sweep.storage import sqlite_storage; from pathlib import Path\n"
        f"s = optuna.load_study(study_name='s', storage=sqlite_storage(Path({str(live)!r})))\n"
        "s.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=2)\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env())
    assert live.with_name("study.db-wal").stat().st_size > 0
    kept = restore_sqlite(tmp_path / "backup", live)
    assert kept == live.with_name("study.db.before-restore")
    restored = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(sqlite_url(live)))
    assert [t.params["x"] for t in restored.trials] == [0.1, 0.2, 0.3]
    before = optuna.load_study(study_name="s", storage=optuna.storages.RDBStorage(sqlite_url(kept)))
    assert len(before.trials) == 5  # what was in the WAL too
    check_integrity(live, "--storage")
