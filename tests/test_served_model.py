"""The registered MLflow model as a user meets it: loaded by alias, served over HTTP, promoted by the gate.

Two real pipelines run once per module with tracking on, into one MLflow store: the default
classification table (TINY_PARAMS with ``hpo.metric`` left to ``auto``), and Palmer penguins as a
regression table made from the repository's own params.yaml by changing only ``data.path`` and
``data.target`` (plus the budget keys, so the test stays quick). Then the registered models are
loaded from the registry by alias and served with ``mlflow models serve`` on loopback ports, and
must answer with exactly what ``hpopipe predict`` writes for the same raw rows.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from palmerpenguins import load_penguins

from hpopipe import artifacts, served
from hpopipe.config import DataConfig, RefitConfig, parse_params
from hpopipe.data import data_fingerprint
from hpopipe.errors import HpopipeError
from hpopipe.retrain.sequence import RetrainOptions, retrain
from hpopipe.retrain.stages import StageOutcome
from tests.conftest import DROP, REPO, TINY_PARAMS, params_variant, subprocess_env

PIPELINE = ["prepare", "hpo", "cv", "select", "refit"]
CLASSIFIER = "breast_cancer-diagnosis"  # derived: the data file's stem and the target
REGRESSOR = "penguins-body_mass_g"
# Budget only: the point is that no metric, task or model key had to change.
BUDGET = {"hpo.n_trials": 4, "train.max_epochs": 8, "cv.folds": 2, "cv.top_k": 1}


@contextlib.contextmanager
def tracked(root: Path, store: str) -> Iterator[None]:
    """Run in ``root`` with MLflow tracking on, into ``store`` (as `dvc repro` would with tracking)."""
    with pytest.MonkeyPatch.context() as mp, _use_tracking_uri(store):
        mp.chdir(root)
        mp.setenv("HPOPIPE_TRACKING", "on")
        mp.setenv("MLFLOW_TRACKING_URI", store)
        yield


def run_stages(root: Path, store: str, names: list[str]) -> None:
    with tracked(root, store):
        for name in names:
            importlib.import_module(f"stages.{name}").main()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def classification(tmp_path_factory: pytest.TempPathFactory, store: str) -> Path:
    root = tmp_path_factory.mktemp("classification")
    (root / "data/raw").mkdir(parents=True)
    shutil.copy(REPO / "data/raw/breast_cancer.csv", root / "data/raw")
    (root / "params.yaml").write_text(params_variant(TINY_PARAMS, {"hpo.metric": DROP}))
    run_stages(root, store, PIPELINE)
    return root


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory, store: str) -> Path:
    root = tmp_path_factory.mktemp("regression")
    (root / "data/raw").mkdir(parents=True)
    load_penguins().to_csv(root / "data/raw/penguins.csv", index=False)
    edits = {"data.path": "data/raw/penguins.csv", "data.target": "body_mass_g"}
    (root / "params.yaml").write_text(params_variant((REPO / "params.yaml").read_text(), {**edits, **BUDGET}))
    run_stages(root, store, [*PIPELINE, "report", "cleanup"])
    return root


def client(store: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=store, registry_uri=store)


def raw_rows(root: Path, n: int) -> pd.DataFrame:
    """The first ``n`` rows of the project's raw table, without the target (as a user sends them)."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    table = pd.read_csv(root / params["data"]["path"])
    return table.drop(columns=[params["data"]["target"]]).head(n)


