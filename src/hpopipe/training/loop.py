"""THE training loop: the sweep, cross-validation and the refit all call :func:`fit`.

Data stays in memory as tensors and is batched by slicing a shuffled index,
which for tables is several times faster than a DataLoader. A run can be
checkpointed atomically at the end of an epoch (model, optimiser, learning-rate
schedule, RNG states, early-stopping state), so a killed run continues where it
stopped: every ``train.checkpoint_every_s`` seconds, before a graceful stop and
once at the end (:class:`_Checkpointer`).
"""

from __future__ import annotations

import copy
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hpopipe import metrics
from hpopipe.config import ModelConfig, TrainConfig, check_metric_fits_task
from hpopipe.config.routes import OPTIMIZERS, SCHEDULES, train_settings
from hpopipe.errors import HpopipeError, TrainingDiverged, TrainingInterrupted
from hpopipe.training import checkpoints, lazy_dynamo
from hpopipe.training.models import build

lazy_dynamo.defer()  # eager training does not need torch.compile's tracer: ~2 s per process

# Called after every epoch with (epoch, validation score); may raise to stop (pruning).
Reporter = Callable[[int, float], None]
_EVAL_CHUNK = 8192


@dataclass(frozen=True)
class Task:
    """What the network predicts: ``n_classes`` > 0 for classification."""

    kind: str
    n_classes: int
    metric: str

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.kind == "classification" else 1


def task_of(schema: dict[str, Any], metric: str) -> Task:
    """The prediction task a prepared schema describes; refuses a metric that does not fit it.

    ``auto`` becomes the task's default metric (:func:`hpopipe.metrics.resolve_metric`).
    """
    try:
        check_metric_fits_task(metric, schema["task"])
    except ValueError as err:
        raise HpopipeError(f"{err} (data.task {schema['task']!r} comes from the prepared data)") from None
    return Task(schema["task"], len(schema["classes"]), metrics.resolve_metric(metric, schema["task"]))


@dataclass
class FitResult:
    """The trained model (best weights restored) and how training went."""

    model: nn.Module
    best_epoch: int
    best_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    y_scale: tuple[float, float] = (0.0, 1.0)
    resumed_from_epoch: int = 0


def check_device(choice: str) -> None:
    """Refuse ``train.device: cuda`` where torch finds no CUDA device (``hpopipe validate``)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise HpopipeError(
            "train.device: cuda, but torch finds no CUDA device on this machine "
            "(use auto or cpu, or validate where the training runs)"
        )


AUTO_THREADS = 1
"""torch intra-op threads for ``train.threads: auto``: one, in every training process.

Measured (docs/benchmarks.md, "Threads"): on these MLPs a second thread gains a few percent on
an idle machine for 1.4-1.8x the CPU, and on a busy one makes a sweep several times slower.
One, not a share of the machine's cores, so that ``auto`` means the same on every machine.
"""


def use_threads(setting: int | str) -> None:
    """Set torch's intra-op threads for this process from ``train.threads`` (once per fit, not per epoch).

    Whether one process or several share the machine (local workers, Prefect runs), ``auto`` is
    :data:`AUTO_THREADS`: one thread per trial process. An int is taken as given.
    """
    wanted = AUTO_THREADS if setting == "auto" else int(setting)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def resolve_device(choice: str) -> torch.device:
    """``auto`` uses CUDA when present."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def hyper(params: dict[str, Any], cfg: TrainConfig) -> tuple[float, float, int]:
    """Optimiser settings: a tuned value (``lr`` or ``optimizer.lr``, …) wins over the train section's."""
    tuned = train_settings(params)
    return (
        float(tuned.get("lr", cfg.lr)),
        float(tuned.get("weight_decay", cfg.weight_decay)),
        int(tuned.get("batch_size", cfg.batch_size)),
    )


