"""Refit the chosen configuration on the whole train split, score the test split, save the model.

The saved file holds only tensors and plain values (weights, schema, config),
so it loads with ``torch.load(weights_only=True)`` and never unpickles code. The baselines
(:mod:`hpopipe.baselines`) are scored here too, on the same split, so ``metrics/test.json``
always says whether the network earns its keep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hpopipe import baselines, data, metrics
from hpopipe.config import RefitConfig
from hpopipe.errors import HpopipeError
from hpopipe.handoffs import parse
from hpopipe.handoffs.best import BestConfig
from hpopipe.handoffs.evaluation import RefitEvaluation
from hpopipe.handoffs.schema import PreparedSchema
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
    baselines: dict[str, dict[str, float]]
    output: np.ndarray  # the test rows' predictions (class probabilities, or values), as scored

    def metrics_file(self) -> dict[str, Any]:
        """``metrics/test.json``: the network's metrics (keys as ever), then the baselines beside them."""
        return {**self.test_metrics, baselines.KEY: self.baselines}

    def tracked_metrics(self) -> dict[str, float]:
        """The same numbers as flat MLflow metric names: ``test_<metric>``, ``<baseline>_test_<metric>``."""
        flat = {f"test_{k}": v for k, v in self.test_metrics.items()}
        for name, scores in self.baselines.items():
            flat |= {f"{name}_test_{k}": v for k, v in scores.items()}
        return flat

    def evaluation(self, schema: PreparedSchema, y_test: np.ndarray) -> RefitEvaluation:
        """``artifacts/refit/evaluation.json``: what the report draws of this refit (see its module)."""
        history = self.result.history
        if schema.task == "regression":
            actual, predicted = y_test.astype(float).tolist(), self.output.astype(float).ravel().tolist()
            return RefitEvaluation(
                kind="regression", actual=actual, predicted=predicted, classes=[], history=history
            )
        labels = [str(c) for c in data.decode_target(y_test, schema)]
        guessed = [str(c) for c in data.decode_target(self.output.argmax(axis=1), schema)]
        classes = [str(c) for c in schema.classes]
        return RefitEvaluation(
            kind="classification", actual=labels, predicted=guessed, classes=classes, history=history
        )


@dataclass(frozen=True)
class Bundle:
    """What a saved model file holds besides the weights, read back typed."""

    schema: PreparedSchema
    best: BestConfig
    y_scale: tuple[float, float]
    history: list[dict[str, float]]


