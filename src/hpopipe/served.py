"""The registered MLflow model: the raw table's columns in, what ``hpopipe predict`` writes out.

Its files are plain data: the weights as a ``state_dict`` (read back with
``torch.load(weights_only=True)``), the fitted transform as ``schema.json`` and ``model.json``
(the training configuration and the target's scale). No scikit-learn object and no pickled
code travel with it. MLflow's side (the pyfunc wrapper, the registry, serving) is in
:mod:`hpopipe.tracking`; this module holds none of it, and predictions have one implementation,
:func:`hpopipe.refit.predict_frame`, shared with ``hpopipe predict``.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from hpopipe import artifacts, refit
from hpopipe.config import DataConfig, Params, RefitConfig
from hpopipe.data import data_fingerprint, read_table
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.best import BestConfig
from hpopipe.handoffs.ranked import read_ranked
from hpopipe.handoffs.schema import PreparedSchema
from hpopipe.names import MAX_NAME_LENGTH, check_name
from hpopipe.tracking import NullTracker

WEIGHTS, SCHEMA, MODEL = "weights", "schema", "model"
FILE_NAMES = {WEIGHTS: "weights.pt", SCHEMA: "schema.json", MODEL: "model.json"}
EXAMPLE_ROWS = 5
PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ModelPackage:
    """Everything :meth:`hpopipe.tracking.MlflowTracker.log_model` sends to MLflow."""

    files: dict[str, Path]
    example: pd.DataFrame  # raw rows, as a user would send them
    output: pd.DataFrame  # what the model returns for them
    signature_rows: pd.DataFrame  # the raw table's feature columns: their types make the signature
    name: str | None  # the registered model's name; None logs without registering
    tags: dict[str, str]
    code: Path  # the hpopipe package, shipped with the model
    requirements: list[str]
    modules: dict[str, str]  # each requirement's distribution name -> the module it installs


# What the model's code imports (``hpopipe.refit``'s closure): distribution -> module.
REQUIRED = {
    "torch": "torch",
    "numpy": "numpy",
    "pandas": "pandas",
    "scikit-learn": "sklearn",
    "pydantic": "pydantic",
    "pyyaml": "yaml",
}


class Predictor:
    """A loaded model: raw rows in, predictions out, exactly as ``hpopipe predict`` makes them."""

    def __init__(self, model: torch.nn.Module, bundle: refit.Bundle) -> None:
        self.model, self.bundle = model, bundle

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Labels and per-class probabilities, or values in the target's own units."""
        return refit.predict_frame(self.model, self.bundle, frame, "the model input")


def registered_name(cfg: RefitConfig, data: DataConfig) -> str:
    """``refit.registered_model_name``, else ``<data file stem>-<target>`` made safe as a name.

    So a breast-cancer classifier and a penguin regressor never share a registry entry.
    """
    if cfg.registered_model_name is not None:
        return cfg.registered_model_name
    derived = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{data.path.stem}-{data.target}")
    derived = re.sub(r"\.{2,}", ".", derived).strip("._-")[:MAX_NAME_LENGTH]
    return check_name(derived or "model", "refit.registered_model_name")


def write_files(
    folder: Path, fitted: refit.Refit, best: BestConfig, schema: PreparedSchema
) -> dict[str, Path]:
    """The model's three files in ``folder``; their paths by artifact name."""
    files = {key: folder / name for key, name in FILE_NAMES.items()}
    state = {k: v.detach().cpu() for k, v in fitted.result.model.state_dict().items()}
    torch.save(state, files[WEIGHTS])
    files[SCHEMA].write_text(json.dumps(schema.plain(), indent=2, sort_keys=True) + "\n")
    model = {"format": refit.FORMAT, "config": best.plain(), "y_scale": list(fitted.result.y_scale)}
    files[MODEL].write_text(json.dumps(model, indent=2) + "\n")
    return files