@dataclass(frozen=True)
class Settings:
    """The optimiser and schedule one run trains with: the train section, overridden by tuned values."""

    lr: float
    weight_decay: float
    batch_size: int
    optimizer: str
    momentum: float
    schedule: str
    step_size: int
    gamma: float


def settings(params: dict[str, Any], cfg: TrainConfig) -> Settings:
    """Every loop setting, a tuned one (``optimizer``, ``train.schedule``, …) winning over ``cfg``."""
    tuned = train_settings(params)
    lr, weight_decay, batch_size = hyper(params, cfg)
    return Settings(
        lr,
        weight_decay,
        batch_size,
        str(tuned.get("optimizer", cfg.optimizer)),
        float(tuned.get("momentum", cfg.momentum)),
        str(tuned.get("schedule", cfg.schedule)),
        int(tuned.get("step_size", cfg.step_size)),
        float(tuned.get("gamma", cfg.gamma)),
    )


def make_optimizer(parameters: Any, s: Settings) -> torch.optim.Optimizer:
    """The optimiser ``s.optimizer`` names (AdamW, the default, as before the choice existed)."""
    if s.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum)
    if s.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum)
    raise HpopipeError(f"train.optimizer: {s.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


def make_schedule(
    optimizer: torch.optim.Optimizer, s: Settings, max_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule, or None for ``none``.

    ``cosine`` anneals over ``train.max_epochs`` whatever a run's own epoch count: a refit that
    trains for the chosen epoch count then follows the learning rates its trial had.
    """
    if s.schedule == "none":
        return None
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)
    if s.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=s.step_size, gamma=s.gamma)
    raise HpopipeError(f"train.schedule: {s.schedule!r} is not one of {', '.join(SCHEDULES)}")


def predict(model: nn.Module, x: torch.Tensor, task: Task, y_scale: tuple[float, float]) -> np.ndarray:
    """Class probabilities, or values on the original target scale."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, len(x), _EVAL_CHUNK):
            out = model(x[start : start + _EVAL_CHUNK])
            outs.append(torch.softmax(out, dim=1) if task.kind == "classification" else out.squeeze(1))
    result = torch.cat(outs).double().cpu().numpy()
    if task.kind == "regression":
        result = result * y_scale[1] + y_scale[0]
    return result


class _Loop:
    """State of one training run, kept together so it can be checkpointed."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, Any],
        cfg: TrainConfig,
        task: Task,
        seed: int,
        device: torch.device,
    ) -> None:
        chosen = settings(params, cfg)
        self.batch_size = chosen.batch_size
        self.model = model.to(device)
        self.optimizer = make_optimizer(model.parameters(), chosen)
        self.schedule = make_schedule(self.optimizer, chosen, cfg.max_epochs)
        self.loss_fn: nn.Module = nn.CrossEntropyLoss() if task.kind == "classification" else nn.MSELoss()
        self.generator = torch.Generator().manual_seed(seed)
        self.task, self.device = task, device
        self.epoch = 0
        self.stopped = False
        self.best_epoch, self.best_score = 0, math.nan
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        order = torch.randperm(len(x), generator=self.generator).to(self.device)
        total = 0.0
        for start in range(0, len(x), self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) < 2 and len(x) >= 2:
                continue  # BatchNorm cannot train on a single row
            out = self.model(x[idx])
            loss = self.loss_fn(out if self.task.kind == "classification" else out.squeeze(1), y[idx])
            # The epoch's mean needs the value anyway: checked as a float, before the step, it costs
            # no tensor op (torch.isfinite on the loss was 3 % of a 64-row batch's time, measured).
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss became {value} at epoch {self.epoch + 1}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total += value * len(idx)
        return total / len(x)

    def state(self, phash: str) -> dict[str, Any]:
        return {
            "params_hash": phash,
            "epoch": self.epoch,
            "stopped": self.stopped,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": None if self.schedule is None else self.schedule.state_dict(),
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "best_state": self.best_state,
            "history": self.history,
            "rng_torch": torch.get_rng_state(),
            "rng_generator": self.generator.get_state(),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.schedule is not None and ckpt.get("schedule") is not None:
            self.schedule.load_state_dict(ckpt["schedule"])
        self.epoch = int(ckpt["epoch"])
        self.stopped = bool(ckpt.get("stopped", False))
        self.best_epoch, self.best_score = int(ckpt["best_epoch"]), float(ckpt["best_score"])
        self.best_state = ckpt["best_state"]
        self.history = list(ckpt["history"])
        torch.set_rng_state(ckpt["rng_torch"])
        self.generator.set_state(ckpt["rng_generator"])


class _Checkpointer:
    """When a run writes its crash-recovery checkpoint: time-based, not every epoch.

    A save costs the same whatever happened since the last one, so it is written at the end of an
    epoch once ``every_s`` seconds (monotonic clock) have passed since the run's last save (or its
    start): a kill loses at most that much training plus the epoch in progress, which the retry
    trains again, with the same result (every epoch is seeded; the RNG states are in the file; a
    run with no checkpoint yet starts over from its seed). ``every_s`` 0 saves every epoch. A save
    is forced before a graceful stop (the retry goes on from exactly there) and once at the end
    (:meth:`finish`): the cleanup stage keeps the best trials' files (``cleanup.keep_best``), and
    a retry after a kill between the end of training and the study's commit trains nothing again.
    """

    def __init__(self, path: Path | None, phash: str, every_s: float) -> None:
        self.path, self.phash, self.every_s = path, phash, every_s
        self.last_save = time.monotonic()
        self.saved_epoch = -1  # none by this run yet (a resumed file was written by an earlier one)

    def after_epoch(self, loop: _Loop, force: bool = False) -> None:
        """Save ``loop`` if forced or due."""
        if self.path is None or self.saved_epoch == loop.epoch:
            return
        if force or time.monotonic() - self.last_save >= self.every_s:
            checkpoints.save(self.path, loop.state(self.phash), keep_previous=True)
            self.last_save, self.saved_epoch = time.monotonic(), loop.epoch

    def finish(self, loop: _Loop) -> None:
        """The run's final state, unless its last epoch is already saved (or it trained none)."""
        if loop.epoch > 0:
            self.after_epoch(loop, force=True)


def as_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 tensor on ``device`` from a (possibly read-only) array, copying once."""
    return torch.from_numpy(np.array(x, dtype=np.float32)).to(device)


def _tensors(x: np.ndarray, y: np.ndarray, task: Task, device: torch.device, y_scale: tuple[float, float]):  # type: ignore[no-untyped-def]
    xt = as_tensor(x, device)
    if task.kind == "classification":
        return xt, torch.from_numpy(np.array(y, dtype=np.int64)).to(device)
    yt = (torch.from_numpy(np.array(y, dtype=np.float32)) - y_scale[0]) / y_scale[1]
    return xt, yt.to(device)


def fit(
    model_cfg: ModelConfig,
    params: dict[str, Any],
    cfg: TrainConfig,
    task: Task,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    seed: int,
    epochs: int | None = None,
    reporter: Reporter | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> FitResult:
    """Train one model.

    With ``val``, every epoch is scored on it, early stopping applies
    (``patience``, ``min_delta``) and the best weights are restored; without
    it (the refit) the model trains for exactly ``epochs`` epochs.
    ``checkpoint`` enables crash recovery: the file is written at the end of an
    epoch every ``cfg.checkpoint_every_s`` seconds, before a graceful stop and at the
    end (:class:`_Checkpointer`; the save before is kept as a fallback); with
    ``resume`` an existing file with the same configuration hash is continued from
    its epoch (a retry of a killed trial), otherwise it is overwritten; the
    restored epochs are reported again so the pruner sees the whole curve.
    ``should_stop`` is polled after every epoch's report; a stop saves the
    checkpoint, then raises :class:`TrainingInterrupted`. ``on_resume``
    hears the epoch a resumed run continues from, before anything can prune it.
    """
    device = resolve_device(cfg.device)
    use_threads(cfg.threads)
    y_scale = (0.0, 1.0)
    if task.kind == "regression":
        y_scale = (float(np.mean(train[1])), float(np.std(train[1])) or 1.0)
    torch.manual_seed(seed)
    n_features = train[0].shape[1]
    loop = _Loop(build(model_cfg, params, n_features, task.n_outputs), params, cfg, task, seed, device)
    phash = checkpoints.params_hash(params, seed)
    resumed = _maybe_resume(loop, checkpoint, phash) if resume else 0
    if resumed and on_resume is not None:
        on_resume(resumed)
    if resumed and reporter is not None and val is not None:
        for row in loop.history:
            reporter(int(row["epoch"]), row[f"val_{task.metric}"])
    x_tr, y_tr = _tensors(*train, task, device, y_scale)
    x_val = as_tensor(val[0], device) if val is not None else None
    max_epochs = epochs or cfg.max_epochs
    saver = _Checkpointer(checkpoint, phash, cfg.checkpoint_every_s)
    while loop.epoch < max_epochs and not loop.stopped:
        loss = loop.train_epoch(x_tr, y_tr)
        if loop.schedule is not None:
            loop.schedule.step()
        loop.epoch += 1
        row = {"epoch": float(loop.epoch), "train_loss": loss}
        if val is not None and x_val is not None:
            output = predict(loop.model, x_val, task, y_scale)
            if not np.all(np.isfinite(output)):
                raise TrainingDiverged(f"validation outputs are not finite at epoch {loop.epoch}")
            value = metrics.score(task.metric, val[1], output, task.n_classes)
            if not math.isfinite(value):
                raise TrainingDiverged(f"validation {task.metric} is {value} at epoch {loop.epoch}")
            row[f"val_{task.metric}"] = value
            if metrics.is_better(task.metric, value, loop.best_score, cfg.min_delta):
                loop.best_epoch, loop.best_score = loop.epoch, value
                loop.best_state = weights_copy(loop.model)
            loop.stopped = loop.epoch - loop.best_epoch >= cfg.patience
        loop.history.append(row)
        saver.after_epoch(loop)
        if reporter is not None and val is not None:
            reporter(loop.epoch, row[f"val_{task.metric}"])
        if should_stop is not None and should_stop() and not loop.stopped and loop.epoch < max_epochs:
            saver.after_epoch(loop, force=True)
            raise TrainingInterrupted(loop.epoch)
    saver.finish(loop)
    if loop.best_state is not None:
        loop.model.load_state_dict(loop.best_state)
    else:
        loop.best_epoch = loop.epoch
    return FitResult(loop.model, loop.best_epoch, loop.best_score, loop.history, y_scale, resumed)


def weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as ``copy.deepcopy(model.state_dict())`` gives them (its ``_metadata``,
    which ``load_state_dict`` reads, included), by cloning each tensor: deepcopy walks every
    tensor's Python state, about 8x slower on a small MLP here (0.32 against 0.04 ms), and the
    sweep copies once per improving epoch. Tied weights would be copied once per name (no model
    here ties any); ``torch.save`` writes the same bytes (tests/test_train.py).
    """
    state = model.state_dict()
    copied: OrderedDict[str, torch.Tensor] = OrderedDict((k, v.detach().clone()) for k, v in state.items())
    copied._metadata = copy.deepcopy(getattr(state, "_metadata", None))  # type: ignore[attr-defined]
    return copied


def _maybe_resume(loop: _Loop, checkpoint: Path | None, phash: str) -> int:
    if checkpoint is None:
        return 0
    ckpt = checkpoints.load_resumable(checkpoint, phash)
    if ckpt is None:
        return 0
    loop.restore(ckpt)
    return loop.epoch
