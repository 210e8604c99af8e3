"""THE training loop: determinism, early stopping, reporting, checkpoints and resume, divergence."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hpopipe import metrics
from hpopipe.config import ModelConfig, TrainConfig
from hpopipe.errors import HpopipeError, TrainingInterrupted
from hpopipe.training import checkpoints, loop
from hpopipe.training.models import build

MLP = ModelConfig(name="mlp")
SMALL = {"width": 16, "n_layers": 1}
CLS = loop.Task("classification", 2, "accuracy")
REG = loop.Task("regression", 0, "rmse")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny matrices: extra intra-op threads only contend (5x slower on a busy 2-core box). Restored after.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {"max_epochs": 5, "patience": 100, "batch_size": 32, "device": "cpu"}
    return TrainConfig(**{**base, **kw})


def splits(problem: dict[str, np.ndarray], task: loop.Task) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    y = problem["y_cls"] if task.kind == "classification" else problem["y_reg"]
    x = problem["x"]
    return (x[:240], y[:240]), (x[240:], y[240:])


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def val_score(result: loop.FitResult, task: loop.Task, val: tuple[np.ndarray, np.ndarray]) -> float:
    output = loop.predict(result.model, torch.from_numpy(val[0]), task, result.y_scale)
    return metrics.score(task.metric, val[1], output, task.n_classes)


def test_threads_auto_is_one_and_an_int_is_taken_as_given(problem: dict[str, np.ndarray]) -> None:
    """``train.threads`` is applied by fit itself, so every stage and worker that trains follows it."""
    train, val = splits(problem, CLS)
    loop.fit(MLP, SMALL, cfg(max_epochs=1, threads=2), CLS, train, val, seed=0)
    assert torch.get_num_threads() == 2
    loop.fit(MLP, SMALL, cfg(max_epochs=1), CLS, train, val, seed=0)  # threads: auto
    assert torch.get_num_threads() == loop.AUTO_THREADS == 1


# --- determinism ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [CLS, REG], ids=["classification", "regression"])
def test_same_seed_is_bit_identical(problem: dict[str, np.ndarray], task: loop.Task) -> None:
    tr, val = splits(problem, task)
    a = loop.fit(MLP, SMALL, cfg(), task, tr, val, seed=11)
    b = loop.fit(MLP, SMALL, cfg(), task, tr, val, seed=11)
    c = loop.fit(MLP, SMALL, cfg(), task, tr, val, seed=12)
    assert same_weights(a.model.state_dict(), b.model.state_dict())
    assert a.history == b.history
    assert (a.best_epoch, a.best_score, a.y_scale) == (b.best_epoch, b.best_score, b.y_scale)
    assert not same_weights(a.model.state_dict(), c.model.state_dict())
    assert a.history != c.history


def test_history_rows(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, CLS)
    result = loop.fit(MLP, SMALL, cfg(max_epochs=4, lr=1e-2), CLS, tr, val, seed=0)
    assert [row["epoch"] for row in result.history] == [1.0, 2.0, 3.0, 4.0]
    for row in result.history:
        assert set(row) == {"epoch", "train_loss", "val_accuracy"}
        assert math.isfinite(row["train_loss"]) and 0.0 <= row["val_accuracy"] <= 1.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]  # it learns
    assert result.resumed_from_epoch == 0


def test_regression_target_is_scaled_and_predictions_are_not(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, REG)
    result = loop.fit(MLP, SMALL, cfg(max_epochs=8, lr=1e-2), REG, tr, val, seed=0)
    assert result.y_scale == pytest.approx((float(np.mean(tr[1])), float(np.std(tr[1]))))
    output = loop.predict(result.model, torch.from_numpy(val[0]), REG, result.y_scale)
    assert output.shape == (60,)
    # On the original scale the fit beats predicting the mean by far.
    assert metrics.score("r2", val[1], output) > 0.5
    assert val_score(result, REG, val) == pytest.approx(result.best_score, rel=1e-9)


def test_without_validation_trains_exactly_epochs(problem: dict[str, np.ndarray]) -> None:
    tr, _ = splits(problem, CLS)
    result = loop.fit(MLP, SMALL, cfg(max_epochs=50, patience=1), CLS, tr, None, seed=0, epochs=3)
    assert len(result.history) == 3
    assert result.best_epoch == 3
    assert math.isnan(result.best_score)
    assert all(set(row) == {"epoch", "train_loss"} for row in result.history)


# --- early stopping -----------------------------------------------------------------------------------


def test_early_stopping_on_a_plateau(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, CLS)
    # With a vanishing learning rate the validation score cannot move: epoch 1 stays the best.
    result = loop.fit(MLP, SMALL, cfg(max_epochs=10, patience=1, lr=1e-12), CLS, tr, val, seed=0)
    assert len(result.history) == 2
    assert result.best_epoch == 1
    assert result.best_score == result.history[0]["val_accuracy"]


def test_min_delta_counts_small_gains_as_no_gain(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, CLS)
    result = loop.fit(
        MLP, SMALL, cfg(max_epochs=10, patience=2, min_delta=1.0, lr=1e-2), CLS, tr, val, seed=0
    )
    # Accuracy can never improve by more than 1.0, so only the first epoch counts.
    assert (result.best_epoch, len(result.history)) == (1, 3)


def test_best_weights_are_restored(problem: dict[str, np.ndarray], tmp_path: Path) -> None:
    tr, val = splits(problem, REG)
    settings = cfg(max_epochs=10, patience=3, batch_size=16, lr=0.05)
    params = {"width": 32, "n_layers": 1, "dropout": 0.0}
    for seed in range(6):  # a noisy run whose last epoch is not its best
        ckpt = tmp_path / f"{seed}.pt"
        result = loop.fit(MLP, params, settings, REG, tr, val, seed=seed, checkpoint=ckpt)
        if result.best_epoch < len(result.history):
            break
    else:
        pytest.fail("no seed gave a run whose best epoch precedes its last")
    scores = [row["val_rmse"] for row in result.history]
    assert result.best_score == min(scores) == scores[result.best_epoch - 1]
    assert len(result.history) in (result.best_epoch + settings.patience, settings.max_epochs)
    assert val_score(result, REG, val) == pytest.approx(result.best_score, rel=1e-9)
    assert val_score(result, REG, val) != pytest.approx(scores[-1], rel=1e-9)
    last = checkpoints.load(ckpt)
    assert same_weights(result.model.state_dict(), last["best_state"])
    assert not same_weights(result.model.state_dict(), last["model"])


# --- reporter -------------------------------------------------------------------------------------------


class Stop(Exception):
    pass


@pytest.mark.parametrize("every_s", [30.0, 0.0], ids=["default", "every-epoch"])
def test_reporter_sees_every_epoch_and_can_stop_training(
    problem: dict[str, np.ndarray], tmp_path: Path, every_s: float
) -> None:
    tr, val = splits(problem, CLS)
    calls: list[tuple[int, float]] = []

    def reporter(epoch: int, value: float) -> None:
        calls.append((epoch, value))
        if epoch == 2:
            raise Stop

    ckpt = tmp_path / "trial.pt"
    settings = cfg(max_epochs=10, checkpoint_every_s=every_s)
    with pytest.raises(Stop):
        loop.fit(MLP, SMALL, settings, CLS, tr, val, seed=0, reporter=reporter, checkpoint=ckpt)
    assert [epoch for epoch, _ in calls] == [1, 2]
    if every_s:  # a pruned run writes nothing more (its checkpoint would be deleted right after)
        assert not ckpt.exists()
        return
    saved = checkpoints.load(ckpt)  # due at every epoch: written before the report
    assert saved["epoch"] == 2
    assert [row["val_accuracy"] for row in saved["history"]] == [value for _, value in calls]


def test_reporter_values_match_history(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, REG)
    calls: list[tuple[int, float]] = []
    result = loop.fit(
        MLP, SMALL, cfg(max_epochs=3), REG, tr, val, seed=0, reporter=lambda e, v: calls.append((e, v))
    )
    assert calls == [(int(row["epoch"]), row["val_rmse"]) for row in result.history]


def test_reporter_is_not_called_without_validation(problem: dict[str, np.ndarray]) -> None:
    tr, _ = splits(problem, CLS)
    calls: list[int] = []
    loop.fit(MLP, SMALL, cfg(), CLS, tr, None, seed=0, epochs=2, reporter=lambda e, v: calls.append(e))
    assert calls == []


# --- checkpoints and resume -----------------------------------------------------------------------------


def test_by_default_a_short_run_writes_one_checkpoint_at_its_end(
    problem: dict[str, np.ndarray], tmp_path: Path
) -> None:
    assert TrainConfig().checkpoint_every_s == 30.0
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "scratch" / "trial.pt"
    seen: list[bool] = []
    result = loop.fit(
        MLP, SMALL, cfg(max_epochs=4), CLS, tr, val, seed=0, checkpoint=ckpt,
        reporter=lambda epoch, value: seen.append(ckpt.exists()),
    )  # fmt: skip
    assert seen == [False] * 4  # no epoch of a run shorter than 30 s is saved on its own
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["trial.pt"]  # one save: nothing rotated
    final = checkpoints.load(ckpt)
    assert final["epoch"] == 4 and final["history"] == result.history


def test_a_graceful_stop_saves_its_epoch_before_it_raises(
    problem: dict[str, np.ndarray], tmp_path: Path
) -> None:
    """Under the default interval too: the retry of a stopped trial goes on from the epoch it stopped at."""
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "trial.pt"
    straight = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3)
    epochs: list[int] = []
    with pytest.raises(TrainingInterrupted):
        loop.fit(
            MLP, SMALL, cfg(), CLS, tr, val, seed=3, checkpoint=ckpt,
            reporter=lambda epoch, value: epochs.append(epoch), should_stop=lambda: len(epochs) >= 2,
        )  # fmt: skip
    assert checkpoints.load(ckpt)["epoch"] == 2
    resumed = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from_epoch == 2
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.history == straight.history


def test_checkpoint_is_replaced_atomically_each_epoch(problem: dict[str, np.ndarray], tmp_path: Path) -> None:
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "scratch" / "trial.pt"
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    listings: list[list[str]] = []

    def reporter(epoch: int, value: float) -> None:
        # Called right after the epoch's checkpoint is written. A hard link keeps this version's inode:
        # if a later epoch rewrote the file in place, the link would show the later content.
        os.link(ckpt, snapshots / f"{epoch}.pt")
        listings.append(sorted(p.name for p in ckpt.parent.iterdir()))

    every_epoch = cfg(max_epochs=3, checkpoint_every_s=0)  # the mechanism each save goes through
    result = loop.fit(MLP, SMALL, every_epoch, CLS, tr, val, seed=0, reporter=reporter, checkpoint=ckpt)
    # No temp file left behind; from epoch 2 on the epoch before is kept as a fallback.
    assert listings == [["trial.pt"], ["trial.prev.pt", "trial.pt"], ["trial.prev.pt", "trial.pt"]]
    assert checkpoints.load(checkpoints.previous(ckpt))["epoch"] == 2
    for epoch in (1, 2, 3):
        saved = checkpoints.load(snapshots / f"{epoch}.pt")
        assert saved["epoch"] == epoch
        assert saved["history"] == result.history[:epoch]
    assert len({(snapshots / f"{e}.pt").stat().st_ino for e in (1, 2, 3)}) == 3
    final = checkpoints.load(ckpt)
    assert final["params_hash"] == checkpoints.params_hash(SMALL, 0)
    assert final["history"] == result.history
    assert set(final) >= {"model", "optimizer", "best_state", "rng_torch", "rng_generator"}


@pytest.mark.parametrize("with_val", [True, False], ids=["val", "no-val"])
@pytest.mark.parametrize("task", [CLS, REG], ids=["classification", "regression"])
def test_resume_equals_straight_run(
    problem: dict[str, np.ndarray], tmp_path: Path, task: loop.Task, with_val: bool
) -> None:
    tr, val = splits(problem, task)
    validation = val if with_val else None
    params = {"width": 16, "n_layers": 2, "dropout": 0.2}  # dropout: the RNG state must be resumed too
    straight = loop.fit(MLP, params, cfg(), task, tr, validation, seed=3, epochs=5)
    ckpt = tmp_path / "trial.pt"
    first = loop.fit(MLP, params, cfg(), task, tr, validation, seed=3, epochs=3, checkpoint=ckpt)
    assert checkpoints.load(ckpt)["epoch"] == 3 and len(first.history) == 3
    resumed = loop.fit(
        MLP, params, cfg(), task, tr, validation, seed=3, epochs=5, checkpoint=ckpt, resume=True
    )
    assert resumed.resumed_from_epoch == 3
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.history == straight.history
    assert (resumed.best_epoch, resumed.y_scale) == (straight.best_epoch, straight.y_scale)
    assert resumed.best_score == straight.best_score or (math.isnan(straight.best_score) and not with_val)
    assert checkpoints.load(ckpt)["epoch"] == 5


def test_checkpoint_is_not_resumed_unless_asked(problem: dict[str, np.ndarray], tmp_path: Path) -> None:
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "trial.pt"
    loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=3, checkpoint=ckpt)
    fresh = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=2, checkpoint=ckpt)
    assert fresh.resumed_from_epoch == 0
    assert len(fresh.history) == 2
    assert checkpoints.load(ckpt)["epoch"] == 2  # overwritten


def test_checkpoint_of_other_params_is_not_resumed(problem: dict[str, np.ndarray], tmp_path: Path) -> None:
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "trial.pt"
    loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=3, checkpoint=ckpt)
    other_seed = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=4, epochs=2, checkpoint=ckpt, resume=True)
    assert other_seed.resumed_from_epoch == 0 and len(other_seed.history) == 2
    loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=3, checkpoint=ckpt)
    other_params = {**SMALL, "width": 8}
    result = loop.fit(MLP, other_params, cfg(), CLS, tr, val, seed=3, epochs=2, checkpoint=ckpt, resume=True)
    assert result.resumed_from_epoch == 0 and len(result.history) == 2


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_checkpoint_is_ignored(problem: dict[str, np.ndarray], tmp_path: Path, damage: str) -> None:
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "trial.pt"
    loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=3, checkpoint=ckpt)
    for path in (ckpt, checkpoints.previous(ckpt)):  # both damaged: nothing to fall back to
        if not path.exists():  # one save (the default's, at the end): no previous file
            continue
        blob = path.read_bytes()
        path.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else b"")
    straight = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=4)
    result = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=4, checkpoint=ckpt, resume=True)
    assert result.resumed_from_epoch == 0
    assert same_weights(result.model.state_dict(), straight.model.state_dict())


def test_resuming_an_early_stopped_run_changes_nothing(
    problem: dict[str, np.ndarray], tmp_path: Path
) -> None:
    tr, val = splits(problem, CLS)
    settings = cfg(max_epochs=10, patience=1, lr=1e-12)
    ckpt = tmp_path / "trial.pt"
    done = loop.fit(MLP, SMALL, settings, CLS, tr, val, seed=0, checkpoint=ckpt)
    assert len(done.history) == 2  # stopped early
    again = loop.fit(MLP, SMALL, settings, CLS, tr, val, seed=0, checkpoint=ckpt, resume=True)
    assert again.history == done.history


# --- weights_only loading --------------------------------------------------------------------------------


class Payload:
    """A custom class: pickling it stores an import path and a constructor call."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def test_load_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "EXECUTED"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload(str(marker))}, path)
    with pytest.raises(checkpoints.CheckpointError, match="Weights only load failed"):
        checkpoints.load(path)
    assert not marker.exists()
    # The same file, loaded the unsafe way, runs code: the refusal above is what protects us.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_accepts_tensors_and_plain_containers(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    payload = {"w": torch.arange(3.0), "meta": {"name": "x", "n": [1, 2.5, None, True]}}
    checkpoints.save(path, payload)
    loaded = checkpoints.load(path)
    assert torch.equal(loaded["w"], payload["w"]) and loaded["meta"] == payload["meta"]  # type: ignore[arg-type]


