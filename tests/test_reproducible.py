"""Reproducible by construction: the default sweep's trials are a function of its inputs.

The kill-and-resume proofs with real processes are in test_recovery.py; these run in-process.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hpopipe.config import parse_params
from hpopipe.sweep.runner import sweep
from hpopipe.sweep.seeded_sampler import sweep_position
from hpopipe.sweep.storage import resolve
from hpopipe.tracking import NullTracker
from tests.conftest import REPO, inside, params_variant
from tests.sweeps import load, run_stage, sweep_params


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


HPO_OUTPUTS = (
    "artifacts/hpo/trials.csv",
    "artifacts/hpo/ranked_trials.json",
    "artifacts/hpo/pareto.csv",
    "artifacts/hpo/statistics.json",
    "artifacts/hpo/best_parameters.json",
    "metrics/hpo.json",
)


@pytest.mark.slow
def test_a_study_larger_than_the_budget_exports_its_first_n_trials(
    tmp_path: Path, prepared_dir: Path
) -> None:
    # dvc repro -f and a run-cache restore must agree: the outputs depend on hpo.n_trials alone,
    # not on how far an experiment grew the study.
    shutil.copytree(prepared_dir, tmp_path / "data/prepared")

    def hpo(n_trials: int) -> dict[str, bytes]:
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(sweep_params(n_trials=n_trials)))
        proc = run_stage(tmp_path)
        assert proc.returncode == 0, proc.stdout
        return {path: (tmp_path / path).read_bytes() for path in HPO_OUTPUTS}

    four = hpo(4)
    six = hpo(6)
    assert len(load(tmp_path).trials) == 6 and six != four
    assert hpo(4) == four
