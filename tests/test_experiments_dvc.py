"""Real `dvc exp run` in a temporary git repo: workspace, --temp and queued experiments lose nothing.

An experiment that raises ``hpo.n_trials`` grows the workspace's study by exactly the difference
(a ``--temp`` or queued run works in a copy under ``.dvc/tmp/exps`` that DVC deletes afterwards),
its MLflow runs land in the workspace's ``mlflow.db``, and two queued experiments run with
``--jobs 2`` neither repeat nor lose a trial. MLflow uses its default store here (no
``MLFLOW_TRACKING_URI``), the case the copies used to lose.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from tests.conftest import TINY_PARAMS, dvc_repro, make_project, params_variant, subprocess_env
from tests.sweeps import study_storage

pytestmark = pytest.mark.slow

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Tiny: 2 trials of at most 3 epochs in the workspace, 2 candidates x 2 folds of CV.
PARAMS = params_variant(
    TINY_PARAMS, {"hpo.n_trials": 2, "train.max_epochs": 3, "cv.top_k": 2, "refit.log_model": False}
)


def env() -> dict[str, str]:
    """Tracking on, to MLflow's default store: what a user gets without MLFLOW_TRACKING_URI."""
    environment = subprocess_env(HPOPIPE_TRACKING="on", HPOPIPE_LOG_LEVEL="INFO")
    environment.pop("MLFLOW_TRACKING_URI", None)
    return environment


def run(root: Path, *args: str) -> str:
    proc = subprocess.run(args, cwd=root, env=env(), capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A committed workspace whose study holds the first 2 trials."""
    root = make_project(tmp_path_factory.mktemp("exp"), PARAMS)
    ran, _ = dvc_repro(root, "hpo", env=env())
    assert ran == ["prepare", "hpo"]
    commit(root)
    return root


def commit(root: Path) -> None:
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "state")


def counted(root: Path) -> list[FrozenTrial]:
    """The workspace study's trials that count toward the budget, in order."""
    storage = study_storage(root)
    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=FINISHED)


def signature(trials: list[FrozenTrial]) -> list[tuple[int, str, Any]]:
    return [(t.number, json.dumps(t.params, sort_keys=True), t.values) for t in trials]


def assert_no_repeats(trials: list[FrozenTrial]) -> None:
    configurations = [json.dumps(t.params, sort_keys=True) for t in trials]
    assert len(set(configurations)) == len(configurations), configurations


def exp_file(root: Path, name: str, path: str) -> Any:
    """A git-tracked file (a metrics file) as the experiment ``name`` committed it."""
    refs = run(root, "git", "for-each-ref", "--format=%(refname)", "refs/exps").split()
    (ref,) = [r for r in refs if r.endswith(f"/{name}")]
    return json.loads(run(root, "git", "show", f"{ref}:{path}"))


def mlflow_runs(root: Path, experiment: str) -> list[Any]:
    """The runs in the workspace's mlflow.db tagged with DVC experiment ``experiment``."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    found = client.get_experiment_by_name("hpopipe")
    assert found is not None
    return client.search_runs(
        [found.experiment_id], filter_string=f"tags.`hpopipe.dvc_exp` = '{experiment}'", max_results=1000
    )


def assert_copies_gone(root: Path) -> None:
    exps = root / ".dvc/tmp/exps"
    assert not [p for p in exps.rglob("dvc.yaml")], "an experiment copy was left behind"


def test_workspace_and_temp_experiments_grow_the_workspace_study_by_exactly_n(project: Path) -> None:
    before = counted(project)
    n = len(before)
    run(project, "dvc", "exp", "run", "-S", f"hpo.n_trials={n + 1}", "-n", "in-place", "hpo")
    middle = counted(project)
    assert len(middle) == n + 1 and signature(middle[:n]) == signature(before)
    commit(project)  # the workspace now holds n + 1

    out = run(project, "dvc", "exp", "run", "--temp", "-S", f"hpo.n_trials={n + 3}", "-n", "temp", "hpo")
    assert f"{n + 1} finished trials, running up to 2 more" in out
    after = counted(project)
    assert len(after) == n + 3 and signature(after[: n + 1]) == signature(middle)
    assert [t.number for t in after] == list(range(n + 3))
    assert_no_repeats(after)
    assert exp_file(project, "temp", "metrics/hpo.json")["n_trials"] == n + 3
    names = sorted(r.info.run_name.split(" ")[0] for r in mlflow_runs(project, "temp"))  # "hpo <study>"
    assert names == sorted(["hpo", f"trial-{n + 1:04d}", f"trial-{n + 2:04d}"])  # in the workspace's store
    assert_copies_gone(project)


def test_two_queued_experiments_at_once_share_the_study_and_lose_nothing(project: Path) -> None:
    base = len(counted(project))
    small, large = base + 1, base + 3
    run(project, "dvc", "exp", "run", "--queue", "-S", f"hpo.n_trials={large}", "-n", "large", "cv")
    run(project, "dvc", "exp", "run", "--queue", "-S", f"hpo.n_trials={small}", "-n", "small", "cv")
    run(project, "dvc", "exp", "run", "--run-all", "--jobs", "2")
    status = run(project, "dvc", "queue", "status")
    assert status.count("Success") == 2, status

    trials = counted(project)
    assert len(trials) == large and [t.number for t in trials] == list(range(large))  # none lost or extra
    assert_no_repeats(trials)
    for name, n in (("small", small), ("large", large)):
        hpo = exp_file(project, name, "metrics/hpo.json")
        assert hpo["n_trials"] == n and hpo["complete"] + hpo["pruned"] == n  # the first n places only
        complete = [t for t in trials[:n] if t.state == TrialState.COMPLETE]
        assert hpo["best_value"] == max(t.values[0] for t in complete)
    # The same metric columns for both experiments (they were keyed by trial number).
    columns = {n: sorted(flatten(exp_file(project, n, "metrics/cv.json"))) for n in ("small", "large")}
    assert columns["small"] == columns["large"]
    assert {"ranks.1.trial", "ranks.1.mean", "ranks.2.trial", "ranks.2.mean"} <= set(columns["small"])

    trial_runs: list[str] = []
    for name in ("small", "large"):
        names = [r.info.run_name.split(" ")[0] for r in mlflow_runs(project, name)]  # "hpo <study>", ...
        assert {"hpo", "cv"} <= set(names)
        trial_runs += [n for n in names if n.startswith("trial-")]
    assert sorted(trial_runs) == sorted(f"trial-{i:04d}" for i in range(base, large))  # each trial once
    assert_copies_gone(project)


def flatten(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The column names `dvc exp show` makes of a metrics file."""
    out: list[str] = []
    for key, value in tree.items():
        out += flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
    return out
