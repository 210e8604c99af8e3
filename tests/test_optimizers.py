"""The optimiser and learning-rate schedule as ordinary keys, and tuned names nothing reads.

``train.optimizer`` (adamw, adam, sgd, rmsprop), ``train.momentum`` and ``train.schedule`` (none,
cosine, step) are fixed in ``train:`` or tuned in the space; a resumed trial equals a straight one
with its schedule; the defaults leave study names and best/config.yaml as they were; a tuned
name that neither the model nor the loop reads is refused in one line.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import hpopipe
from hpopipe.artifacts import sqlite_url
from hpopipe.config import TrainConfig, parse_params
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.best import BestConfig, Source
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.storage import sqlite_spec
from hpopipe.sweep.study import study_name
from hpopipe.tracking import NullTracker
from hpopipe.training import loop
from tests.conftest import REPO, TINY_PARAMS, subprocess_env

SPACE: dict[str, Any] = {
    "lr": {"type": "log_uniform", "min": 1e-3, "max": 3e-2},
    "optimizer": {"type": "choice", "values": ["adamw", "adam", "sgd", "rmsprop"]},
    "momentum": {"type": "uniform", "min": 0.5, "max": 0.95, "when": {"optimizer": ["sgd", "rmsprop"]}},
    "schedule": {"type": "choice", "values": ["none", "cosine", "step"]},
    "width": {"type": "choice", "values": [16]},
}


def raw_params(tmp_path: Path, **hpo: Any) -> dict[str, Any]:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(REPO / "data/raw/breast_cancer.csv")
    raw["hpo"].update({"checkpoint_dir": str(tmp_path / "ckpt"), "pruner": {"name": "none"}, **hpo})
    raw["train"].update(max_epochs=3, patience=10, device="cpu")
    return raw


def run(
    raw: dict[str, Any], prepared: tuple, db: Path, stop: Callable[[], bool] | None = None
) -> optuna.Study:
    return sweep(parse_params(raw), prepared[0], prepared[1], sqlite_spec(db), NullTracker(), stop)


# --- the loop ---------------------------------------------------------------------------------------


def test_tuned_settings_win_over_the_train_section_under_any_route() -> None:
    cfg = TrainConfig(optimizer="sgd", momentum=0.8, schedule="step", step_size=2, gamma=0.5)
    fixed = loop.settings({}, cfg)
    assert (fixed.optimizer, fixed.momentum, fixed.schedule, fixed.step_size, fixed.gamma) == (
        "sgd",
        0.8,
        "step",
        2,
        0.5,
    )
    tuned = loop.settings(
        {"optimizer": "rmsprop", "optimizer.momentum": 0.3, "train.schedule": "cosine", "train.gamma": 0.2},
        cfg,
    )
    assert (tuned.optimizer, tuned.momentum, tuned.schedule, tuned.gamma) == ("rmsprop", 0.3, "cosine", 0.2)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adamw", torch.optim.AdamW),
        ("adam", torch.optim.Adam),
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
    ],
)
def test_each_optimizer_is_built_with_the_settings(name: str, cls: type) -> None:
    s = loop.settings({"optimizer": name, "lr": 0.05, "weight_decay": 0.01, "momentum": 0.7}, TrainConfig())
    opt = loop.make_optimizer([torch.nn.Parameter(torch.zeros(2))], s)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 0.01)
    assert group.get("momentum", 0.7) == 0.7  # sgd and rmsprop take it; adam and adamw have none


def test_the_default_is_the_adamw_the_loop_always_used() -> None:
    s = loop.settings({}, TrainConfig(lr=0.002, weight_decay=0.03))
    opt = loop.make_optimizer([torch.nn.Parameter(torch.zeros(2))], s)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.03
    assert loop.make_schedule(opt, s, 10) is None


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("cosine", [0.1 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(5)]),
        ("step", [0.1, 0.1, 0.05, 0.05, 0.025]),
    ],
)
def test_schedules_set_each_epochs_learning_rate(schedule: str, expected: list[float]) -> None:
    s = loop.settings({"schedule": schedule}, TrainConfig(lr=0.1, step_size=2, gamma=0.5))
    opt = loop.make_optimizer([torch.nn.Parameter(torch.zeros(2))], s)
    sched = loop.make_schedule(opt, s, max_epochs=4)
    assert sched is not None
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(expected)


# --- sweeps -----------------------------------------------------------------------------------------


def test_a_sweep_with_optimizer_and_schedule_in_the_space_runs(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path, n_trials=6, sampler={"name": "random"})
    raw["search_space"] = SPACE
    study = run(raw, prepared, tmp_path / "s.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    assert len({t.params["optimizer"] for t in study.trials}) >= 2
    assert len({t.params["schedule"] for t in study.trials}) >= 2
    for t in study.trials:  # momentum is sampled only for the optimisers that read it
        assert ("momentum" in t.params) == (t.params["optimizer"] in ("sgd", "rmsprop"))
    # The tuned optimiser reached the loop: the same trial position with another optimiser trains otherwise.
    values = {t.params["optimizer"]: t.intermediate_values for t in study.trials}
    assert len({tuple(v.values()) for v in values.values()}) == len(values)


def _stop_after_epoch(db: Path, epoch: int) -> Callable[[], bool]:
    """True once the study in ``db`` has a trial with ``epoch`` epochs reported (a graceful stop then).

    Read from the study, not from a checkpoint: under the default ``train.checkpoint_every_s`` a
    trial this short writes its checkpoint only when it stops.
    """
    storages: list[optuna.storages.RDBStorage] = []

    def stop() -> bool:
        if not db.exists():
            return False
        if not storages:
            storages.append(optuna.storages.RDBStorage(sqlite_url(db)))
        names = optuna.study.get_all_study_names(storages[0])
        if not names:
            return False
        trials = optuna.load_study(study_name=names[0], storage=storages[0]).get_trials(deepcopy=False)
        return any(len(t.intermediate_values) >= epoch for t in trials)

    return stop


def test_an_interrupted_then_resumed_cosine_trial_equals_the_straight_run(
    tmp_path: Path, prepared: tuple
) -> None:
    # sgd with momentum and a cosine schedule: both the optimiser's and the schedule's state must come back.
    def params(where: Path) -> dict[str, Any]:
        raw = raw_params(where, n_trials=1, sampler={"name": "random"})
        # A pruner that may decide at every epoch, so the study holds each epoch's value as it
        # ends (under Hyperband the ones between its rungs wait for the next rung): the stop reads them.
        raw["hpo"]["pruner"] = {"name": "median"}
        raw["train"].update(max_epochs=5, optimizer="sgd", momentum=0.9, schedule="cosine", lr=0.05)
        # dropout: the RNG state must come back too.
        raw["search_space"] = {
            "width": SPACE["width"],
            "dropout": {"type": "uniform", "min": 0.1, "max": 0.3},
        }
        return raw

    straight = run(params(tmp_path / "a"), prepared, tmp_path / "a.db")
    (done,) = straight.trials
    interrupted = run(
        params(tmp_path / "b"), prepared, tmp_path / "b.db", _stop_after_epoch(tmp_path / "b.db", 2)
    )
    first = interrupted.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"].startswith("interrupted")
    assert list(first.intermediate_values) == [1, 2]
    resumed = run(params(tmp_path / "b"), prepared, tmp_path / "b.db")
    retry = resumed.trials[-1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] == 2
    assert retry.params == done.params
    assert retry.intermediate_values == done.intermediate_values  # every epoch's value, exactly
    assert retry.value == done.value and len(done.intermediate_values) == 5


# --- identity: the defaults change nothing ----------------------------------------------------------


def test_default_settings_leave_study_names_and_best_config_as_they_were(tmp_path: Path) -> None:
    raw = raw_params(tmp_path)
    plain = parse_params(raw)
    old_keys = {"max_epochs", "patience", "min_delta", "batch_size", "lr", "weight_decay", "device"}
    assert set(plain.train.settings()) == old_keys  # what study names hashed before the new keys
    spelled = parse_params({**raw, "train": {**raw["train"], "optimizer": "adamw", "schedule": "none"}})
    assert study_name(spelled, "fp") == study_name(plain, "fp")
    other = parse_params({**raw, "train": {**raw["train"], "schedule": "cosine"}})
    assert study_name(other, "fp") != study_name(plain, "fp")

    def best_train(train: TrainConfig) -> dict[str, Any]:
        source = Source(trial=0, sweep_value=0.9, cv_mean=0.9, cv_std=0.0, cv_folds=2)
        best = BestConfig(
            seed=1, model=plain.model, params={}, train=train, epochs=3, metric="accuracy", source=source
        )
        return best.layout()["train"]

    assert set(best_train(plain.train)) == old_keys
    sgd = best_train(other.train.model_copy(update={"optimizer": "sgd"}))
    assert (sgd["optimizer"], sgd["schedule"]) == ("sgd", "cosine") and "momentum" not in sgd


# --- tuned names nothing reads ----------------------------------------------------------------------


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(HpopipeError) as err:
        parse_params(raw)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_tuned_name_nothing_reads_is_refused_in_one_line(tmp_path: Path) -> None:
    raw = raw_params(tmp_path)
    raw["search_space"]["seed_shift"] = {"type": "int_uniform", "min": 0, "max": 2}
    assert error_of(raw) == (
        "params.yaml: search_space.seed_shift: nothing reads it: the mlp model reads n_layers, width, "
        "dropout, norm, embedding, embedding_scale; the training loop reads lr, weight_decay, batch_size, "
        "optimizer, schedule, momentum"
    )
    raw["model"] = {"name": "resnet"}
    del raw["search_space"]["seed_shift"]
    assert "search_space.n_layers: nothing reads it: the resnet model reads n_blocks" in error_of(raw)


@pytest.mark.parametrize(
    ("space", "train", "fragment"),
    [
        (
            {"momentum": {"type": "uniform", "min": 0.5, "max": 0.9}},
            {},
            "search_space.momentum: train.optimizer is adamw, which reads no momentum",
        ),
        (
            {"optimizer.momentum": {"type": "uniform", "min": 0.5, "max": 0.9}},
            {"optimizer": "adam"},
            "search_space.optimizer.momentum: train.optimizer is adam, which reads no momentum",
        ),
        (
            {"optimizer": {"type": "choice", "values": ["adamw", "lion"]}},
            {},
            "search_space.optimizer: ['lion'] are not among adamw, adam, sgd, rmsprop",
        ),
        (
            {"train.schedule": {"type": "uniform", "min": 0, "max": 1}},
            {},
            "search_space.train.schedule: tune it as a choice among none, cosine, step",
        ),
        (
            {"momentum": {"type": "uniform", "min": 0.5, "max": 1.0}},
            {"optimizer": "sgd"},
            "search_space.momentum: momentum must lie in [0, 1)",
        ),
        ({"train.step": {"type": "choice", "values": [2]}}, {}, "train.step is read by nothing"),
    ],
)
def test_loop_names_the_loop_cannot_use_are_refused(
    tmp_path: Path, space: dict[str, Any], train: dict[str, Any], fragment: str
) -> None:
    raw = raw_params(tmp_path)
    raw["search_space"].update(space)
    raw["train"].update(train)
    assert fragment in error_of(raw)


def test_what_the_loop_or_the_space_reads_passes(tmp_path: Path) -> None:
    raw = raw_params(tmp_path)
    raw["train"]["optimizer"] = "rmsprop"
    raw["search_space"] = {
        "optimizer.momentum": {"type": "choice", "values": [0.0, 0.5]},
        "train.step_size": {"type": "int_uniform", "min": 1, "max": 3},
        "train.gamma": {"type": "uniform", "min": 0.1, "max": 0.9},
        "wide": {"type": "choice", "values": [True, False]},  # read by the space: it gates width
        "width": {"type": "choice", "values": [64], "when": {"wide": True}},
    }
    assert list(parse_params(raw).search_space) == list(raw["search_space"])


def validate(params: dict[str, Any], where: Path) -> subprocess.CompletedProcess[str]:
    path = where / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "hpopipe.cli", "validate", "--params", str(path)]
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    return subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=300)


def test_a_declared_factory_is_checked_and_an_undeclared_one_is_not(tmp_path: Path, prepared: tuple) -> None:
    raw = raw_params(tmp_path)
    raw["model"] = {"factory": "tests.factories:build_declared"}
    raw["search_space"] = {"hidden": {"type": "choice", "values": [4, 8]}, "seed_shift": SPACE["width"]}
    parse_params(raw)  # the declaration needs the factory's import: not done when params.yaml is read
    proc = validate(raw, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"hpopipe: error: {tmp_path / 'params.yaml'}: search_space.seed_shift: nothing reads it: "
        "the factory 'tests.factories:build_declared' reads hidden; "
        "the training loop reads lr, weight_decay, batch_size, optimizer, schedule, momentum"
    ]
    with pytest.raises(HpopipeError, match=r"search_space\.seed_shift: nothing reads it"):
        run(raw, prepared, tmp_path / "s.db")  # the hpo stage's sweep: refused before any trial
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}") == []

    raw["model"] = {"factory": "tests.factories:build_linear"}  # undeclared: read as before, unchecked
    proc = validate(raw, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_consumes_takes_plain_names() -> None:
    with pytest.raises(TypeError, match="without dots"):
        hpopipe.consumes("encoder.depth")