def test_load_refuses_a_non_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2], path)
    with pytest.raises(checkpoints.CheckpointError, match="not a checkpoint"):
        checkpoints.load(path)
    assert checkpoints.try_load(path) is None


@pytest.mark.parametrize("content", ["object", "garbage"])
def test_try_load_ignores_unsafe_or_garbage_checkpoint(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "trial.pt"
    marker = tmp_path / "EXECUTED"
    if content == "object":
        torch.save({"extra": Payload(str(marker))}, path)
    else:
        path.write_bytes(b"definitely not a checkpoint" * 10)
    assert checkpoints.try_load(path) is None
    assert "ignoring unreadable checkpoint" in caplog.text
    assert not marker.exists()


def test_unsafe_checkpoint_is_not_resumed(problem: dict[str, np.ndarray], tmp_path: Path) -> None:
    tr, val = splits(problem, CLS)
    ckpt = tmp_path / "trial.pt"
    marker = tmp_path / "EXECUTED"
    torch.save({"params_hash": checkpoints.params_hash(SMALL, 3), "extra": Payload(str(marker))}, ckpt)
    result = loop.fit(MLP, SMALL, cfg(), CLS, tr, val, seed=3, epochs=2, checkpoint=ckpt, resume=True)
    assert result.resumed_from_epoch == 0 and len(result.history) == 2
    assert not marker.exists()
    assert checkpoints.load(ckpt)["epoch"] == 2  # replaced by a clean checkpoint


# --- divergence -----------------------------------------------------------------------------------------


def test_huge_learning_rate_diverges(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, REG)
    with pytest.raises(loop.TrainingDiverged, match="loss became nan"):
        loop.fit(MLP, {"lr": 1e30}, cfg(), REG, tr, val, seed=0)


def test_infinite_input_diverges(problem: dict[str, np.ndarray]) -> None:
    (x, y), val = splits(problem, CLS)
    x = x.copy()
    x[7, 2] = np.inf
    with pytest.raises(loop.TrainingDiverged, match="at epoch 1"):
        loop.fit(MLP, SMALL, cfg(), CLS, (x, y), val, seed=0)


@pytest.mark.parametrize("task", [REG, loop.Task("classification", 2, "log_loss")], ids=["rmse", "log_loss"])
def test_divergence_seen_only_by_validation(problem: dict[str, np.ndarray], task: loop.Task) -> None:
    tr, val = splits(problem, task)
    # One batch per epoch: the exploding step is the epoch's last, so only validation sees it.
    with pytest.raises(loop.TrainingDiverged):
        loop.fit(MLP, {"lr": 1e30}, cfg(batch_size=512), task, tr, val, seed=0)


# --- model families ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (ModelConfig(name="mlp"), {"width": 16, "n_layers": 2}),
        (ModelConfig(name="resnet"), {"d_main": 16, "n_blocks": 1, "d_hidden_factor": 1.5}),
        (ModelConfig(factory="tests.factories:build_linear", params={"hidden": 4}), {}),
    ],
    ids=["mlp", "resnet", "factory"],
)
@pytest.mark.parametrize("task", [CLS, REG], ids=["classification", "regression"])
def test_model_families_train(
    problem: dict[str, np.ndarray], model: ModelConfig, params: dict[str, Any], task: loop.Task
) -> None:
    tr, val = splits(problem, task)
    result = loop.fit(model, params, cfg(max_epochs=6, lr=1e-2, batch_size=30), task, tr, val, seed=0)
    assert len(result.history) == 6
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    if task.kind == "classification":
        assert result.best_score > 0.75  # the classes are nearly linearly separable
    else:
        assert result.best_score < 0.5 * float(np.std(val[1]))  # far better than predicting a constant
    output = loop.predict(result.model, torch.from_numpy(val[0]), task, result.y_scale)
    assert output.shape == ((60, 2) if task.kind == "classification" else (60,))


