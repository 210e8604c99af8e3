"""The pydantic models of ``params.yaml`` (read by :mod:`hpopipe.config.load`, its only reader).

Every other module receives these frozen objects, so a typo or an impossible
range is caught once, before any work, with a message that names the key.
Metric names and directions come from the catalogue, :mod:`hpopipe.metrics`.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpopipe.config.routes import OPTIMIZERS, SCHEDULES, check_names, condition_names, targets
from hpopipe.config.sizes import check_choice_values, check_size_range, check_size_values
from hpopipe.config.storage_url import check_storage_setting
from hpopipe.config.wandb_form import flatten, from_wandb
from hpopipe.metrics import (
    AUTO,
    CATALOGUE,
    METRIC_NAMES,
    MODEL_SIZE,
    OBJECTIVE_NAMES,
    check_metric_fits_task,
    objective_direction,
    resolve_metric,
)
from hpopipe.names import name_problem
from hpopipe.plugins import ref_problem

if TYPE_CHECKING:
    Metric = str
    MetricOrAuto = str
    ObjectiveName = str
    OptimizerName = str
    ScheduleName = str
else:
    # Literals built from the catalogue: pydantic then lists the accepted names in its error.
    Metric = Literal[METRIC_NAMES]
    # hpo.metric: a metric, or `auto` (the task's default: Params.for_task resolves it).
    MetricOrAuto = Literal[(AUTO, *METRIC_NAMES)]
    # An objective of a multi-objective sweep: a validation metric, or the model's trainable parameter count.
    ObjectiveName = Literal[OBJECTIVE_NAMES]
    OptimizerName = Literal[OPTIMIZERS]
    ScheduleName = Literal[SCHEDULES]
Scalar = bool | int | float | str
# A whole number written as one: "10", 10.0 and true are refused, not coerced.
Count = Annotated[int, Field(strict=True)]

# The hpo keys that name user hooks ("package.module:function"), each checked the same way.
HOOK_KEYS = ("callbacks", "on_new_best", "on_sweep_end")
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
        problem = None if self.factory is None else ref_problem(self.factory)
        if problem is not None:
            raise ValueError(f"model.factory: {problem}")
        return self

    @field_validator("params")
    @classmethod
    def _sizes(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for name, fixed in value.items():
            check_size_values(name, [fixed], "its value")
        return value

    @property
    def label(self) -> str:
        """Short name used in study names and paths."""
        if self.name is not None:
            return self.name
        assert self.factory is not None
        return self.factory.rsplit(":", 1)[1]


Condition = dict[str, Scalar | list[Scalar]]


class _Spec(_Strict):
    # `when: {layer_type: attention}`: sampled only when every named parameter has
    # (one of) the given value(s); absent from the trial otherwise.
    when: Condition | None = None


class _RangeSpec(_Spec):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> _RangeSpec:
        if not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ValueError("min and max must be finite numbers")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


def _check_step(low: float, high: float, step: float | None) -> None:
    if step is None or high == low:
        return
    n = (high - low) / step
    if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
        raise ValueError(f"step {step} does not divide max - min ({high - low})")


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

    @model_validator(mode="after")
    def _divides(self) -> UniformSpec:
        _check_step(self.min, self.max, self.step)
        return self


class IntUniformSpec(_Spec):
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
        _check_step(self.min, self.max, self.step)
        return self


class ChoiceSpec(_Spec):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _one_type_no_repeats(cls, value: list[Scalar]) -> list[Scalar]:
        check_choice_values(value)
        return value


class NormalSpec(_Spec):
    """Optuna has no normal distribution: sampled as a float in [mu - 3 sigma, mu + 3 sigma]."""

    type: Literal["normal"]
    mu: float
    sigma: float = Field(gt=0)

    @property
    def bounds(self) -> tuple[float, float]:
        return self.mu - 3 * self.sigma, self.mu + 3 * self.sigma


ParamSpec = Annotated[
    LogUniformSpec | UniformSpec | IntUniformSpec | ChoiceSpec | NormalSpec,
    Field(discriminator="type"),
]


class TpeSampler(_Strict):
    name: Literal["tpe"] = "tpe"
    n_startup_trials: Count = Field(default=5, ge=0)
    multivariate: bool = True
    group: bool = False
    constant_liar: bool = True


class RandomSampler(_Strict):
    name: Literal["random"]


class GridSampler(_Strict):
    name: Literal["grid"]
    grid_points: Count = Field(default=5, ge=2)


class GpSampler(_Strict):
    name: Literal["gp"]
    n_startup_trials: Count = Field(default=10, ge=0)


class CmaesSampler(_Strict):
    name: Literal["cmaes"]
    n_startup_trials: Count = Field(default=1, ge=0)
    restart_strategy: Literal["ipop", "bipop"] | None = None


class QmcSampler(_Strict):
    name: Literal["qmc"]
    qmc_type: Literal["sobol", "halton"] = "sobol"
    scramble: bool = True


class Nsga2Sampler(_Strict):
    name: Literal["nsga2"]
    population_size: Count = Field(default=20, ge=2)


SamplerConfig = Annotated[
    TpeSampler | RandomSampler | GridSampler | GpSampler | CmaesSampler | QmcSampler | Nsga2Sampler,
    Field(discriminator="name"),
]


class MedianPruner(_Strict):
    name: Literal["median"]
    n_startup_trials: Count = Field(default=5, ge=0)
    n_warmup_steps: Count = Field(default=2, ge=0)
    interval_steps: Count = Field(default=1, ge=1)


class PercentilePruner(MedianPruner):
    name: Literal["percentile"]  # type: ignore[assignment]
    percentile: float = Field(default=25.0, gt=0, lt=100)


class SuccessiveHalvingPruner(_Strict):
    name: Literal["successive_halving"]
    min_resource: Count = Field(default=1, ge=1)
    reduction_factor: Count = Field(default=3, ge=2)
    min_early_stopping_rate: Count = Field(default=0, ge=0)


class HyperbandPruner(_Strict):
    name: Literal["hyperband"] = "hyperband"
    min_resource: Count = Field(default=1, ge=1)
    reduction_factor: Count = Field(default=3, ge=2)


class ThresholdPruner(_Strict):
    name: Literal["threshold"]
    lower: float | None = None
    upper: float | None = None
    n_warmup_steps: Count = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _bound(self) -> ThresholdPruner:
        if self.lower is None and self.upper is None:
            raise ValueError("threshold needs lower, upper or both")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise ValueError(f"lower ({self.lower}) is greater than upper ({self.upper})")
        return self


class WilcoxonPruner(_Strict):
    name: Literal["wilcoxon"]
    p_threshold: float = Field(default=0.1, gt=0, lt=1)
    n_startup_steps: Count = Field(default=2, ge=0)


class NoPruner(_Strict):
    name: Literal["none"]


PrunerConfig = Annotated[
    MedianPruner
    | PercentilePruner
    | SuccessiveHalvingPruner
    | HyperbandPruner
    | ThresholdPruner
    | WilcoxonPruner
    | NoPruner,
    Field(discriminator="name"),
]


class HpoConfig(_Strict):
    n_trials: Count = Field(default=20, gt=0, le=MAX_TRIALS)
    timeout: float | None = Field(default=None, gt=0)
    metric: MetricOrAuto = AUTO
    # Multi-objective: two or more objectives; ``metric`` then is (and defaults to) the first.
    metrics: list[ObjectiveName] | None = None
    sampler: SamplerConfig = Field(default_factory=TpeSampler)
    pruner: PrunerConfig = Field(default_factory=HyperbandPruner)
    callbacks: list[str] = Field(default_factory=list)  # fn(study, trial) after every trial
    on_new_best: list[str] = Field(default_factory=list)  # fn(study, trial, improvement)
    on_sweep_end: list[str] = Field(default_factory=list)  # fn(study), once, when the sweep ends
    max_failures: Count = Field(default=5, ge=1)
    checkpoint_dir: Path = Path(".hpopipe/checkpoints")
    fresh: bool = False
    # auto: a new study starts with the fitting finished trials of earlier ones (sweep/warm_start.py)
    warm_start: Literal["auto", "none"] = "auto"
    backup_dir: Path | None = None
    # Scale-out (README "Parallel and distributed sweeps"): none of these changes the study's identity.
    n_workers: Count = Field(default=1, ge=1, le=256)
    # journal (artifacts/hpo/study.journal) | sqlite (artifacts/hpo/study.db, one writer)
    # | postgresql://user@host/db | env:NAME
    storage: str = "journal"
    backend: Literal["local", "prefect"] = "local"
    heartbeat_s: float = Field(default=10.0, gt=0)
    grace_s: float = Field(default=60.0, gt=0)
    max_retry: Count = Field(default=2, ge=0)
    # How long a worker rides out an outage of a database storage before it gives up (0: at once).
    storage_retry_s: float = Field(default=60.0, ge=0, allow_inf_nan=False)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        check_storage_setting(value)
        return value

    @model_validator(mode="after")
    def _writers(self) -> HpoConfig:
        several = self.n_workers > 1 or self.backend == "prefect"
        if several and self.storage == "sqlite":
            raise ValueError(
                "storage: SQLite takes one writer, but several workers would share it "
                "(use journal on one machine, or postgresql)"
            )
        if self.backend == "prefect" and self.storage == "journal":
            raise ValueError("storage: Prefect workers may run on other machines: use a postgresql storage")
        if self.backup_dir is not None and self.storage not in ("sqlite", "journal"):
            raise ValueError(
                "backup_dir: backs up a study file (journal or sqlite); back a database up yourself"
            )
        if several and isinstance(self.sampler, TpeSampler) and not self.sampler.constant_liar:
            raise ValueError(
                "sampler: constant_liar must stay true with several workers "
                "(without it they propose the same points while trials run)"
            )
        if self.grace_s <= self.heartbeat_s:
            raise ValueError(f"grace_s: {self.grace_s} must exceed heartbeat_s ({self.heartbeat_s})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _metric_is_first_of_metrics(cls, data: Any) -> Any:
        # With `metrics`, `metric` is the first of them (early stopping, CV and refit score by it),
        # and a multi-objective study cannot prune: `pruner` defaults to none instead of hyperband.
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), list) or not data["metrics"]:
            return data
        first = data["metrics"][0]
        if first == MODEL_SIZE:
            raise ValueError(
                f"hpo.metrics: the first objective must be a validation metric, not {MODEL_SIZE!r} "
                "(early stopping, CV and the refit score by it)"
            )
        if first not in CATALOGUE:  # left to the field's own check, which names it
            return data
        if data.get("metric", AUTO) not in (AUTO, first):
            raise ValueError(
                f"hpo.metric: {data['metric']!r} must be left out "
                f"or equal the first of hpo.metrics ({first!r})"
            )
        return {"pruner": {"name": "none"}, **data, "metric": first}

    @model_validator(mode="after")
    def _multi_objective(self) -> HpoConfig:
        if self.metrics is None:
            return self
        if len(self.metrics) < 2:
            raise ValueError("hpo.metrics: list two or more objectives (for one, use hpo.metric)")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"hpo.metrics: {self.metrics} names an objective twice")
        if not isinstance(self.pruner, NoPruner):
            raise ValueError(
                f"hpo.pruner: {self.pruner.name!r} cannot be used with hpo.metrics: "
                "Optuna cannot prune a multi-objective study (leave hpo.pruner out or set {name: none})"
            )
        if isinstance(self.sampler, CmaesSampler):
            raise ValueError(
                "hpo.sampler: 'cmaes' optimises a single objective; with hpo.metrics use "
                "nsga2, tpe, random, grid, gp or qmc"
            )
        return self

    @property
    def objectives(self) -> list[str]:
        """The names of the study's objectives: ``metrics``, or ``[metric]`` for one."""
        return list(self.metrics) if self.metrics is not None else [self.metric]

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        """One direction per objective; each follows from the metric (n_params is minimised)."""
        return [objective_direction(name) for name in self.objectives]

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return objective_direction(self.metric)


