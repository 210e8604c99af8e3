"""Keeps dvc.yaml, params.yaml, the config model and stages/ telling the same story."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from hpopipe import artifacts
from hpopipe.config import Params, load_params
from hpopipe.report import render
from tests.conftest import REPO
from tools.importgraph import closure as library_closure

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES: dict = DVC["stages"]
PIPELINE_ORDER = ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"]


def _outs(stage: dict) -> list[str]:
    paths = []
    for key in ("outs", "metrics", "plots"):
        for entry in stage.get(key, []):
            paths.append(entry if isinstance(entry, str) else next(iter(entry)))
    return paths


def test_stages_are_in_pipeline_order_and_run_their_own_module() -> None:
    assert list(STAGES) == PIPELINE_ORDER
    for name, stage in STAGES.items():
        assert stage["cmd"] == f"python -m stages.{name}"
        assert (REPO / "stages" / f"{name}.py").exists()
        assert f"stages/{name}.py" in stage["deps"]


@pytest.mark.parametrize("name", PIPELINE_ORDER)
def test_every_imported_library_module_is_a_dependency(name: str) -> None:
    declared = {d for d in STAGES[name]["deps"] if d.startswith("src/")}
    needed = library_closure(REPO / "stages" / f"{name}.py")
    assert needed - declared == set(), (
        "imported but not in deps: a change would leave a stale result marked fresh"
    )
    assert declared - needed == set(), "in deps but not imported: a change would re-run the stage for nothing"


def test_training_loop_is_a_dependency_of_the_sweep_but_not_of_prepare() -> None:
    assert "src/hpopipe/training/loop.py" in STAGES["hpo"]["deps"]
    assert "src/hpopipe/training/loop.py" not in STAGES["prepare"]["deps"]
    assert "src/hpopipe/refit.py" not in STAGES["hpo"]["deps"]


def test_declared_params_are_sections_of_the_config_model_and_present() -> None:
    fields = set(Params.model_fields)
    on_disk = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in STAGES.items():
        for param in stage["params"]:
            assert param.split(".")[0] in fields, f"{name}: {param} is not in the config model"
            assert param.split(".")[0] in on_disk, f"{name}: {param} is missing from params.yaml"
    assert set(on_disk) == fields  # every section present: DVC refuses missing params


def test_no_two_stages_declare_the_same_output() -> None:
    outs = [path for stage in STAGES.values() for path in _outs(stage)]
    assert len(outs) == len(set(outs))


def test_outputs_match_the_library_paths() -> None:
    expected = {
        "prepare": {artifacts.TRAIN, artifacts.TEST, artifacts.SCHEMA},
        "hpo": {
            artifacts.TRIALS_CSV,
            artifacts.RANKED_JSON,
            artifacts.STATISTICS_JSON,
            artifacts.BEST_TRIAL_PARAMS,
            artifacts.PARETO_CSV,
            artifacts.metrics_file("hpo"),
        },
        "cv": {artifacts.CV_RESULTS, artifacts.metrics_file("cv")},
        "select": {artifacts.BEST_CONFIG, artifacts.BEST_PARAMS},
        "refit": {artifacts.MODEL, artifacts.REFIT_EVALUATION, artifacts.metrics_file("test")},
        "report": {render.PLOTS_DIR, render.REPORT_HTML},
        "cleanup": {artifacts.metrics_file("cleanup")},
    }
    for name, paths in expected.items():
        assert {Path(p) for p in _outs(STAGES[name])} == paths


def test_the_study_and_scratch_are_never_outputs() -> None:
    # DVC deletes non-persistent outputs before a stage runs and caches the rest: the
    # study (a file or a database that grows) and the checkpoints must stay out of its hands.
    outs = [p for s in STAGES.values() for p in _outs(s)]
    assert not any(Path(p).name.startswith("study.") for p in outs)
    scratch = str(load_params(REPO / "params.yaml").hpo.checkpoint_dir)
    assert not any(p.startswith(scratch) for s in STAGES.values() for p in _outs(s))


def test_stage_inputs_are_produced_upstream() -> None:
    produced: set[str] = set()
    for name in PIPELINE_ORDER:
        for dep in STAGES[name]["deps"]:
            if dep.startswith(("data/prepared", "artifacts/", "metrics/", "models/")):
                assert dep in produced, f"{name} reads {dep} before any stage writes it"
        produced |= set(_outs(STAGES[name]))


def test_stages_hold_no_logic() -> None:
    for name in PIPELINE_ORDER:
        tree = ast.parse((REPO / "stages" / f"{name}.py").read_text())
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert [f.name for f in functions] == ["main"], f"stages/{name}.py should only define main()"
        assert len(functions[0].body) <= 12, f"stages/{name}.py main() is too long for a thin stage"


def test_the_lock_check_ignores_missing_outputs_and_flags_anything_stale() -> None:
    from tools.check_lock import problems, produced

    outputs = produced(REPO / "dvc.yaml")
    fresh_clone = {
        "hpo": [
            {"changed deps": {"data/prepared/train.parquet": "deleted"}},
            {"changed outs": {"artifacts/hpo/trials.csv": "not in cache"}},
        ]
    }
    assert problems(fresh_clone, outputs) == []
    stale = {
        "hpo": [{"changed deps": {"src/hpopipe/sweep/runner.py": "modified", "data/raw/x.csv": "deleted"}}],
        "cv": [{"changed params": {"params.yaml": {"cv.folds": "modified"}}}, "changed command"],
    }
    assert len(problems(stale, outputs)) == 4
