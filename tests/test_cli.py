"""The command line as a user meets it: predictions, and one-line errors with exit status 2."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hpopipe import artifacts
from hpopipe.config import RefitConfig, parse_params
from hpopipe.data import prepare, read_table, to_arrays
from hpopipe.handoffs.best import BestConfig
from hpopipe.refit import refit, save_model
from tests.conftest import REPO, TINY_PARAMS, subprocess_env

CSV = REPO / "data/raw/breast_cancer.csv"


def hpopipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hpopipe.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True)


def stage(name: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", f"stages.{name}"]
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")]))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(CSV)
    params = parse_params(raw)
    prep = prepare(read_table(params.data.path), params.data, params.seed)
    best = BestConfig.model_validate(
        {
            "seed": 1,
            "model": {"name": "mlp", "params": {}},
            "params": {"lr": 0.01, "n_layers": 1, "width": 16, "dropout": 0.0},
            "train": params.train.model_dump(mode="json"),
            "epochs": 5,
            "metric": "macro_f1",
            "source": {"trial": 0, "sweep_value": 0.9, "cv_mean": 0.9, "cv_std": 0.0, "cv_folds": 2},
        }
    )
    fitted = refit(best, RefitConfig(), prep.schema, to_arrays(prep.train), to_arrays(prep.test))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(path, fitted, best, prep.schema)
    return path


def test_predict_applies_the_saved_transform(model_file: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(CSV).drop(columns=["diagnosis"]).head(25)
    rows.loc[0, "mean_radius"] = None  # a missing value is imputed, not an error
    rows.to_csv(tmp_path / "new.csv", index=False)
    proc = hpopipe(
        "predict", "--model", str(model_file), "--input", "new.csv", "--output", "out.csv", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 25 and set(out["prediction"]) <= {"benign", "malignant"}
    assert ((out["proba_benign"] + out["proba_malignant"]) - 1).abs().max() < 1e-6


def test_predict_refuses_missing_and_extra_columns(model_file: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(CSV).head(5)
    rows.drop(columns=["mean_area"]).to_csv(tmp_path / "missing.csv", index=False)
    proc = hpopipe(
        "predict", "--model", str(model_file), "--input", "missing.csv", "--output", "o.csv", cwd=tmp_path
    )
    assert_user_error(proc, "missing.csv", "missing column(s) ['mean_area']")
    rows.assign(surprise=1).to_csv(tmp_path / "extra.csv", index=False)
    proc = hpopipe(
        "predict", "--model", str(model_file), "--input", "extra.csv", "--output", "o.csv", cwd=tmp_path
    )
    assert_user_error(proc, "unexpected column(s) ['surprise']")
    assert not (tmp_path / "o.csv").exists()


def test_predict_refuses_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "fake.pt").write_bytes(b"not a model")
    proc = hpopipe("predict", "--model", "fake.pt", "--input", str(CSV), "--output", "o.csv", cwd=tmp_path)
    assert_user_error(proc, "--model", "fake.pt")


def test_validate_names_the_bad_key(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["hpo"]["n_trail"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert_user_error(hpopipe("validate", cwd=tmp_path), "params.yaml: hpo.n_trail: unknown key")
    raw["hpo"].pop("n_trail")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert hpopipe("validate", cwd=tmp_path).returncode == 0


def test_stage_error_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = "data/raw/nope.csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert_user_error(stage("prepare", tmp_path), "data.path: data/raw/nope.csv: file not found")
    assert not (tmp_path / "data/prepared").exists()


def test_failed_sweep_leaves_the_existing_study_untouched(tmp_path: Path) -> None:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(CSV)
    raw["hpo"]["n_trials"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert stage("prepare", tmp_path).returncode == 0
    assert stage("hpo", tmp_path).returncode == 0
    status = hpopipe("status", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert re.search(r"finished +2 of 2 \(complete \+ pruned\)", status.stdout)
    study = tmp_path / artifacts.STUDY_JOURNAL
    digest = hashlib.sha256(study.read_bytes()).hexdigest()
    raw["search_space"]["lr"] = {"type": "log_uniform", "min": 0.0, "max": 1.0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert_user_error(stage("hpo", tmp_path), "search_space.lr", "min > 0")
    assert hashlib.sha256(study.read_bytes()).hexdigest() == digest


def test_a_model_naming_a_factory_loads_only_when_trusted(tmp_path: Path) -> None:
    """The refused side is in tests/test_bad_input.py; here the trusted ways in still work."""
    from hpopipe.errors import HpopipeError
    from hpopipe.refit import load_model

    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = str(CSV)
    params = parse_params(raw)
    prep = prepare(read_table(params.data.path), params.data, params.seed)
    factory = "tests.factories:build_linear"
    best = BestConfig.model_validate(
        {
            "seed": 1,
            "model": {"factory": factory, "params": {"hidden": 4}},
            "params": {"lr": 0.01},
            "train": params.train.model_dump(mode="json"),
            "epochs": 2,
            "metric": "macro_f1",
            "source": {"trial": 0, "sweep_value": 0.9, "cv_mean": 0.9, "cv_std": 0.0, "cv_folds": 2},
        }
    )
    fitted = refit(best, RefitConfig(), prep.schema, to_arrays(prep.train), to_arrays(prep.test))
    path = tmp_path / "model.pt"
    save_model(path, fitted, best, prep.schema)
    for refused in (False, None, "other.pkg:build"):
        with pytest.raises(HpopipeError, match=r"names the factory 'tests\.factories:build_linear'"):
            load_model(path, trust_factory=refused)
    for trusted in (True, factory):  # --trust-factory; the report stage's params.yaml factory
        assert load_model(path, trust_factory=trusted)[0][0].out_features == 4  # type: ignore[index]
    pd.read_csv(CSV).drop(columns=["diagnosis"]).head(5).to_csv(tmp_path / "new.csv", index=False)
    args = ("predict", "--model", "model.pt", "--input", "new.csv", "--output", "out.csv")
    env = subprocess_env(PYTHONPATH=str(REPO))  # the factory's package, tests/
    proc = subprocess.run(
        [sys.executable, "-m", "hpopipe.cli", *args, "--trust-factory"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 5