def refit(
    best: BestConfig,
    cfg: RefitConfig,
    schema: PreparedSchema,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> Refit:
    """Train on all training rows for the selected number of epochs, then score the test rows.

    The baselines are fitted on the same rows and scored on the same test rows, with the same seed.
    """
    task = task_of(schema.plain(), best.metric)
    epochs = best.epochs if cfg.epochs == "auto" else int(cfg.epochs)
    result = fit(best.model, best.params, best.train, task, train, None, seed=best.seed, epochs=epochs)
    device = next(result.model.parameters()).device
    output = predict(result.model, as_tensor(test[0], device), task, result.y_scale)
    scores = metrics.evaluation_metrics(task.kind, test[1], output, task.n_classes)
    return Refit(
        result,
        scores,
        epochs,
        baselines.fit_baselines(task.kind, task.n_classes, train, test, best.seed),
        output,
    )


def save_model(path: Path, fitted: Refit, best: BestConfig, schema: PreparedSchema) -> None:
    """Weights + schema + config in one file, written atomically.

    Schema and config go in as the plain mappings their files hold, in the files' key order.
    """
    state = {k: v.detach().cpu() for k, v in fitted.result.model.state_dict().items()}
    checkpoints.save(
        path,
        {
            "format": FORMAT,
            "state_dict": state,
            "schema": schema.plain(),
            "config": best.plain(),
            "y_scale": list(fitted.result.y_scale),
            "history": fitted.result.history,
        },
    )


def load_model(path: Path, trust_factory: bool | str | None = False) -> tuple[torch.nn.Module, Bundle]:
    """Rebuild a saved model; returns it with its typed bundle (schema, config).

    A model file holds no code, but its config may name a ``model.factory``, which
    rebuilding would import and call: a file from elsewhere could make that any
    function. So only the built-in families load, unless ``trust_factory`` is True
    (the caller vouches for the file: ``predict --trust-factory``) or names the one
    factory the caller trusts (the report stage: the factory in params.yaml).
    """
    if not path.exists():
        raise HpopipeError(f"--model: {path}: file not found")
    try:
        raw = checkpoints.load(path)
    except checkpoints.CheckpointError as err:
        raise HpopipeError(f"--model: {path}: not a readable hpopipe model ({err})") from None
    if raw.get("format") != FORMAT:
        raise HpopipeError(f"--model: {path}: not an hpopipe model (format {raw.get('format')!r})")
    return assemble(raw, f"--model: {path}", trust_factory)


def assemble(
    raw: dict[str, Any], source: str, trust_factory: bool | str | None = False
) -> tuple[torch.nn.Module, Bundle]:
    """The model and its bundle from plain parts: ``state_dict``, ``schema``, ``config``, ``y_scale``.

    ``hpopipe predict`` (from ``models/model.pt``) and the registered MLflow model (from its
    weights, schema.json and model.json) both come through here, so they rebuild the same model.
    ``trust_factory`` as for :func:`load_model`.
    """
    bundle = Bundle(
        schema=parse(PreparedSchema, raw.get("schema"), f"{source}: schema"),
        best=parse(BestConfig, raw.get("config"), f"{source}: config"),
        y_scale=(float(raw["y_scale"][0]), float(raw["y_scale"][1])),
        history=[dict(row) for row in raw.get("history", [])],
    )
    factory = bundle.best.model.factory
    if factory is not None and trust_factory is not True and factory != trust_factory:
        raise HpopipeError(
            f"{source}: names the factory {factory!r}, which loading would import and run; "
            "pass --trust-factory if you trust this file"
        )
    task = task_of(bundle.schema.plain(), bundle.best.metric)
    model = build(bundle.best.model, bundle.best.params, len(bundle.schema.feature_columns), task.n_outputs)
    model.load_state_dict(raw["state_dict"])
    model.eval()
    return model, bundle


def predict_frame(
    model: torch.nn.Module, bundle: Bundle, frame: pd.DataFrame, source: str, keep: Sequence[str] = ()
) -> pd.DataFrame:
    """Apply the saved transform and model to new rows: ``hpopipe predict`` and the MLflow model.

    Classification gives the label (``prediction``) and one ``proba_<label>`` column per class;
    regression gives ``prediction`` in the target's own units. ``keep`` names input columns
    (ids) copied to the front of the output; one the model does not read is not fed to it.
    """
    schema = bundle.schema
    missing = [c for c in keep if c not in frame.columns]
    if missing:
        raise HpopipeError(f"--id-column: {missing} not in the columns of {source}")
    clash = [c for c in keep if c == "prediction" or str(c).startswith("proba_")]
    if clash:
        raise HpopipeError(f"--id-column: {clash} would clash with a prediction column; rename it")
    task = task_of(schema.plain(), bundle.best.metric)
    features = data.transform(
        frame.drop(columns=[c for c in keep if c not in schema.input_columns]), schema, source
    )
    x = as_tensor(features.to_numpy(np.float32), torch.device("cpu"))
    output = predict(model, x, task, bundle.y_scale)
    out = pd.DataFrame({c: frame[c].to_numpy() for c in keep})
    if task.kind == "regression":
        out["prediction"] = output
        return out
    out["prediction"] = data.decode_target(output.argmax(axis=1), schema)
    for i, label in enumerate(schema.classes):
        out[f"proba_{label}"] = output[:, i]
    return out