def test_factory_receives_merged_params() -> None:
    model_cfg = ModelConfig(factory="tests.factories:build_linear", params={"hidden": 4})
    assert build(model_cfg, {}, 5, 2)[0].out_features == 4  # type: ignore[index]
    assert build(model_cfg, {"hidden": 7}, 5, 2)[0].out_features == 7  # type: ignore[index]  # tuned value wins


def test_resnet_depth_and_width_follow_params() -> None:
    net = build(ModelConfig(name="resnet"), {"d_main": 12, "n_blocks": 3, "d_hidden_factor": 2.0}, 5, 3)
    assert len(net.blocks) == 3  # type: ignore[arg-type]
    assert net.stem.out_features == 12 and net.blocks[0].body[1].out_features == 24  # type: ignore[union-attr, index]
    assert net(torch.zeros(4, 5)).shape == (4, 3)


@pytest.mark.parametrize(
    ("factory", "fragment"),
    [
        ("tests.no_such_module:build", "cannot import 'tests.no_such_module'"),
        ("tests.factories:missing", "has no function 'missing'"),
        ("tests.factories:NOT_CALLABLE", "has no function 'NOT_CALLABLE'"),
        ("tests.factories:build_not_a_module", "returned dict, not a torch Module"),
    ],
)
def test_bad_factory_is_a_user_error(factory: str, fragment: str) -> None:
    with pytest.raises(HpopipeError) as info:
        build(ModelConfig(factory=factory), {}, 5, 2)
    assert str(info.value).startswith("model.factory: ")
    assert fragment in str(info.value)


