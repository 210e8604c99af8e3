"""Samplers and pruners: the configured Optuna strategy objects, always seeded from ``seed``."""

from __future__ import annotations

import warnings

import optuna

from hpopipe.config import (
    CmaesSampler,
    GpSampler,
    GridSampler,
    HyperbandPruner,
    MedianPruner,
    Nsga2Sampler,
    PercentilePruner,
    QmcSampler,
    RandomSampler,
    SuccessiveHalvingPruner,
    SweepParams,
    ThresholdPruner,
    WilcoxonPruner,
)
from hpopipe.errors import HpopipeError
from hpopipe.space import suggest
from hpopipe.sweep.optuna_internals import (
    PositionalCmaEs,
    PositionalGrid,
    PositionalHyperband,
    PositionalQMC,
    PositionalSuccessiveHalving,
)
from hpopipe.sweep.seeded_sampler import SeededSampler, bracket_position, counts


def make_sampler(params: SweepParams) -> optuna.samplers.BaseSampler:
    """The configured sampler, re-seeded before every trial from ``seed`` (see SeededSampler)."""
    return SeededSampler(_base_sampler(params), params.seed)


def _base_sampler(params: SweepParams) -> optuna.samplers.BaseSampler:
    cfg, seed = params.hpo.sampler, params.seed
    # Optuna flags several of these as experimental; that is not news to a user who asked for them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if isinstance(cfg, RandomSampler):
            return optuna.samplers.RandomSampler(seed=seed)
        if isinstance(cfg, GridSampler):
            return PositionalGrid(suggest.grid(params.search_space, cfg.grid_points), seed=seed)
        if isinstance(cfg, GpSampler):
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
        if isinstance(cfg, CmaesSampler):
            return _cmaes(cfg, seed)
        if isinstance(cfg, QmcSampler):
            return PositionalQMC(qmc_type=cfg.qmc_type, scramble=cfg.scramble, seed=seed)
        if isinstance(cfg, Nsga2Sampler):
            return optuna.samplers.NSGAIISampler(population_size=cfg.population_size, seed=seed)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=cfg.n_startup_trials,
            multivariate=cfg.multivariate,
            group=cfg.group,
            constant_liar=cfg.constant_liar,
        )


def _cmaes(cfg: CmaesSampler, seed: int) -> optuna.samplers.BaseSampler:
    try:
        import cmaes  # noqa: F401  (Optuna imports it lazily; fail here, with a clear message)
    except ImportError:
        raise HpopipeError(
            "hpo.sampler: cmaes needs the 'cmaes' package (pip install 'hpopipe[cmaes]')"
        ) from None
    return PositionalCmaEs(
        seed=seed, n_startup_trials=cfg.n_startup_trials, restart_strategy=cfg.restart_strategy
    )


def make_pruner(params: SweepParams) -> optuna.pruners.BasePruner:
    """The configured pruner; Hyperband's and successive halving's budget is ``train.max_epochs``."""
    cfg = params.hpo.pruner
    if isinstance(cfg, PercentilePruner):
        return optuna.pruners.PercentilePruner(
            cfg.percentile, cfg.n_startup_trials, cfg.n_warmup_steps, cfg.interval_steps
        )
    if isinstance(cfg, MedianPruner):
        return optuna.pruners.MedianPruner(cfg.n_startup_trials, cfg.n_warmup_steps, cfg.interval_steps)
    if isinstance(cfg, HyperbandPruner):
        # Brackets by sweep position, not trial number, so a resumed sweep keeps them.
        return PositionalHyperband(
            cfg.min_resource, params.train.max_epochs, cfg.reduction_factor, bracket_position
        )
    if isinstance(cfg, SuccessiveHalvingPruner):
        # Rungs of an interrupted attempt do not compete with its retry's.
        return PositionalSuccessiveHalving(
            cfg.min_resource, cfg.reduction_factor, cfg.min_early_stopping_rate, counts
        )
    if isinstance(cfg, ThresholdPruner):
        return optuna.pruners.ThresholdPruner(cfg.lower, cfg.upper, cfg.n_warmup_steps)
    if isinstance(cfg, WilcoxonPruner):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(
                p_threshold=cfg.p_threshold, n_startup_steps=cfg.n_startup_steps
            )
    return optuna.pruners.NopPruner()


def pruning_steps(params: SweepParams) -> set[int] | None:
    """Epochs at which asking the pruner can change anything (None: every epoch; empty: none).

    Successive halving (and so Hyperband) only decides at its rung steps
    (min_resource * rf**k); asking in between always answers "go on" but costs
    a storage round trip per epoch.
    """
    cfg = params.hpo.pruner
    if cfg.name == "none":
        return set()  # it never prunes: no step is worth asking at
    if not isinstance(cfg, HyperbandPruner | SuccessiveHalvingPruner):
        return None
    steps, step = set(), cfg.min_resource
    while step <= params.train.max_epochs:
        steps.add(step)
        step *= cfg.reduction_factor
    return steps
