"""`hpopipe.run` and `hpopipe.best_config` on a real git + DVC project (one `dvc repro`, then copies)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import yaml

import hpopipe
from hpopipe.errors import HpopipeError, StageError
from tests.conftest import TINY_PARAMS, dvc_repro, make_project, subprocess_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default data through the whole pipeline with plain `dvc repro`: the reference."""
    root = make_project(tmp_path_factory.mktemp("api") / "proj", TINY_PARAMS)
    dvc_repro(root)
    return root


@pytest.fixture
def copy(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the finished project (git, DVC cache, study and all); DVC runs with this checkout's code."""
    root = tmp_path / "proj"
    shutil.copytree(finished, root, symlinks=True)
    for key in ("PATH", "PYTHONPATH", "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(key, subprocess_env()[key])
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@t")
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_run_on_a_finished_pipeline_runs_nothing_and_returns_what_dvc_repro_wrote(copy: Path) -> None:
    result = hpopipe.run(cwd=copy)
    assert result.ran == () and not result.reran and result.experiment is None
    assert result.test_metrics == _json(copy / "metrics/test.json")
    assert result.study_name == _json(copy / "metrics/hpo.json")["study"]
    assert result.model_path == copy.resolve() / "models/model.pt" and result.model_path.is_file()
    assert result.best_config == yaml.safe_load((copy / "artifacts/best/config.yaml").read_text())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.study_name = "other"  # type: ignore[misc]


def test_a_rerun_refit_through_dvc_writes_the_metrics_dvc_repro_wrote(copy: Path, finished: Path) -> None:
    # A refit setting that does not change the model (tracking is off) makes DVC run refit again.
    result = hpopipe.run(overrides={"refit.log_model": False}, cwd=copy)
    assert result.ran[0] == "refit" and "hpo" not in result.ran and result.experiment
    assert result.test_metrics == _json(finished / "metrics/test.json")  # what `dvc repro` wrote
    assert (copy / "metrics/test.json").read_bytes() == (finished / "metrics/test.json").read_bytes()


def test_run_refuses_what_is_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(HpopipeError, match="not found"):
        hpopipe.run(cwd=tmp_path)
    (tmp_path / "params.yaml").write_text(TINY_PARAMS)
    with pytest.raises(HpopipeError, match=r"no dvc\.yaml"):
        hpopipe.run(cwd=tmp_path)
    with pytest.raises(HpopipeError, match=r"the stages read params\.yaml"):
        hpopipe.run("other.yaml", cwd=tmp_path)
    with pytest.raises(HpopipeError, match="dotted"):
        hpopipe.run(overrides={"hpo n_trials": 3}, cwd=tmp_path)


def test_best_config_reads_the_selected_configuration(finished: Path, tmp_path: Path) -> None:
    expected = yaml.safe_load((finished / "artifacts/best/config.yaml").read_text())
    assert hpopipe.best_config(finished) == expected
    assert hpopipe.best_config(finished / "artifacts/best/config.yaml") == expected
    with pytest.raises(HpopipeError, match="not found"):
        hpopipe.best_config(tmp_path)
    bad = tmp_path / "config.yaml"
    bad.write_text(yaml.safe_dump({**expected, "epochs": 0}))
    with pytest.raises(HpopipeError, match="epochs"):
        hpopipe.best_config(bad)


def test_public_names_are_listed_and_lazy() -> None:
    assert {"run", "best_config", "RunResult"} <= set(hpopipe.__all__)
    for name in hpopipe.__all__:
        assert getattr(hpopipe, name) is not None
    with pytest.raises(AttributeError):
        hpopipe.no_such_name  # noqa: B018


def test_an_unknown_override_key_is_one_line_and_runs_nothing(copy: Path) -> None:
    before = (copy / "params.yaml").read_text()
    with pytest.raises(HpopipeError, match=r"hpo\.n_trial: unknown key") as err:
        hpopipe.run(overrides={"hpo.n_trial": 5}, cwd=copy)
    assert "\n" not in str(err.value)
    with pytest.raises(HpopipeError, match=r"hpo\.n_trials"):
        hpopipe.run(overrides={"hpo.n_trials": "many"}, cwd=copy)
    assert (copy / "params.yaml").read_text() == before


def test_overrides_reach_the_stages_through_dvc_exp_run(copy: Path) -> None:
    result = hpopipe.run(overrides={"hpo.n_trials": 2, "train.max_epochs": 2, "cv.folds": 2}, cwd=copy)
    assert "hpo" in result.ran and "refit" in result.ran and result.experiment
    params = yaml.safe_load((copy / "params.yaml").read_text())  # DVC wrote them, as `exp run -S` does
    assert params["hpo"]["n_trials"] == 2 and params["train"]["max_epochs"] == 2
    stats = _json(copy / "artifacts/hpo/statistics.json")
    assert stats["counts"]["complete"] + stats["counts"]["pruned"] == 2
    assert result.best_config["train"]["max_epochs"] == 2
    assert result.test_metrics == _json(copy / "metrics/test.json")
    assert result.study_name == stats["study"]


def test_a_failing_stage_is_one_line_naming_it(copy: Path) -> None:
    with pytest.raises(StageError, match=r"^stage 'prepare': .*no_such_column") as err:
        hpopipe.run(overrides={"data.target": "no_such_column"}, cwd=copy)
    assert "\n" not in str(err.value)