def hpopipe_predict(root: Path, rows: pd.DataFrame, tmp_path: Path) -> pd.DataFrame:
    rows.to_csv(tmp_path / "rows.csv", index=False)
    cmd = [sys.executable, "-m", "hpopipe.cli", "predict", "--model", str(root / "models/model.pt")]
    cmd += ["--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "predicted.csv")]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return pd.read_csv(tmp_path / "predicted.csv")


# ---------------------------------------------------------------- your own data: two edits


def test_a_regression_table_runs_end_to_end_after_changing_only_path_and_target(regression: Path) -> None:
    ours = yaml.safe_load((regression / "params.yaml").read_text())
    repo = yaml.safe_load((REPO / "params.yaml").read_text())
    changed = {
        f"{section}.{key}"
        for section, values in ours.items()
        if isinstance(values, dict)
        for key in values
        if values[key] != repo[section].get(key)
    }
    assert changed == {"data.path", "data.target", *BUDGET}
    assert repo["hpo"]["metric"] == "auto"  # the default follows the data
    best = yaml.safe_load((regression / "artifacts/best/config.yaml").read_text())
    assert best["metric"] == "rmse"
    test = json.loads((regression / "metrics/test.json").read_text())
    assert {"rmse", "mae", "r2"} <= set(test) and test["rmse"] > 0
    assert set(test["baselines"]) == {"hist_gradient_boosting", "dummy"}
    assert (regression / "reports/index.html").is_file() and (regression / "metrics/cleanup.json").is_file()


# ---------------------------------------------------------------- the registry


def test_names_are_derived_from_the_data_and_an_explicit_name_wins() -> None:
    data = DataConfig(path=Path("data/raw/My Table (v2).csv"), target="price $")
    assert served.registered_name(RefitConfig(), data) == "My_Table_v2_-price"
    assert served.registered_name(RefitConfig(registered_model_name="churn"), data) == "churn"
    odd = DataConfig(path=Path("data/raw/..a...csv"), target="..")
    assert served.registered_name(RefitConfig(), odd) == "a"
    with pytest.raises(HpopipeError, match=r"refit.registered_model_name: 'a/b' contains '/'"):
        parse_params({**yaml.safe_load(TINY_PARAMS), "refit": {"registered_model_name": "a/b"}})


def test_each_table_registers_under_its_own_name_with_tags_and_a_champion(
    classification: Path, regression: Path, store: str
) -> None:
    registry = client(store)
    for root, name in ((classification, CLASSIFIER), (regression, REGRESSOR)):
        assert registry.get_registered_model(name).aliases == {"champion": 1}
        version = registry.get_model_version(name, "1")
        schema = artifacts.read_json(root / artifacts.SCHEMA)
        train = artifacts.read_frame(root / artifacts.TRAIN)
        test = json.loads((root / "metrics/test.json").read_text())
        assert version.tags["study"] == json.loads((root / "metrics/hpo.json").read_text())["study"]
        assert version.tags["data_fingerprint"] == data_fingerprint(train, schema)
        assert version.tags["git_commit"] == "unknown"  # these projects are no git checkouts
        assert version.tags["task"] == schema["task"]
        metrics = {k: float(v) for k, v in version.tags.items() if k.startswith("test_")}
        assert metrics == pytest.approx(
            {f"test_{k}": v for k, v in test.items() if k != "baselines"}, rel=1e-5
        )


def test_the_model_is_plain_files_raw_columns_and_no_pickle(classification: Path, store: str) -> None:
    with _use_tracking_uri(store):
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{CLASSIFIER}@champion"))
    assert not [p for p in local.rglob("*") if p.suffix in {".pkl", ".pickle"}]
    assert (local / "code/hpopipe/refit.py").is_file() and (local / "model_code.py").is_file()
    state = torch.load(local / "artifacts/weights.pt", weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    schema = json.loads((local / "artifacts/schema.json").read_text())
    assert schema == artifacts.read_json(classification / artifacts.SCHEMA)
    info = mlflow.models.Model.load(str(local))
    assert info.signature is not None
    inputs = info.signature.inputs.to_dict()
    assert [c["name"] for c in inputs] == schema["input_columns"]
    assert {c["type"] for c in inputs} == {"double"}
    outputs = [c["name"] for c in info.signature.outputs.to_dict()]
    assert outputs == ["prediction", "proba_benign", "proba_malignant"]
    example = json.loads((local / "input_example.json").read_text())
    assert example["columns"] == schema["input_columns"] and len(example["data"]) == served.EXAMPLE_ROWS


@pytest.mark.parametrize("which", ["classification", "regression"])
def test_loaded_by_alias_it_predicts_what_hpopipe_predict_writes(
    which: str, request: pytest.FixtureRequest, store: str, tmp_path: Path
) -> None:
    root: Path = request.getfixturevalue(which)
    name = CLASSIFIER if which == "classification" else REGRESSOR
    rows = raw_rows(root, 12)
    with _use_tracking_uri(store):
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    got = model.predict(rows)
    pd.testing.assert_frame_equal(got, hpopipe_predict(root, rows, tmp_path), check_exact=True)


# ---------------------------------------------------------------- `mlflow models serve`


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(uri: str, store: str, log: Path) -> Iterator[str]:
    """``mlflow models serve`` of ``uri`` on a loopback port, with this environment; its base URL."""
    port = free_port()
    cmd = [
        "mlflow",
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    env = subprocess_env(MLFLOW_TRACKING_URI=store)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} never answered /ping:\n{log.read_text()[-3000:]}")


def invoke(url: str, rows: pd.DataFrame) -> pd.DataFrame:
    # pandas writes NaN as null: a missing value travels as JSON allows.
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
    request = urllib.request.Request(
        f"{url}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return pd.DataFrame(json.loads(response.read())["predictions"])


def test_mlflow_models_serve_answers_with_hpopipe_predicts_numbers(
    classification: Path, regression: Path, store: str, tmp_path: Path
) -> None:
    projects = {CLASSIFIER: classification, REGRESSOR: regression}
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(serving(f"models:/{name}@champion", store, tmp_path / f"{name}.log"))
            for name in projects
        }
        deadline = time.monotonic() + 180  # both start at once: importing torch and MLflow is the slow part
        for name, url in urls.items():
            wait_ready(url, tmp_path / f"{name}.log", deadline)
        for name, root in projects.items():
            rows = raw_rows(root, 20)
            if name == REGRESSOR:
                assert rows.isna().any().any()  # penguins row 3 has no measurements: imputed, as by predict
            folder = tmp_path / name
            folder.mkdir()
            expected = hpopipe_predict(root, rows, folder)
            pd.testing.assert_frame_equal(invoke(urls[name], rows), expected, check_exact=True)


# ---------------------------------------------------------------- the retrain gate moves @champion


def refit_runner(root: Path, store: str) -> Callable[[str], StageOutcome]:
    """A retrain's stage runner: refit runs in-process (tracked), every other stage is cached."""

    def run(stage: str) -> StageOutcome:
        if stage != "refit":
            return StageOutcome(stage, "cached", 0.0, "cached")
        run_stages(root, store, ["refit"])
        return StageOutcome(stage, "ran", 0.0, "ran")

    return run


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, env=subprocess_env(), check=True, capture_output=True)


def test_the_retrain_gate_moves_champion_only_for_a_model_that_passes(
    classification: Path, store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Last in the module: it registers more versions of the classifier.
    root = classification
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("HPOPIPE_TRACKING", "on")  # the retrain reads the refit run's id from MLflow
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    git(root, "init", "-q")
    git(root, "add", "params.yaml", "dvc.yaml", "metrics")
    git(root, "commit", "-qm", "first model")
    registry = client(store)
    assert registry.get_registered_model(CLASSIFIER).aliases == {"champion": 1}
    # No commit by the retrain: the record to compare with is what this test commits.
    passed = retrain(
        root, RetrainOptions(push=False, commit=False, max_regression=0.5), refit_runner(root, store)
    )
    assert passed.gate.passed and passed.champion == f"{CLASSIFIER}@2"
    assert registry.get_registered_model(CLASSIFIER).aliases == {"champion": 2}
    # A perfect model on record: whatever refit trains now regresses beyond a zero threshold.
    (root / "metrics/test.json").write_text(json.dumps({"accuracy": 1.0, "macro_f1": 1.0}))
    git(root, "commit", "-qam", "a perfect model was recorded")
    failed = retrain(
        root, RetrainOptions(push=False, commit=False, max_regression=0.0), refit_runner(root, store)
    )
    assert not failed.gate.passed and failed.champion is None
    assert [v.version for v in registry.search_model_versions(f"name = '{CLASSIFIER}'")] == [3, 2, 1]
    assert registry.get_registered_model(CLASSIFIER).aliases == {"champion": 2}