class TrainConfig(_Strict):
    """Training settings; a search-space entry of the same name overrides them."""

    max_epochs: Count = Field(default=30, gt=0, le=100_000)
    patience: Count = Field(default=5, gt=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    batch_size: Count = Field(default=64, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Added later than the keys above: left out of every dump while at their defaults
    # (see settings()), so study names and best/config.yaml of earlier runs stay the same.
    optimizer: OptimizerName = "adamw"
    momentum: float = Field(default=0.9, ge=0, lt=1)  # sgd and rmsprop only
    schedule: ScheduleName = "none"
    step_size: Count = Field(default=10, gt=0)  # schedule: step, epochs between decays
    gamma: float = Field(default=0.1, gt=0, le=1)  # schedule: step, factor per decay
    # torch intra-op threads per training process; auto = 1 (docs/benchmarks.md, "Threads"). Like
    # device, how a trial runs, not what it computes: left out of study names.
    threads: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    # Seconds between a sweep trial's crash-recovery checkpoints (0: every epoch), also written before a
    # graceful stop and once at the end. 30: a kill loses at most 30 s plus the epoch in progress, trained
    # again with the same result (seeded; RNG states are in the file); a save (1.6 ms for the default
    # MLP, more for a large model) then costs well under 1 % of a trial that runs that long, and a
    # trial shorter than 30 s writes one checkpoint, not one per epoch. Run-only, like threads.
    checkpoint_every_s: float = Field(default=30.0, ge=0)

    def settings(self, exclude: set[str] | None = None) -> dict[str, Any]:
        """The settings as written to files and hashed into study names: later keys only when set."""
        dumped = self.model_dump(mode="json", exclude=exclude)
        return {
            key: value
            for key, value in dumped.items()
            if key not in _LATER_TRAIN_KEYS or value != type(self).model_fields[key].default
        }


_LATER_TRAIN_KEYS = (
    "optimizer",
    "momentum",
    "schedule",
    "step_size",
    "gamma",
    "threads",
    "checkpoint_every_s",
)


class BestFirstMetric(_Strict):
    """Select the candidate with the best CV mean of the first objective (``hpo.metric``)."""

    rule: Literal["best_first_metric"] = "best_first_metric"


class WeightedSelect(_Strict):
    """Select the candidate with the highest sum of weight x CV mean over every objective.

    Higher is better; the sign of a weight says which way its objective is good:
    positive for a maximised metric, negative for a minimised one (n_params, log_loss).
    """

    rule: Literal["weighted"]
    weights: dict[str, float] = Field(min_length=1)

    @field_validator("weights")
    @classmethod
    def _finite_nonzero(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not math.isfinite(weight) or weight == 0:
                raise ValueError(f"{name}: weight must be a finite non-zero number, got {weight}")
        return value


SelectRule = Annotated[BestFirstMetric | WeightedSelect, Field(discriminator="rule")]


class CvConfig(_Strict):
    top_k: Count = Field(default=3, gt=0)
    folds: Count = Field(default=5, ge=2, le=50)
    # Fold-aware early stopping: a candidate whose folds so far prove it cannot beat the leader's
    # mean runs no more folds (hpopipe.cv.FoldRace); the selected trial is the same either way.
    early_stop: bool = True
    select: SelectRule = Field(default_factory=BestFirstMetric)

    @field_validator("select", mode="before")
    @classmethod
    def _rule_name(cls, value: Any) -> Any:
        return {"rule": value} if isinstance(value, str) else value


class RefitConfig(_Strict):
    epochs: int | Literal["auto"] = "auto"
    log_model: bool = True
    # Name in the MLflow Model Registry; null: derived from the data file and target (hpopipe.served).
    registered_model_name: str | None = None

    @field_validator("epochs", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise ValueError(f"must be 'auto' or a positive whole number of epochs, got {value!r}")

    @field_validator("registered_model_name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        problem = None if value is None else name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class RetrainConfig(_Strict):
    """The quality gate of `hpopipe retrain`: how much worse the new test metric may be."""

    max_regression: float = Field(default=0.02, ge=0)
    # Also require the network to beat the run's gradient-boosting baseline (metrics/test.json).
    beat_baseline: bool = False


class CleanupConfig(_Strict):
    keep_best: Count = Field(default=1, ge=0)


class SweepParams(_Strict):
    """What a sweep needs and nothing of the pipeline: ``seed``, ``search_space``, ``hpo``, ``train``.

    The params file of external training code that joins a sweep (:func:`hpopipe.connect`) has only
    these keys; :class:`Params` adds the pipeline's sections, so both validate the sweep alike.
    """

    seed: Count
    search_space: dict[str, ParamSpec] = Field(min_length=1)
    hpo: HpoConfig = Field(default_factory=HpoConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("search_space", mode="before")
    @classmethod
    def _names_and_wandb_form(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        # W&B's nested `name: {parameters: {...}}` blocks become dotted names (config.routes).
        return {name: _normalise_spec(name, spec) for name, spec in flatten(value).items()}

    @field_validator("search_space")
    @classmethod
    def _conditions(cls, value: dict[str, Any]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for name, spec in value.items():
            for other, wanted in (spec.when or {}).items():
                if other not in seen:
                    raise ValueError(f"{name}.when: {other!r} must be a parameter listed before {name!r}")
                options = wanted if isinstance(wanted, list) else [wanted]
                if isinstance(seen[other], ChoiceSpec) and not set(options) <= set(seen[other].values):
                    raise ValueError(f"{name}.when: {options} are not all values of {other!r}")
            seen[name] = spec
            _check_sizes(name, spec)
        return value

    @field_validator("hpo")
    @classmethod
    def _callbacks(cls, value: HpoConfig) -> HpoConfig:
        for key in HOOK_KEYS:
            for ref in getattr(value, key):
                if not _FACTORY_RE.match(ref):
                    raise ValueError(f"{key}: {ref!r} must look like 'package.module:function'")
                problem = ref_problem(ref)
                if problem is not None:
                    raise ValueError(f"{key}: {problem}")
        if value.on_new_best and value.metrics is not None:
            raise ValueError(
                "on_new_best: a multi-objective sweep has no single best value (use hpo.callbacks)"
            )
        return value


class Params(SweepParams):
    """The whole of params.yaml: the sweep's sections (:class:`SweepParams`) and the pipeline's.

    Every section is required even where its keys have defaults: DVC hashes
    the sections each stage declares and refuses a params.yaml that lacks one.
    """

    data: DataConfig
    model: ModelConfig
    hpo: HpoConfig
    train: TrainConfig
    cv: CvConfig
    refit: RefitConfig
    cleanup: CleanupConfig
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)  # no stage reads it: optional

    @model_validator(mode="after")
    def _names_reach_something(self) -> Params:
        gates = condition_names(self.search_space)
        check_names(self.search_space, self.model.name, optimizer=self.train.optimizer, gates=gates)
        for name, spec in self.search_space.items():
            _check_loop_values(name, spec)
        return self

    def for_task(self, task: str) -> Params:
        """These params with ``hpo.metric: auto`` resolved for ``task``, the one the data has.

        The task is known only once the data is read (``data.task: auto`` infers it), so every
        stage that reads the prepared schema calls this first; the sweep's identity, CV, the
        selection and the gate then see the resolved name, never ``auto``.
        """
        if self.hpo.metric != AUTO:
            return self
        hpo = self.hpo.model_copy(update={"metric": resolve_metric(AUTO, task)})
        return self.model_copy(update={"hpo": hpo})

    @model_validator(mode="after")
    def _metric_fits_task(self) -> Params:
        check_metric_fits_task(self.hpo.metric, self.data.task)
        for name in self.hpo.objectives[1:]:
            if name != MODEL_SIZE:
                check_metric_fits_task(name, self.data.task, key="hpo.metrics:")
        check_select_rule(self.cv.select, self.hpo)
        return self


def _check_sizes(name: str, spec: Any) -> None:
    """A parameter that sizes the model or its batches never samples below 1 (see config.sizes)."""
    if isinstance(spec, ChoiceSpec):
        check_size_values(name, list(spec.values), "its values")
    elif isinstance(spec, NormalSpec):
        check_size_range(name, spec.bounds[0])
    else:
        check_size_range(name, spec.min)


_LOOP_CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}


def _check_loop_values(name: str, spec: Any) -> None:
    """A tuned optimizer or schedule is a choice among the loop's; a tuned momentum stays in [0, 1)."""
    for kind, key in targets(name):
        if kind != "train":
            continue
        if key[0] in _LOOP_CHOICES:
            known = _LOOP_CHOICES[key[0]]
            if not isinstance(spec, ChoiceSpec):
                raise ValueError(f"search_space.{name}: tune it as a choice among {', '.join(known)}")
            unknown = [v for v in spec.values if v not in known]
            if unknown:
                raise ValueError(f"search_space.{name}: {unknown} are not among {', '.join(known)}")
        elif key[0] == "momentum":
            low, high = _spec_bounds(spec)
            if not (low >= 0 and high < 1):
                raise ValueError(f"search_space.{name}: momentum must lie in [0, 1), got {low} … {high}")


def _spec_bounds(spec: Any) -> tuple[float, float]:
    if isinstance(spec, ChoiceSpec):
        numbers = [float(v) for v in spec.values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) != len(spec.values):
            return math.nan, math.nan  # a string or bool momentum: refused by the caller
        return min(numbers), max(numbers)
    if isinstance(spec, NormalSpec):
        return spec.bounds
    return float(spec.min), float(spec.max)


def _normalise_spec(name: str, spec: Any) -> Any:
    # W&B's sweep form has `distribution` (or bare `values`, `value`, `min`/`max`) instead of `type`.
    if isinstance(spec, dict) and "type" not in spec:
        try:
            return from_wandb(spec)
        except (KeyError, ValueError) as err:
            raise ValueError(f"search_space.{name}: {err}") from None
    return spec


def check_select_rule(rule: BestFirstMetric | WeightedSelect, hpo: HpoConfig) -> None:
    """A weighted rule weighs every objective of a multi-objective sweep, each in its direction."""
    if not isinstance(rule, WeightedSelect):
        return
    if hpo.metrics is None:
        raise ValueError("cv.select.rule: 'weighted' needs hpo.metrics (two or more objectives)")
    if set(rule.weights) != set(hpo.metrics):
        raise ValueError(
            f"cv.select.weights: name exactly the objectives of hpo.metrics {hpo.metrics}, "
            f"got {sorted(rule.weights)}"
        )
    for name in hpo.metrics:
        wanted = 1.0 if objective_direction(name) == "maximize" else -1.0
        if math.copysign(1.0, rule.weights[name]) != wanted:
            sign = "positive" if wanted > 0 else "negative"
            raise ValueError(
                f"cv.select.weights.{name}: {name} is {objective_direction(name)}d, so its weight "
                f"must be {sign} (the highest weighted score wins)"
            )
