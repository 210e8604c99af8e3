"""Untracked state in a DVC experiment's copy resolves to the workspace; one run at a time grows a study.

The copies are laid out as DVC lays them out (``<workspace>/.dvc/tmp/exps/.../<copy>/.dvc``, with
``DVC_ROOT`` naming the workspace); tests/test_experiments_dvc.py runs the real ``dvc exp run``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from hpopipe import workspace
from hpopipe.errors import HpopipeError
from hpopipe.sweep.storage import resolve, sweep_lock
from hpopipe.tracking import MlflowTracker, default_tracking_uri
from hpopipe.training import checkpoints


def make_copy(ws: Path, *parts: str) -> Path:
    """A workspace and an experiment copy of it at ``.dvc/tmp/exps/<parts>`` (each has a ``.dvc``)."""
    (ws / ".dvc").mkdir(parents=True, exist_ok=True)
    copy = ws.joinpath(".dvc/tmp/exps", *parts)
    (copy / ".dvc").mkdir(parents=True)
    return copy


@pytest.fixture
def in_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(workspace, copy): the process runs in a queued experiment's copy, as DVC's executor runs a stage."""
    ws = tmp_path / "ws"
    copy = make_copy(ws, "tmpabc123")
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(ws))
    yield ws.resolve(), copy.resolve()


def test_outside_a_copy_the_workspace_is_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert workspace.root() == tmp_path.resolve() and not workspace.in_copy()
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # plain `dvc repro` and workspace `dvc exp run`
    assert workspace.root() == tmp_path.resolve()
    assert workspace.state_path(Path("artifacts/hpo")) == Path("artifacts/hpo")  # unchanged, relative


def test_a_dvc_root_inherited_from_elsewhere_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    make_copy(other, "tmpx")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(other))
    assert workspace.root() == tmp_path.resolve()


def test_in_a_temp_or_queued_copy_state_resolves_to_the_workspace(in_copy: tuple[Path, Path]) -> None:
    ws, copy = in_copy
    assert workspace.in_copy() and workspace.root() == ws
    assert workspace.state_path(Path(".hpopipe/checkpoints")) == ws / ".hpopipe/checkpoints"
    assert workspace.state_path(Path("/elsewhere/x")) == Path("/elsewhere/x")  # the user's own choice
    for setting, name in (("sqlite", "study.db"), ("journal", "study.journal")):
        assert resolve(setting).path == ws / "artifacts/hpo" / name
    assert checkpoints.trial_checkpoint(Path(".hpopipe/checkpoints"), "mlp-1", "ab") == (
        ws / ".hpopipe/checkpoints/mlp-1/ab.pt"
    )
    folder = checkpoints.study_folder(Path(".hpopipe/checkpoints"), "mlp-1")
    assert folder == ws / ".hpopipe/checkpoints/mlp-1"
    assert default_tracking_uri() == f"sqlite:///{ws}/mlflow.db"
    assert not (copy / "artifacts").exists()


def test_a_stage_in_a_subfolder_of_a_copy_maps_to_the_same_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc exp run --temp` copies live in `exps/standalone/`; a stage's wdir may be a subfolder."""
    ws = tmp_path / "ws"
    copy = make_copy(ws, "standalone", "tmpq")
    (copy / "sub").mkdir()
    monkeypatch.chdir(copy / "sub")
    monkeypatch.setenv("DVC_ROOT", str(ws))
    assert workspace.root() == ws.resolve() / "sub"


def test_default_mlflow_store_and_artifacts_outlive_the_copy(
    in_copy: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, copy = in_copy
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "quiet-lark")
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # an earlier test in this process may have set it
    try:
        tracker = MlflowTracker("exp-test")
        with tracker.run("hpo"):
            pass
        client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{ws}/mlflow.db")
        experiment = client.get_experiment_by_name("exp-test")
        assert experiment is not None and experiment.artifact_location == str(ws / "mlruns/exp-test")
        (run,) = client.search_runs([experiment.experiment_id])
        assert run.data.tags["hpopipe.dvc_exp"] == "quiet-lark" and run.info.status == "FINISHED"
        assert not list(copy.glob("mlflow.db*")) and not (copy / "mlruns").exists()
    finally:
        # MLflow keeps the URI in a global and in the environment: None unsets both.
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- the sweep lock


def test_a_second_run_waits_for_the_sweep_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = resolve("sqlite", tmp_path)
    order: list[str] = []
    held = threading.Event()

    def first() -> None:
        with sweep_lock(spec, "mlp-1"):
            held.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    held.wait(10)
    with caplog.at_level("INFO", logger="hpopipe.sweep.storage"), sweep_lock(spec, "mlp-2"):
        order.append("second in")  # the whole SQLite file is locked, every study in it
    thread.join()
    assert order == ["first done", "second in"]
    assert "another run holds it (pid" in caplog.text


def test_a_stop_while_waiting_gives_up_in_one_line(tmp_path: Path) -> None:
    spec = resolve("journal", tmp_path)
    started = time.monotonic()
    message = r"^study mlp-1: stopped while waiting for the run that holds it$"
    with (
        sweep_lock(spec, "mlp-1"),
        pytest.raises(HpopipeError, match=message),
        sweep_lock(spec, "mlp-1", stop=lambda: time.monotonic() - started > 0.3),
    ):
        pass


def test_postgresql_sweep_lock_is_per_study(postgres_url: str) -> None:
    spec = resolve(postgres_url)
    started = time.monotonic()
    with sweep_lock(spec, "mlp-1"):
        with sweep_lock(spec, "mlp-2"):  # another study: no wait
            pass
        with (
            pytest.raises(HpopipeError, match="stopped while waiting"),
            sweep_lock(spec, "mlp-1", stop=lambda: time.monotonic() - started > 0.3),
        ):
            pass
    with sweep_lock(spec, "mlp-1"):  # released
        pass
