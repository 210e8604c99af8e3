"""The hand-written Optuna peer: what a typical user writes instead of hpopipe.

A plain Optuna study on a SQLite file (``create_study(storage="sqlite:///...")``), the TPE sampler
and the same Hyperband pruner as the sweep (same min_resource, max_resource = train.max_epochs,
reduction factor), the same search space suggested trial by trial, the same MLP, optimiser settings,
epochs budget and early-stopping patience, and a ``torch.utils.data.DataLoader`` over a
``TensorDataset`` for the batches (the usual tutorial loop). No tracking, no checkpoints, no
resume, no seeding by sweep position. Its trials are not the sweep's (another sampler seed), so
``overhead.py`` compares each side with a bare-loop replay of its own trials: the peer's ratio to
the bare loop, and hpopipe's ratio divided by it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bare  # benchmarks/ is on sys.path: the scripts run as `python benchmarks/X.py`
import numpy as np
import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """params.yaml's search space, suggested the way a user writes it by hand."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "log_uniform":
            out[name] = trial.suggest_float(name, spec["min"], spec["max"], log=True)
        elif kind == "uniform":
            out[name] = trial.suggest_float(name, spec["min"], spec["max"], step=spec.get("step"))
        elif kind == "int_uniform":
            out[name] = trial.suggest_int(name, spec["min"], spec["max"])
        elif kind == "choice":
            out[name] = trial.suggest_categorical(name, spec["values"])
        else:
            raise SystemExit(f"peer: search-space type {kind!r} is not covered")
    return out


def run(
    job: dict[str, Any],
    space: dict[str, dict[str, Any]],
    fit: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    storage: Path,
    n_trials: int,
    pruner: dict[str, int],
    patience: int,
    seed: int,
) -> optuna.Study:
    """The peer's whole sweep (tensor conversion included); the finished study."""
    x = torch.from_numpy(np.array(fit[0], dtype=np.float32))
    y = torch.from_numpy(np.array(fit[1], dtype=np.int64))
    x_val, y_val = torch.from_numpy(np.array(val[0], dtype=np.float32)), np.asarray(val[1])
    max_epochs = int(job["train"]["max_epochs"])

    def objective(trial: optuna.Trial) -> float:
        p = suggest(trial, space)
        torch.manual_seed(seed + trial.number)
        model = bare.mlp(bare.model_params(p, job["model_params"]), x.shape[1], job["n_classes"])
        s = bare.loop_settings(p, job["train"])
        opt = bare.optimizer_of(s, model.parameters())
        sched = bare.schedule_of(s, opt, max_epochs)
        loader = DataLoader(
            TensorDataset(x, y), batch_size=int(s["batch_size"]), shuffle=True, drop_last=False
        )
        loss_fn = nn.CrossEntropyLoss()
        best, best_epoch = -np.inf, 0
        for epoch in range(1, max_epochs + 1):
            model.train()
            for xb, yb in loader:
                if len(xb) < 2:
                    continue
                loss = loss_fn(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if sched is not None:
                sched.step()
            model.eval()
            with torch.no_grad():
                proba = torch.softmax(model(x_val), dim=1).double().numpy()
            value = bare.score(job["metric"], y_val, proba, job["n_classes"])
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
            if value > best:
                best, best_epoch = value, epoch
            if epoch - best_epoch >= patience:
                break
        return float(best)

    study = optuna.create_study(
        storage=f"sqlite:///{storage}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=pruner["min_resource"],
            max_resource=max_epochs,
            reduction_factor=pruner["reduction_factor"],
        ),
    )
    study.optimize(objective, n_trials=n_trials)
    return study


def job_of_peer(job: dict[str, Any], study: optuna.Study, seed: int) -> dict[str, Any]:
    """A bare-loop job for the peer's own trials (same params and epochs; its scores are not compared:
    the DataLoader shuffles with another random stream)."""
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": dict(t.params),
            "seed": seed + t.number,
            "epochs": len(t.intermediate_values),
            "values": [],
        }
        for t in study.get_trials(deepcopy=False)
    ]
    return {**job, "trials": trials}
