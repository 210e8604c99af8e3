"""Typed, validated view of ``params.yaml``: the only module that reads it.

Every other module receives these frozen objects, so a typo or an impossible
range is caught once, before any work, with a message that names the key.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpopipe.errors import HpopipeError

CLASSIFICATION_METRICS = ("macro_f1", "accuracy", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
MAXIMIZED_METRICS = frozenset({"macro_f1", "accuracy", "roc_auc", "r2"})
Metric = Literal["macro_f1", "accuracy", "roc_auc", "log_loss", "rmse", "mae", "r2"]
Scalar = bool | int | float | str
# A whole number written as one: "10", 10.0 and true are refused, not coerced.
Count = Annotated[int, Field(strict=True)]

# Upper bound that keeps a typo (n_trials: 1e9) from silently running forever.
MAX_TRIALS = 100_000
_FACTORY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DataConfig(_Strict):
    """Where the table is and how to split it."""

    path: Path
    target: str = Field(min_length=1)
    task: Literal["auto", "classification", "regression"] = "auto"
    drop_columns: list[str] = Field(default_factory=list)
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    val_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    max_categories: Count = Field(default=50, ge=2)

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: Path) -> Path:
        if value.suffix.lower() not in {".csv", ".parquet", ".pq"}:
            raise ValueError("must end in .csv or .parquet")
        return value


class ModelConfig(_Strict):
    """A built-in model family or a user factory, plus fixed (untuned) params."""

    name: Literal["mlp", "resnet"] | None = None
    factory: str | None = None
    params: dict[str, Scalar] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.name is None) == (self.factory is None):
            raise ValueError("set exactly one of model.name or model.factory")
        if self.factory is not None and not _FACTORY_RE.match(self.factory):
            raise ValueError("model.factory must look like 'package.module:function'")
        return self

    @property
    def label(self) -> str:
        """Short name used in study names and paths."""
        if self.name is not None:
            return self.name
        assert self.factory is not None
        return self.factory.rsplit(":", 1)[1]


class _RangeSpec(_Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> _RangeSpec:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min and max must be finite numbers")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class LogUniformSpec(_RangeSpec):
    type: Literal["log_uniform"]

    @model_validator(mode="after")
    def _positive(self) -> LogUniformSpec:
        if self.min <= 0:
            raise ValueError(f"log_uniform needs min > 0, got {self.min}")
        return self


class UniformSpec(_RangeSpec):
    type: Literal["uniform"]
    step: float | None = Field(default=None, gt=0)


class IntUniformSpec(_Strict):
    type: Literal["int_uniform"]
    min: Count
    max: Count
    step: Count = Field(default=1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _valid(self) -> IntUniformSpec:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.log and self.min <= 0:
            raise ValueError(f"log needs min > 0, got {self.min}")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined (Optuna refuses it)")
        return self


class ChoiceSpec(_Strict):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)


ParamSpec = Annotated[
    LogUniformSpec | UniformSpec | IntUniformSpec | ChoiceSpec,
    Field(discriminator="type"),
]


class SamplerConfig(_Strict):
    name: Literal["tpe", "random", "grid"] = "tpe"
    n_startup_trials: Count = Field(default=5, ge=0)
    grid_points: Count = Field(default=5, ge=2)


class PrunerConfig(_Strict):
    name: Literal["hyperband", "median", "none"] = "hyperband"
    n_startup_trials: Count = Field(default=5, ge=0)
    n_warmup_steps: Count = Field(default=2, ge=0)
    min_resource: Count = Field(default=1, ge=1)
    reduction_factor: Count = Field(default=3, ge=2)


class HpoConfig(_Strict):
    n_trials: Count = Field(default=20, gt=0, le=MAX_TRIALS)
    timeout: float | None = Field(default=None, gt=0)
    metric: Metric = "macro_f1"
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PrunerConfig)
    max_failures: Count = Field(default=5, ge=1)
    checkpoint_dir: Path = Path(".hpopipe/checkpoints")
    fresh: bool = False
    backup_dir: Path | None = None

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.metric in MAXIMIZED_METRICS else "minimize"


class TrainConfig(_Strict):
    """Training settings; a search-space entry of the same name overrides them."""

    max_epochs: Count = Field(default=30, gt=0, le=100_000)
    patience: Count = Field(default=5, gt=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    batch_size: Count = Field(default=64, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class CvConfig(_Strict):
    top_k: Count = Field(default=3, gt=0)
    folds: Count = Field(default=5, ge=2, le=50)


class RefitConfig(_Strict):
    epochs: int | Literal["auto"] = "auto"
    log_model: bool = True

    @field_validator("epochs", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise ValueError(f"must be 'auto' or a positive whole number of epochs, got {value!r}")


class CleanupConfig(_Strict):
    keep_best: Count = Field(default=1, ge=0)


class Params(_Strict):
    """The whole of params.yaml.

    Every section is required even where its keys have defaults: DVC hashes
    the sections each stage declares and refuses a params.yaml that lacks one.
    """

    seed: Count
    data: DataConfig
    model: ModelConfig
    search_space: dict[str, ParamSpec] = Field(min_length=1)
    hpo: HpoConfig
    train: TrainConfig
    cv: CvConfig
    refit: RefitConfig
    cleanup: CleanupConfig

    @field_validator("search_space")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"parameter name {name!r} must be a Python identifier")
        return value

    @model_validator(mode="after")
    def _metric_fits_task(self) -> Params:
        check_metric_fits_task(self.hpo.metric, self.data.task)
        return self


def check_metric_fits_task(metric: str, task: str) -> None:
    """Refuse a metric that cannot be computed for the task (e.g. rmse on classes)."""
    if task == "classification" and metric not in CLASSIFICATION_METRICS:
        raise ValueError(f"hpo.metric {metric!r} is for regression, but data.task is classification")
    if task == "regression" and metric not in REGRESSION_METRICS:
        raise ValueError(f"hpo.metric {metric!r} is for classification, but data.task is regression")


_SPEC_TAGS = {"log_uniform", "uniform", "int_uniform", "choice"}
# pydantic adds the member type of a union to the location (e.g. 'int', "literal['auto']").
_TYPE_TAG = re.compile(r"^(int|float|str|bool|none|literal\[.*\]|list\[.*\]|dict\[.*\]|function-\w+\[.*\])$")


def _location(loc: tuple[int | str, ...]) -> str:
    # Drop union-member segments so the key reads as the user wrote it.
    parts = [str(p) for p in loc if p not in _SPEC_TAGS and not _TYPE_TAG.match(str(p))]
    return ".".join(parts) or "(top level)"


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = _location(tuple(first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    # A key or value with a line break must not break the one-line promise.
    return f"{source}: {where}: {msg}{tail}".replace("\r", "\\r").replace("\n", "\\n")


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping; raise HpopipeError naming the key."""
    if not isinstance(raw, dict):
        raise HpopipeError(f"{source}: expected a mapping at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise HpopipeError(_one_line(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (safe_load only: no arbitrary objects)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HpopipeError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise HpopipeError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise HpopipeError(f"{path}: cannot read ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HpopipeError(f"{path}: not valid YAML{where}") from None
    return parse_params(raw, str(path))
