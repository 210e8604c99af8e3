"""Reproducible by construction: the default sweep's trials are a function of its inputs.

The kill-and-resume proofs with real processes are in test_recovery.py; these run in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import yaml

from hpopipe.config import parse_params
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.seeded_sampler import sweep_position
from hpopipe.sweep.storage import resolve
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, inside, params_variant


def default_sweep(root: Path, prepared: tuple[Any, dict], n_trials: int) -> optuna.Study:
    """The committed params.yaml (TPE + Hyperband, the default space), shortened to a few epochs."""
    text = params_variant(
        (REPO / "params.yaml").read_text(), {"hpo.n_trials": n_trials, "train.max_epochs": 6}
    )
    raw = yaml.safe_load(text)
    raw["data"]["path"] = str(REPO / raw["data"]["path"])
    params = parse_params(raw)
    assert params.hpo.sampler.name == "tpe" and params.hpo.pruner.name == "hyperband"
    train, schema = prepared
    with inside(root):
        return sweep(params, train, schema, resolve("sqlite"), NullTracker())


def test_a_default_sweep_never_repeats_a_configuration(tmp_path: Path, prepared: tuple[Any, dict]) -> None:
    # Optuna hands the sampler a bracket-filtered study under Hyperband; counted there, positions
    # went 0, 1, 0, ... and re-seeded the sampler into configurations it had already run.
    study = default_sweep(tmp_path, prepared, n_trials=8)
    configs = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(configs) == 8 and len(set(configs)) == 8
    assert [t.user_attrs["position"] for t in study.trials] == list(range(8))
    assert [sweep_position(study, t) for t in study.trials] == list(range(8))
