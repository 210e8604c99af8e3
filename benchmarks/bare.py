"""The bare loop: a sweep's trials re-trained by plain PyTorch, with no hpopipe, Optuna, MLflow or DVC.

This is what the benchmarks compare hpopipe against. It imports numpy, pandas, scikit-learn (the
stratified split and the F1 score) and torch, nothing of this project, and re-implements what a
trial computes: the MLP of ``hpopipe.training.models`` (blocks of Linear-[norm]-ReLU-Dropout, the
optional periodic embedding, parameters created in the same order so one seed gives the same
weights), the optimiser and learning-rate schedule a trial's settings name, the shuffled-index
batches, and the per-epoch validation score. It leaves out what hpopipe adds around the training:
storage, pruning calls, checkpoints, tracking, early-stopping bookkeeping and the copy of the best
weights. Each trial runs for the epochs the sweep's trial actually ran (pruned or stopped early).

Seeded like the sweep, it must reproduce every per-epoch validation score of the study exactly:
``replay`` returns the scores and the callers check them (a mismatch means the two sides did not do
the same work, and the ratio would mean nothing).

Standalone use, the "bare script" of ``benchmarks/stage_cpu.py``: run in a project whose
``data/prepared/train.parquet`` exists, with a job file that ``stage_cpu.py`` writes from a finished
study::

    python benchmarks/bare.py JOB.json [--check]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TARGET_COLUMN = "__target__"  # the prepared table's target column (hpopipe.data.TARGET)
N_FREQUENCIES, D_EMBEDDING = 16, 16  # the periodic embedding's fixed sizes in hpopipe


class Periodic(nn.Module):
    """Per column: ReLU(Linear([cos 2πcx, sin 2πcx])) with trained frequencies c (the PLR embedding)."""

    def __init__(self, n_features: int, scale: float) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, N_FREQUENCIES) * scale)
        bound = 1 / math.sqrt(2 * N_FREQUENCIES)
        self.weight = nn.Parameter(
            torch.empty(n_features, 2 * N_FREQUENCIES, D_EMBEDDING).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.empty(n_features, D_EMBEDDING).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * self.frequencies[None] * x[..., None]
        periodic = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        return torch.relu(torch.einsum("bfi,fio->bfo", periodic, self.weight) + self.bias[None]).flatten(1)


def mlp(p: dict[str, Any], n_features: int, n_outputs: int) -> nn.Module:
    """The tabular MLP a trial's model parameters describe (hpopipe's defaults where one is not tuned)."""
    width, norm = int(p.get("width", 128)), str(p.get("norm", "none"))
    layers: list[nn.Module] = []
    d_in = n_features
    if str(p.get("embedding", "none")) == "periodic":
        layers.append(Periodic(n_features, float(p.get("embedding_scale", 1.0))))
        d_in = n_features * D_EMBEDDING
    for _ in range(int(p.get("n_layers", 2))):
        layers.append(nn.Linear(d_in, width))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(width))
        elif norm == "layer":
            layers.append(nn.LayerNorm(width))
        layers += [nn.ReLU(), nn.Dropout(float(p.get("dropout", 0.1)))]
        d_in = width
    layers.append(nn.Linear(d_in, n_outputs))
    return nn.Sequential(*layers)


LOOP_KEYS = ("lr", "weight_decay", "batch_size", "optimizer", "momentum", "schedule", "step_size", "gamma")


def loop_settings(p: dict[str, Any], train: dict[str, Any]) -> dict[str, Any]:
    """The trial's loop settings: a tuned ``lr`` / ``train.lr`` / ``optimizer.lr`` over the train section."""
    out = {k: train[k] for k in LOOP_KEYS}
    for name, value in p.items():
        key = name.split(".", 1)[1] if name.startswith(("train.", "optimizer.")) else name
        if key in LOOP_KEYS:
            out[key] = value
    return out


