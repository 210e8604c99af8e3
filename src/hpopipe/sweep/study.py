"""The Optuna study's identity (a hash of what determines its trials) and how it is opened.

The study is the source of truth for trials; :mod:`hpopipe.sweep.exports` writes
the files that later stages read. Where it is stored is :mod:`hpopipe.sweep.storage`;
the sweep that runs it is :mod:`hpopipe.sweep.runner`.
"""

from __future__ import annotations

import hashlib
import json

import optuna

from hpopipe.config import Params, SweepParams
from hpopipe.data import data_fingerprint as data_fingerprint  # re-exported: runner, agent, summary
from hpopipe.sweep import pareto
from hpopipe.sweep.sampling import make_pruner, make_sampler
from hpopipe.training import checkpoints

RUN_ONLY = {"device", "threads", "checkpoint_every_s"}
"""Training settings that say where and how a trial runs, not what it computes: not in study names."""


def study_name(params: Params, data_fingerprint: str) -> str:
    """``<model>-<8 hex>`` over everything that determines the trials.

    ``n_trials`` and ``timeout`` are left out on purpose: raising the budget
    extends the same study instead of starting a new one.
    """
    identity = {
        **_setting(params, data_fingerprint),
        "space": {k: v.model_dump(mode="json") for k, v in params.search_space.items()},
        "sampler": params.hpo.sampler.model_dump(mode="json"),
        "pruner": params.hpo.pruner.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{checkpoints.safe_name(params.model.label)}-{digest}"


def setting_key(params: Params, data_fingerprint: str) -> str:
    """A hash of what makes two studies' trial values comparable: the study's identity without
    the search space, sampler and pruner (data, model, training settings, split, seed, metric).

    Studies with the same key may share finished trials (:mod:`hpopipe.sweep.warm_start`).
    """
    setting = json.dumps(_setting(params, data_fingerprint), sort_keys=True)
    return hashlib.sha256(setting.encode()).hexdigest()[:16]


def _setting(params: Params, data_fingerprint: str) -> dict[str, object]:
    setting: dict[str, object] = {
        "data": data_fingerprint,
        "model": params.model.model_dump(mode="json"),
        "metric": params.hpo.metric,
        "train": params.train.settings(exclude=RUN_ONLY),
        "val_size": params.data.val_size,
        "seed": params.seed,
    }
    if params.hpo.metrics is not None:  # only then: single-objective study names stay as they were
        setting["metrics"] = list(params.hpo.metrics)
    return setting


EXTERNAL = "external"  # the label of a study that only external training code runs


def external_study_name(params: SweepParams) -> str:
    """``external-<8 hex>``: the study of a sweep-only params file (:func:`hpopipe.connect`).

    Hashed like :func:`study_name` over what determines the trials that hpopipe knows of (no
    data, no model: the training code owns those); two scripts with the same file share it.
    """
    identity = {
        "space": {k: v.model_dump(mode="json") for k, v in params.search_space.items()},
        "sampler": params.hpo.sampler.model_dump(mode="json"),
        "pruner": params.hpo.pruner.model_dump(mode="json"),
        "metrics": params.hpo.objectives,
        "train": params.train.model_dump(mode="json", exclude=RUN_ONLY),
        "seed": params.seed,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{EXTERNAL}-{digest}"


def open_study(params: SweepParams, name: str, storage: str | optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it when a run with the same identity exists."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=make_sampler(params),
        pruner=make_pruner(params),
        load_if_exists=True,
        **pareto.directions_kwarg(params),
    )
    pareto.name_objectives(study, params)
    return study
