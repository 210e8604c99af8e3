"""Event hooks besides ``hpo.callbacks``: ``hpo.on_new_best`` and ``hpo.on_sweep_end``.

``on_new_best`` hears ``(study, trial, improvement)`` when a trial strictly betters the study's
best (not on a tie; improvement is the absolute gain, None for the first); ``on_sweep_end`` hears
``(study)`` once, when the sweep ends with its budget met or stopped. Real sweeps on SQLite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.sweep.hooks import NewBestHooks
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, TINY_PARAMS, subprocess_env

NEW_BEST: list[tuple[int, float | None]] = []
ENDS: list[tuple[str, int]] = []


def on_new_best(study: optuna.Study, trial: FrozenTrial, improvement: float | None) -> None:
    """A user hook (hpo.on_new_best) that remembers what it heard."""
    NEW_BEST.append((trial.number, improvement))


def on_sweep_end(study: optuna.Study) -> None:
    """A user hook (hpo.on_sweep_end): the study and how many trials it finished by then."""
    ENDS.append((study.study_name, sum(t.state.is_finished() for t in study.trials)))


def stop_after_two(study: optuna.Study, trial: FrozenTrial) -> None:
    """An hpo.callbacks hook that stops the sweep, as Optuna users write one."""
    if trial.number >= 1:
        study.stop()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    NEW_BEST.clear()
    ENDS.clear()


def raw_params(tmp_path: Path, **hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    hooks = {
        "on_new_best": ["tests.test_event_callbacks:on_new_best"],
        "on_sweep_end": ["tests.test_event_callbacks:on_sweep_end"],
    }
    settings = {
        "checkpoint_dir": str(tmp_path / "ckpt"),
        "sampler": {"name": "random"},
        "pruner": {"name": "none"},
    }
    raw["hpo"].update({**settings, **hooks, **hpo})
    raw["train"].update(max_epochs=2, device="cpu")
    return raw


def run(raw: dict[str, Any], prepared: tuple, db: Path) -> optuna.Study:
    return sweep(parse_params(raw), prepared[0], prepared[1], sqlite_spec(db), NullTracker())


def expected_new_bests(values: list[float], maximize: bool) -> list[tuple[int, float | None]]:
    out: list[tuple[int, float | None]] = []
    best: float | None = None
    for number, value in enumerate(values):
        if best is None or (value > best if maximize else value < best):
            out.append((number, None if best is None else abs(value - best)))
            best = value
    return out


@pytest.mark.parametrize(
    ("metric", "values", "calls"),
    [
        ("accuracy", [0.5, 0.7, 0.7, 0.6, 0.9], [(0, None), (1, 0.2), (4, 0.2)]),
        ("rmse", [3.0, 2.0, 2.0, 2.5, 1.5], [(0, None), (1, 1.0), (4, 0.5)]),
    ],
)
def test_new_best_is_strict_and_its_improvement_absolute(
    tmp_path: Path, metric: str, values: list[float], calls: list[tuple[int, float | None]]
) -> None:
    direction: Literal["maximize", "minimize"] = "maximize" if metric == "accuracy" else "minimize"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction=direction)
    hook = NewBestHooks(metric, [on_new_best])
    # As a sweep calls it: right after each trial finishes, with the study as it stands then.
    for trial in (create_trial(state=TrialState.FAIL), create_trial(state=TrialState.PRUNED)):
        study.add_trial(trial)
        hook(study, study.trials[-1])
    for value in values:
        study.add_trial(create_trial(value=value))
        hook(study, study.trials[-1])
    assert [(n - 2, pytest.approx(i) if i is not None else None) for n, i in NEW_BEST] == calls


def test_a_sweep_calls_the_hooks_on_each_new_best_and_once_at_its_end(
    tmp_path: Path, prepared: tuple
) -> None:
    study = run(raw_params(tmp_path, n_trials=4), prepared, tmp_path / "s.db")
    values = [t.value for t in study.trials]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    expected = expected_new_bests(values, maximize=True)  # type: ignore[arg-type]
    assert [n for n, _ in NEW_BEST] == [n for n, _ in expected]
    assert [i for _, i in NEW_BEST] == [pytest.approx(i) if i is not None else None for _, i in expected]
    assert [(study.study_name, 4)] == ENDS
    # A rerun with the budget met finishes again, adding nothing: its end is heard, no trial is a new best.
    NEW_BEST.clear()
    run(raw_params(tmp_path, n_trials=4), prepared, tmp_path / "s.db")
    assert NEW_BEST == [] and [(study.study_name, 4)] * 2 == ENDS


def test_a_sweep_stopped_by_a_hook_still_ends_once(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path, n_trials=5, callbacks=["tests.test_event_callbacks:stop_after_two"])
    study = run(raw, prepared, tmp_path / "s.db")
    assert len(study.trials) == 2 and [(study.study_name, 2)] == ENDS


def test_a_bad_end_hook_fails_before_any_trial(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path, on_sweep_end=["tests.test_event_callbacks:nope"])
    with pytest.raises(
        HpopipeError, match=r"hpo\.on_sweep_end: 'tests\.test_event_callbacks' has no function"
    ):
        run(raw, prepared, tmp_path / "s.db")
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}") == []
    raw = raw_params(tmp_path, on_new_best=["tests.test_event_callbacks:nope"])
    with pytest.raises(
        HpopipeError, match=r"hpo\.on_new_best: 'tests\.test_event_callbacks' has no function"
    ):
        run(raw, prepared, tmp_path / "s2.db")
    assert ENDS == []


@pytest.mark.parametrize(
    ("hpo", "fragment"),
    [
        ({"on_new_best": ["os:system"]}, "hpo.on_new_best: 'os:system' names Python's standard library"),
        (
            {"on_sweep_end": ["notes.txt"]},
            "hpo.on_sweep_end: 'notes.txt' must look like 'package.module:function'",
        ),
        (
            {"metrics": ["macro_f1", "n_params"], "metric": "macro_f1"},
            "hpo.on_new_best: a multi-objective sweep has no single best value",
        ),
    ],
)
def test_hook_settings_are_validated_like_callbacks(
    tmp_path: Path, hpo: dict[str, Any], fragment: str
) -> None:
    raw = raw_params(tmp_path, **hpo)
    with pytest.raises(HpopipeError) as err:
        parse_params(raw)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_validate_imports_the_event_hooks(tmp_path: Path) -> None:
    raw = raw_params(tmp_path, on_sweep_end=["tests.test_event_callbacks:missing"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    cmd = [sys.executable, "-m", "hpopipe.cli", "validate", "--params", str(path)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "hpo.on_sweep_end: 'tests.test_event_callbacks' has no function 'missing'" in proc.stderr
