"""The sweep on a real SQLite Optuna storage: identity, extension, failures, crash leftovers."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from hpopipe.artifacts import sqlite_url
from hpopipe.config import Params, parse_params
from hpopipe.errors import HpopipeError
from hpopipe.sweep.exports import export_trials, ranked_trials, summary
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.sweep.study import study_name
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, TINY_PARAMS


def make_params(tmp_path: Path, **overrides: Any) -> Params:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return parse_params(raw)


def run(params: Params, prepared: tuple[pd.DataFrame, dict], db: Path) -> optuna.Study:
    return sweep(params, prepared[0], prepared[1], sqlite_spec(db), NullTracker())


def test_name_ignores_budget_but_not_space(tmp_path: Path) -> None:
    base = study_name(make_params(tmp_path), "fp")
    assert base.startswith("mlp-") and len(base) == len("mlp-") + 8
    assert study_name(make_params(tmp_path, hpo__n_trials=50, hpo__timeout=60), "fp") == base
    assert study_name(make_params(tmp_path, seed=8), "fp") != base
    assert study_name(make_params(tmp_path), "other-data") != base
    changed = make_params(tmp_path, search_space__width={"type": "choice", "values": [8]})
    assert study_name(changed, "fp") != base
    # How a trial runs is not what it computes: threads and device keep the study.
    assert study_name(make_params(tmp_path, train__threads=3, train__device="cpu"), "fp") == base
    assert study_name(make_params(tmp_path, train__checkpoint_every_s=0), "fp") == base


def test_rerun_reuses_and_more_trials_extend(tmp_path: Path, prepared: tuple) -> None:
    db = tmp_path / "study.db"
    first = run(make_params(tmp_path, hpo__n_trials=3), prepared, db)
    before = export_trials(first, ["lr", "width"])
    again = run(make_params(tmp_path, hpo__n_trials=3), prepared, db)
    assert len(again.trials) == 3
    extended = run(make_params(tmp_path, hpo__n_trials=5), prepared, db)
    after = export_trials(extended, ["lr", "width"])
    assert list(after["number"]) == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(
        after.iloc[:3].drop(columns="duration_s"), before.drop(columns="duration_s")
    )


def test_changed_space_starts_a_new_study_beside_the_old(tmp_path: Path, prepared: tuple) -> None:
    db = tmp_path / "study.db"
    run(make_params(tmp_path, hpo__n_trials=2), prepared, db)
    run(
        make_params(tmp_path, hpo__n_trials=2, search_space__width={"type": "choice", "values": [8]}),
        prepared,
        db,
    )
    assert len(optuna.study.get_all_study_names(sqlite_url(db))) == 2


def test_same_seed_same_trials(tmp_path: Path, prepared: tuple) -> None:
    a = run(make_params(tmp_path, hpo__n_trials=4), prepared, tmp_path / "a.db")
    b = run(make_params(tmp_path, hpo__n_trials=4), prepared, tmp_path / "b.db")
    key = [(t.number, t.state, t.params, t.value, t.intermediate_values) for t in a.trials]
    assert key == [(t.number, t.state, t.params, t.value, t.intermediate_values) for t in b.trials]


def test_trial_left_running_by_a_crash_is_failed_and_retried(tmp_path: Path, prepared: tuple) -> None:
    params = make_params(tmp_path, hpo__n_trials=3)
    db = tmp_path / "study.db"
    name = study_name(params, _fingerprint(prepared))
    crashed = optuna.create_study(study_name=name, storage=sqlite_url(db), direction="maximize")
    dead = crashed.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)})
    study = run(params, prepared, db)
    trials = study.trials
    assert trials[dead.number].state == TrialState.FAIL
    assert "interrupted" in trials[dead.number].user_attrs["fail_reason"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert len(retries) == 1 and retries[0].params["lr"] == dead.params["lr"]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _fingerprint(prepared: tuple) -> str:
    from hpopipe.sweep.study import data_fingerprint

    return data_fingerprint(prepared[0], prepared[1])


def test_failing_trials_are_recorded_and_the_sweep_goes_on(tmp_path: Path, prepared: tuple) -> None:
    params = make_params(
        tmp_path,
        hpo__n_trials=3,
        hpo__max_failures=10,
        model={"factory": "tests.failing_models:flaky", "params": {}},
    )
    study = run(params, prepared, tmp_path / "study.db")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed, "the flaky factory fails for wide layers"
    assert all("width 32 is not allowed" in t.user_attrs["fail_reason"] for t in failed)
    assert summary(study)["complete"] + summary(study)["pruned"] == 3


def test_consecutive_failures_stop_the_sweep_quoting_the_first(tmp_path: Path, prepared: tuple) -> None:
    params = make_params(
        tmp_path, hpo__max_failures=2, model={"factory": "tests.failing_models:broken", "params": {}}
    )
    with pytest.raises(HpopipeError, match=r"hpo.max_failures: 2 trials failed in a row.*always broken"):
        run(params, prepared, tmp_path / "study.db")


def test_nan_loss_is_a_failed_trial_with_its_reason(tmp_path: Path, prepared: tuple) -> None:
    params = make_params(
        tmp_path, hpo__max_failures=1, model={"factory": "tests.failing_models:nan_output", "params": {}}
    )
    with pytest.raises(HpopipeError, match="TrainingDiverged: loss became nan"):
        run(params, prepared, tmp_path / "study.db")


def test_bad_factory_fails_before_any_trial(tmp_path: Path, prepared: tuple) -> None:
    params = make_params(tmp_path, model={"factory": "tests.failing_models:missing", "params": {}})
    with pytest.raises(
        HpopipeError, match=r"model.factory: 'tests.failing_models' has no function 'missing'"
    ):
        run(params, prepared, tmp_path / "study.db")
    assert not (tmp_path / "study.db").exists() or not optuna.study.get_all_study_names(
        sqlite_url(tmp_path / "study.db")
    )


def test_ranked_trials_are_best_first(tmp_path: Path, prepared: tuple) -> None:
    study = run(
        make_params(tmp_path, hpo__n_trials=4, hpo__pruner={"name": "none"}), prepared, tmp_path / "s.db"
    )
    ranked = ranked_trials(study)
    values = [t.value for t in ranked]
    assert values == sorted(values, reverse=True) and len(ranked) == 4
    assert all(t.checkpoint and t.best_epoch is not None and t.best_epoch >= 1 for t in ranked)


def test_resnet_example_params_run_a_sweep(tmp_path: Path, prepared: tuple) -> None:
    raw = yaml.safe_load((REPO / "examples/resnet.params.yaml").read_text())
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update(n_trials=2, checkpoint_dir=str(tmp_path / "ckpt"))
    raw["train"].update(max_epochs=2)
    study = run(parse_params(raw), prepared, tmp_path / "s.db")
    assert study.study_name.startswith("resnet-")
    assert {"n_blocks", "d_main", "d_hidden_factor"} <= set(study.trials[0].params)
    assert summary(study)["complete"] + summary(study)["pruned"] == 2


def test_fresh_refuses_a_symlinked_checkpoint_folder_before_touching_the_study(
    tmp_path: Path, prepared: tuple
) -> None:
    from hpopipe.errors import HpopipeError

    params = make_params(tmp_path, hpo__n_trials=1, train__max_epochs=1)
    db = tmp_path / "study.db"
    name = run(params, prepared, db).study_name
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "canary.pt").write_text("keep me")
    shutil.rmtree(tmp_path / "ckpt" / name)
    (tmp_path / "ckpt" / name).symlink_to(outside)
    fresh = make_params(tmp_path, hpo__n_trials=1, train__max_epochs=1, hpo__fresh=True)
    with pytest.raises(HpopipeError, match="is a symbolic link; refusing to delete in it"):
        run(fresh, prepared, db)
    assert (outside / "canary.pt").read_text() == "keep me"
    assert optuna.study.get_all_study_names(sqlite_spec(db).url) == [name]  # no backup, no deletion