@pytest.mark.parametrize(("norm", "layer"), [("batch", torch.nn.BatchNorm1d), ("layer", torch.nn.LayerNorm)])
def test_mlp_norm_adds_one_normalisation_per_block(norm: str, layer: type[torch.nn.Module]) -> None:
    net = build(MLP, {"width": 8, "n_layers": 3, "norm": norm}, 5, 2)
    norms = [m for m in net.modules() if isinstance(m, layer)]
    assert len(norms) == 3 and all(
        n.normalized_shape == (8,) if norm == "layer" else n.num_features == 8 for n in norms
    )
    plain = build(MLP, {"width": 8, "n_layers": 3}, 5, 2)  # default: no normalisation, as before
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)) for m in plain.modules())
    assert net(torch.zeros(4, 5)).shape == (4, 2)


def test_mlp_norm_trains_deterministically(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, CLS)
    params = {**SMALL, "norm": "batch"}
    runs = [
        loop.fit(MLP, params, cfg(max_epochs=6, lr=1e-2, batch_size=30), CLS, tr, val, seed=3)
        for _ in range(2)
    ]
    assert same_weights(runs[0].model.state_dict(), runs[1].model.state_dict())  # running stats too
    assert runs[0].history[-1]["train_loss"] < runs[0].history[0]["train_loss"]