def load(files: Mapping[str, str | Path]) -> Predictor:
    """The model from its three files (MLflow's ``context.artifacts``)."""
    try:
        state = torch.load(files[WEIGHTS], map_location="cpu", weights_only=True)
        schema = json.loads(Path(files[SCHEMA]).read_text())
        model = json.loads(Path(files[MODEL]).read_text())
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise HpopipeError(f"MLflow model: its files cannot be read ({err})") from None
    parts = {"state_dict": state, "schema": schema, "config": model["config"], "y_scale": model["y_scale"]}
    # The registry's own model: its factory was the user's model.factory when refit registered it.
    return Predictor(*refit.assemble(parts, "MLflow model", trust_factory=True))


def input_rows(raw: pd.DataFrame, schema: PreparedSchema) -> pd.DataFrame:
    """The feature columns of the raw table, in the order the model reads them (no target, no drops).

    Their types are the table's, so the signature accepts what the training file held: an integer
    column stays ``long`` (a pandas frame of such rows passes MLflow's check), and a column with
    missing values in training is optional.
    """
    missing = [c for c in schema.input_columns if c not in raw.columns]
    if missing:
        raise HpopipeError(f"data.path: column(s) {missing} of the prepared data are not in the table")
    return raw[list(schema.input_columns)]


def model_tags(
    study: str, fingerprint: str, commit: str, test_metrics: Mapping[str, float], schema: PreparedSchema
) -> dict[str, str]:
    """What the registered version is: its study, data, code and test scores."""
    tags = {"study": study, "data_fingerprint": fingerprint, "git_commit": commit}
    tags |= {"target": schema.target, "task": schema.task}
    return tags | {f"test_{k}": f"{v:.6g}" for k, v in test_metrics.items()}


def requirements() -> list[str]:
    """What the model's code imports (:data:`REQUIRED`), pinned to the versions that trained it."""
    import numpy
    import pydantic
    import sklearn
    import yaml

    versions = {
        "torch": torch.__version__.split("+")[0],
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "pydantic": pydantic.VERSION,
        "pyyaml": yaml.__version__,
    }
    return [f"{name}=={versions[name]}" for name in REQUIRED]


def log_refit_model(
    tracker: NullTracker,
    params: Params,
    fitted: refit.Refit,
    best: BestConfig,
    schema: PreparedSchema,
    train: pd.DataFrame,
    commit: str,
) -> None:
    """The refit stage's model in MLflow: logged, registered under its name, tagged (if tracked at all).

    Reads what only the registry needs: the study's name (``ranked_trials.json``) and the raw
    table (``data.path``) for the input example and the signature's column types.
    """
    if not (params.refit.log_model and tracker.enabled):
        return
    study = read_ranked(artifacts.RANKED_JSON).study
    tags = model_tags(study, data_fingerprint(train, schema.plain()), commit, fitted.test_metrics, schema)
    name = registered_name(params.refit, params.data)
    with package(fitted, best, schema, read_table(params.data.path), name, tags) as pkg:
        tracker.log_model(pkg)


@contextmanager
def package(
    fitted: refit.Refit,
    best: BestConfig,
    schema: PreparedSchema,
    raw: pd.DataFrame,
    name: str | None,
    tags: dict[str, str],
) -> Iterator[ModelPackage]:
    """The model's files in a temporary folder, with an example of raw rows and its predictions."""
    rows = input_rows(raw, schema)
    with tempfile.TemporaryDirectory(prefix="hpopipe-model-") as tmp:
        files = write_files(Path(tmp), fitted, best, schema)
        example = rows.head(EXAMPLE_ROWS).reset_index(drop=True)
        yield ModelPackage(
            files=files,
            example=example,
            output=load(files).predict(example),
            signature_rows=rows,
            name=name,
            tags=tags,
            code=PACKAGE_DIR,
            requirements=requirements(),
            modules=dict(REQUIRED),
        )
