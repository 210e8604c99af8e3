"""Refit the chosen configuration on the whole train split, score the test split, save the model.

The saved file holds only tensors and plain values (weights, schema, config),
so it loads with ``torch.load(weights_only=True)`` and never unpickles code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import ValidationError

from hpopipe import data, metrics
from hpopipe.config import ModelConfig, RefitConfig, TrainConfig
from hpopipe.errors import HpopipeError
from hpopipe.training import checkpoints
from hpopipe.training.loop import FitResult, as_tensor, fit, predict, task_of
from hpopipe.training.models import build

FORMAT = "hpopipe-model/1"


@dataclass
class Refit:
    """The refit model and its scores on the untouched test split."""

    result: FitResult
    test_metrics: dict[str, float]
    epochs: int


def _parse(best: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    try:
        return ModelConfig.model_validate(best["model"]), TrainConfig.model_validate(best["train"])
    except (KeyError, ValidationError) as err:
        raise HpopipeError(f"artifacts/best/config.yaml: not a valid best configuration ({err})") from None


def refit(
    best: dict[str, Any],
    cfg: RefitConfig,
    schema: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Refit:
    """Train on all training rows for the selected number of epochs, then score the test rows."""
    model_cfg, train_cfg = _parse(best)
    task = task_of(schema, best["metric"])
    epochs = int(best["epochs"]) if cfg.epochs == "auto" else int(cfg.epochs)
    result = fit(
        model_cfg, best["params"], train_cfg, task, train, None, seed=int(best["seed"]), epochs=epochs
    )
    device = next(result.model.parameters()).device
    output = predict(result.model, as_tensor(test[0], device), task, result.y_scale)
    return Refit(result, metrics.evaluation_metrics(task.kind, test[1], output, task.n_classes), epochs)


def save_model(path: Path, fitted: Refit, best: dict[str, Any], schema: dict[str, Any]) -> None:
    """Weights + schema + config in one file, written atomically."""
    state = {k: v.detach().cpu() for k, v in fitted.result.model.state_dict().items()}
    checkpoints.save(
        path,
        {
            "format": FORMAT,
            "state_dict": state,
            "schema": schema,
            "config": best,
            "y_scale": list(fitted.result.y_scale),
            "history": fitted.result.history,
        },
    )


def load_model(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a saved model; returns it with its bundle (schema, config)."""
    if not path.exists():
        raise HpopipeError(f"--model: {path}: file not found")
    try:
        bundle = checkpoints.load(path)
    except checkpoints.CheckpointError as err:
        raise HpopipeError(f"--model: {path}: not a readable hpopipe model ({err})") from None
    if bundle.get("format") != FORMAT:
        raise HpopipeError(f"--model: {path}: not an hpopipe model (format {bundle.get('format')!r})")
    best, schema = bundle["config"], bundle["schema"]
    model_cfg, _ = _parse(best)
    task = task_of(schema, best["metric"])
    model = build(model_cfg, best["params"], len(schema["feature_columns"]), task.n_outputs)
    model.load_state_dict(bundle["state_dict"])
    model.eval()
    return model, bundle


def predict_frame(
    model: torch.nn.Module, bundle: dict[str, Any], frame: pd.DataFrame, source: str
) -> pd.DataFrame:
    """Apply the saved transform and model to new rows."""
    schema, best = bundle["schema"], bundle["config"]
    task = task_of(schema, best["metric"])
    features = data.transform(frame, schema, source)
    x = as_tensor(features.to_numpy(np.float32), torch.device("cpu"))
    output = predict(model, x, task, (float(bundle["y_scale"][0]), float(bundle["y_scale"][1])))
    if task.kind == "regression":
        return pd.DataFrame({"prediction": output})
    out = pd.DataFrame({"prediction": data.decode_target(output.argmax(axis=1), schema)})
    for i, label in enumerate(schema["classes"]):
        out[f"proba_{label}"] = output[:, i]
    return out