def test_mlp_unknown_norm_is_a_user_error() -> None:
    with pytest.raises(HpopipeError, match=r"^model.norm: 'group' is not one of none, batch, layer"):
        build(MLP, {"norm": "group"}, 5, 2)


def test_periodic_embedding_gives_every_column_a_vector() -> None:
    from hpopipe.training.models import D_EMBEDDING, PeriodicEmbedding

    net = build(MLP, {"width": 8, "n_layers": 1, "embedding": "periodic", "embedding_scale": 0.5}, 5, 3)
    embedding, first = net[0], net[1]  # type: ignore[index]
    assert isinstance(embedding, PeriodicEmbedding) and first.in_features == 5 * D_EMBEDDING
    assert embedding(torch.zeros(4, 5)).shape == (4, 5 * D_EMBEDDING)
    assert net(torch.randn(4, 5)).shape == (4, 3)
    assert not any(isinstance(m, PeriodicEmbedding) for m in build(MLP, {}, 5, 3).modules())  # default: none


def test_periodic_embedding_scale_sets_the_initial_frequencies() -> None:
    stds = []
    for scale in (0.1, 3.0):
        torch.manual_seed(0)
        net = build(MLP, {"embedding": "periodic", "embedding_scale": scale}, 50, 2)
        stds.append(float(net[0].frequencies.std()))  # type: ignore[index]
    assert stds[0] == pytest.approx(0.1, rel=0.2) and stds[1] == pytest.approx(3.0, rel=0.2)


