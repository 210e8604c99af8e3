"""Warm start on a real SQLite storage: a widened space begins with the old trials, reuse, cold starts.

Tiny sweeps (3-4 trials of 2 epochs on the default data); the earlier study is swept once per module
and its storage copied into each test.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from hpopipe.config import Params, parse_params
from hpopipe.sweep.budget import WARM_START_FROM, finished_in, own
from hpopipe.sweep.exports import export_trials, statistics, summary, within_budget
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.seeded_sampler import POSITION
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.sweep.warm_start import REUSED_FROM, WARM_STARTED, fit_space
from hpopipe.tracking import NullTracker
from hpopipe.training import checkpoints
from tests.conftest import REPO, TINY_PARAMS

WIDE_LR = {"type": "log_uniform", "min": 1.0e-4, "max": 1.0e-1}


def make_params(tmp_path: Path, space: dict[str, Any] | None = None, **hpo: Any) -> Params:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update({"n_trials": 3, "checkpoint_dir": str(tmp_path / "ckpt"), **hpo})
    raw["train"].update(max_epochs=2, patience=2)
    raw["cv"]["top_k"] = 3  # the scratch bound keeps every complete trial's checkpoint (see reuse)
    raw["search_space"].update(space or {})
    for name in [n for n, spec in raw["search_space"].items() if spec is None]:
        del raw["search_space"][name]
    return parse_params(raw)


def run(params: Params, prepared: tuple[pd.DataFrame, dict], db: Path) -> optuna.Study:
    return sweep(params, prepared[0], prepared[1], sqlite_spec(db), NullTracker())


def key(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.intermediate_values) for t in trials]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory, prepared: tuple) -> tuple[Path, list]:
    """A finished 3-trial study in a storage of its own: (its file, its trials)."""
    tmp = tmp_path_factory.mktemp("earlier")
    study = run(make_params(tmp), prepared, tmp / "study.db")
    return tmp / "study.db", study.trials


def copy_of(db: Path, tmp_path: Path, name: str = "study.db") -> Path:
    """A consistent copy of the study file (WAL mode: the last commits may sit in ``-wal``)."""
    target = tmp_path / name
    with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def test_a_widened_range_starts_with_the_old_trials_and_tpe_proposes_otherwise(
    earlier: tuple[Path, list], prepared: tuple, tmp_path: Path
) -> None:
    db, old = earlier
    wide = make_params(tmp_path, {"lr": WIDE_LR})
    warm = run(wide, prepared, copy_of(db, tmp_path))
    added = [t for t in warm.trials if WARM_START_FROM in t.user_attrs]
    old_name = optuna.study.get_all_study_names(f"sqlite:///{db}")[0]
    assert [t.user_attrs[WARM_START_FROM] for t in added] == [f"{old_name}#{t.number}" for t in old]
    assert [(t.state, t.params, t.values, t.intermediate_values) for t in added] == [
        (t.state, t.params, t.values, t.intermediate_values) for t in old
    ]
    assert added[0].distributions["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    # Added before sampling, outside the budget and the sweep positions: 3 trials of its own run.
    assert [t.number for t in added] == [0, 1, 2] and finished_in(warm) == 3 == len(own(warm.trials))
    assert [t.user_attrs[POSITION] for t in own(warm.trials)] == [0, 1, 2]
    assert warm.user_attrs[WARM_STARTED] == 3
    view = within_budget(warm, 3)
    assert list(export_trials(view, ["lr"])["number"]) == [3, 4, 5]  # exports: this sweep's trials
    assert statistics(view)["warm_started"] == 3 and summary(view)["warm_started"] == 3

    cold = run(wide, prepared, tmp_path / "fresh.db")  # the same settings on an empty storage
    assert cold.user_attrs[WARM_STARTED] == 0
    first_cold, first_warm = cold.trials[0], own(warm.trials)[0]
    assert first_warm.params != first_cold.params  # TPE already has a model of the space
    assert "warm_started" not in statistics(within_budget(cold, 3))

    again = run(wide, prepared, copy_of(db, tmp_path, "again.db"))  # same earlier study, same sweep
    assert key(again.trials) == key(warm.trials)


def test_warm_start_none_starts_cold(earlier: tuple[Path, list], prepared: tuple, tmp_path: Path) -> None:
    db, _ = earlier
    none = run(make_params(tmp_path, {"lr": WIDE_LR}, warm_start="none"), prepared, copy_of(db, tmp_path))
    assert none.user_attrs[WARM_STARTED] == 0
    assert not [t for t in none.trials if WARM_START_FROM in t.user_attrs or REUSED_FROM in t.user_attrs]
    cold = run(make_params(tmp_path, {"lr": WIDE_LR}), prepared, tmp_path / "fresh.db")
    assert key(none.trials) == key(cold.trials)  # exactly what an empty storage runs


def test_trials_outside_the_new_space_are_not_added(
    earlier: tuple[Path, list], prepared: tuple, tmp_path: Path
) -> None:
    db, old = earlier
    lrs = sorted(t.params["lr"] for t in old)
    narrow = {"type": "log_uniform", "min": lrs[0] * 0.99, "max": (lrs[0] + lrs[1]) / 2}
    study = run(make_params(tmp_path, {"lr": narrow}, n_trials=1), prepared, copy_of(db, tmp_path))
    added = [t for t in study.trials if WARM_START_FROM in t.user_attrs]
    assert [t.params["lr"] for t in added] == [lrs[0]]
    # A parameter the new space no longer tunes (its value is unknown to it): nothing fits.
    dropped = make_params(tmp_path, {"dropout": None}, n_trials=1)
    assert fit_space(old[0].params, dropped.search_space) is None
    assert run(dropped, prepared, copy_of(db, tmp_path, "b.db")).user_attrs[WARM_STARTED] == 0
    # One it tunes that the old trials lack: nothing fits either.
    extra = make_params(tmp_path, {"weight_decay": {"type": "log_uniform", "min": 1e-6, "max": 1e-2}})
    assert fit_space(old[0].params, extra.search_space) is None
    # Off the new step grid is outside too.
    stepped = make_params(tmp_path, {"dropout": {"type": "uniform", "min": 0.05, "max": 0.25, "step": 0.1}})
    assert fit_space({**old[0].params, "dropout": 0.1}, stepped.search_space) is None


def test_an_identical_configuration_is_reused_not_trained_again(prepared: tuple, tmp_path: Path) -> None:
    # Four configurations; the grid runs three (all four would exhaust it: see the report of this test).
    space = {"lr": None, "dropout": None, "width": {"type": "choice", "values": [16, 32]}}
    db, none = tmp_path / "study.db", {"name": "none"}
    grid = run(make_params(tmp_path, space, n_trials=3, sampler={"name": "grid"}, pruner=none), prepared, db)
    done = {(t.params["n_layers"], t.params["width"]): t for t in grid.trials}
    assert len(done) == 3 and all(t.state == TrialState.COMPLETE for t in done.values())
    # Another sampler is another study: what it proposes that the grid ran is taken, not trained.
    tpe = run(make_params(tmp_path, space, n_trials=3, pruner=none), prepared, db)
    mine = own(tpe.trials)
    reused = [t for t in mine if REUSED_FROM in t.user_attrs]
    assert len(mine) == 3 and reused
    for t in mine:
        origin = done.get((t.params["n_layers"], t.params["width"]))
        checkpoint = checkpoints.trial_checkpoint(
            tmp_path / "ckpt", tpe.study_name, t.user_attrs["checkpoint"]
        )
        if origin is None:  # the one configuration no earlier study ran: trained
            assert REUSED_FROM not in t.user_attrs and checkpoint.exists()
            continue
        assert t.user_attrs[REUSED_FROM] == f"{grid.study_name}#{origin.number}"
        assert (t.values, t.intermediate_values) == (origin.values, origin.intermediate_values)
        assert t.user_attrs["best_epoch"] == origin.user_attrs["best_epoch"]
        assert not checkpoint.exists()  # never trained here
    assert len(reused) < 3  # the trained one shows that a checkpoint would be there
    view = within_budget(tpe, 3)
    assert statistics(view)["reused"] == len(reused) == summary(view)["reused"]
    column = export_trials(view, ["width"])[REUSED_FROM]
    assert list(column.fillna("")) == [t.user_attrs.get(REUSED_FROM, "") for t in mine]


def test_warm_start_none_does_not_reuse(prepared: tuple, tmp_path: Path) -> None:
    space = {"lr": None, "dropout": None, "width": {"type": "choice", "values": [16]}, "n_layers": None}
    db, none = tmp_path / "study.db", {"name": "none"}
    first = run(make_params(tmp_path, space, n_trials=1, pruner=none), prepared, db)
    other = make_params(
        tmp_path, space, n_trials=1, pruner=none, sampler={"name": "random"}, warm_start="none"
    )
    (again,) = run(other, prepared, db).trials  # the one configuration there is, trained again
    assert REUSED_FROM not in again.user_attrs and again.params == first.trials[0].params


def test_a_fresh_start_is_cold(earlier: tuple[Path, list], prepared: tuple, tmp_path: Path) -> None:
    # hpo.fresh keeps the old study as a backup beside the new one: never a source.
    db, _ = earlier
    study = run(make_params(tmp_path, fresh=True, n_trials=1), prepared, copy_of(db, tmp_path))
    assert study.user_attrs[WARM_STARTED] == 0 and len(study.trials) == 1