def model_params(p: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """What the model reads: the fixed ``model.params``, then the tuned flat and ``model.`` names."""
    out = dict(fixed)
    for name, value in p.items():
        if "." not in name:
            out[name] = value
        elif name.startswith("model."):
            out[name.removeprefix("model.")] = value
    return out


def optimizer_of(s: dict[str, Any], parameters: Any) -> torch.optim.Optimizer:
    lr, wd, momentum = float(s["lr"]), float(s["weight_decay"]), float(s["momentum"])
    if s["optimizer"] == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=wd)
    if s["optimizer"] == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=wd)
    if s["optimizer"] == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=wd, momentum=momentum)
    if s["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr, weight_decay=wd, momentum=momentum)
    raise SystemExit(f"bare loop: unknown optimizer {s['optimizer']!r}")


def schedule_of(s: dict[str, Any], opt: torch.optim.Optimizer, max_epochs: int) -> Any:
    if s["schedule"] == "none":
        return None
    if s["schedule"] == "cosine":  # over train.max_epochs, whatever the trial's own epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)
    if s["schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=int(s["step_size"]), gamma=float(s["gamma"]))
    raise SystemExit(f"bare loop: unknown schedule {s['schedule']!r}")


def score(metric: str, y_true: np.ndarray, proba: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import accuracy_score, f1_score

    if metric == "macro_f1":
        labels = list(range(n_classes))
        return float(f1_score(y_true, proba.argmax(axis=1), average="macro", labels=labels, zero_division=0))
    if metric == "accuracy":
        return float(accuracy_score(y_true, proba.argmax(axis=1)))
    raise SystemExit(f"bare loop: metric {metric!r} is not covered (macro_f1, accuracy)")


def train_trial(
    job: dict[str, Any],
    trial: dict[str, Any],
    fit: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, np.ndarray],
) -> list[float]:
    """One trial for its recorded number of epochs; the validation score after each."""
    torch.manual_seed(trial["seed"])
    model = mlp(model_params(trial["params"], job["model_params"]), fit[0].shape[1], job["n_classes"])
    s = loop_settings(trial["params"], job["train"])
    opt = optimizer_of(s, model.parameters())
    sched = schedule_of(s, opt, int(job["train"]["max_epochs"]))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(trial["seed"])
    x, y = fit
    batch = int(s["batch_size"])
    scores = []
    for _ in range(trial["epochs"]):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            if len(idx) < 2:
                continue  # as hpopipe: BatchNorm cannot train on a single row
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # hpopipe sums the epoch's loss: the same sync per batch
        if sched is not None:
            sched.step()
        model.eval()
        with torch.no_grad():
            proba = torch.softmax(model(val[0]), dim=1).double().numpy()
        scores.append(score(job["metric"], val[1], proba, job["n_classes"]))
    return scores


def split(job: dict[str, Any], x: np.ndarray, y: np.ndarray) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The sweep's stratified fit/validation split, same share and seed."""
    from sklearn.model_selection import train_test_split

    x_fit, x_val, y_fit, y_val = train_test_split(
        x, y, test_size=job["val_size"], random_state=job["val_seed"], stratify=y
    )
    return (x_fit, y_fit), (x_val, y_val)


def replay(
    job: dict[str, Any], fit: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray]
) -> list[list[float]]:
    """Every trial of ``job``: tensor conversion plus training; the per-epoch scores of each."""
    xt = (
        torch.from_numpy(np.array(fit[0], dtype=np.float32)),
        torch.from_numpy(np.array(fit[1], dtype=np.int64)),
    )
    xv = (torch.from_numpy(np.array(val[0], dtype=np.float32)), np.asarray(val[1]))
    return [train_trial(job, t, xt, xv) if t["epochs"] else [] for t in job["trials"]]


def max_deviation(job: dict[str, Any], scores: list[list[float]]) -> float:
    """The largest difference between a replayed score and the study's; inf if an epoch count differs."""
    worst = 0.0
    for trial, got in zip(job["trials"], scores, strict=True):
        if len(got) != len(trial["values"]):
            return math.inf
        worst = max([worst, *(abs(a - b) for a, b in zip(got, trial["values"], strict=True))])
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path, help="JSON: settings and the trials to replay")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every score equals the study's")
    args = parser.parse_args(argv)
    job = json.loads(args.job.read_text())
    torch.set_num_threads(int(job.get("threads", 1)))
    import pandas as pd

    frame = pd.read_parquet(job.get("train_path", "data/prepared/train.parquet"))
    x = frame.drop(columns=[TARGET_COLUMN]).to_numpy(dtype=np.float32)
    fit, val = split(job, x, frame[TARGET_COLUMN].to_numpy())
    scores = replay(job, fit, val)
    deviation = max_deviation(job, scores)
    print(json.dumps({"trials": len(scores), "epochs": sum(map(len, scores)), "max_deviation": deviation}))
    if args.check and deviation != 0.0:
        sys.exit(1)


if __name__ == "__main__":
    main()