def test_periodic_embedding_trains_deterministically(problem: dict[str, np.ndarray]) -> None:
    tr, val = splits(problem, REG)
    params = {**SMALL, "embedding": "periodic", "embedding_scale": 1.0}
    runs = [
        loop.fit(MLP, params, cfg(max_epochs=6, lr=1e-2, batch_size=30), REG, tr, val, seed=5)
        for _ in range(2)
    ]
    assert same_weights(runs[0].model.state_dict(), runs[1].model.state_dict())
    assert runs[0].history[-1]["train_loss"] < runs[0].history[0]["train_loss"]
    assert runs[0].best_score < 0.5 * float(np.std(val[1]))  # far better than predicting a constant


def test_unknown_embedding_is_a_user_error() -> None:
    with pytest.raises(HpopipeError, match=r"^model.embedding: 'onehot' is not one of none, periodic"):
        build(MLP, {"embedding": "onehot"}, 5, 2)


@pytest.mark.parametrize("cfg", [MLP, ModelConfig(name="resnet")])
def test_the_best_weights_copy_is_what_deepcopy_gives(cfg: ModelConfig) -> None:
    """The sweep keeps its best weights with loop.weights_copy, not deepcopy: same tensors, same
    metadata, and a checkpoint holding them is the same bytes."""
    import copy
    import io

    torch.manual_seed(0)
    model = build(cfg, {"norm": "batch"} if cfg is MLP else {}, 5, 3)
    expected, copied = copy.deepcopy(model.state_dict()), loop.weights_copy(model)
    assert list(copied) == list(expected) and all(torch.equal(copied[k], expected[k]) for k in expected)
    for value in model.state_dict().values():
        value.add_(1)  # training on: the copy must not move with the model
    assert all(torch.equal(copied[k], expected[k]) for k in expected)
    saved = [io.BytesIO(), io.BytesIO()]
    torch.save(expected, saved[0])
    torch.save(copied, saved[1])
    assert saved[0].getvalue() == saved[1].getvalue()
