"""The library's shape: no import cycle, one importer per heavy dependency, lean stages.

Read from the source with ``ast`` (tools/importgraph.py): nothing is imported, so a function-level
import counts like any other.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import importgraph  # noqa: E402

LIBRARY = REPO / "src" / "hpopipe"
# What the sweep and the steps after it must never depend on: a cosmetic edit there would mark them stale.
COSMETIC = ("hpopipe/sweep/status.py", "hpopipe/sweep/fanout.py", "hpopipe/report/", "hpopipe/cli/")


def _top_level_imports(path: Path) -> set[str]:
    """Every top-level package a file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _importers(package: str, root: Path = LIBRARY) -> set[str]:
    return {str(p.relative_to(REPO)) for p in root.rglob("*.py") if package in _top_level_imports(p)}


def test_the_library_has_no_import_cycle() -> None:
    assert importgraph.cycles(importgraph.graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check above must be able to fail: a hidden function-level import closes a loop.
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert importgraph.cycles(edges) == [["a", "b", "c"]]


def test_function_level_imports_count(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from hpopipe.sweep import runner\n    return runner\n")
    assert importgraph.direct_imports(module) == {"hpopipe.sweep.runner"}


def test_only_tracking_imports_mlflow() -> None:
    assert _importers("mlflow") == {"src/hpopipe/tracking.py"}


def test_only_the_fanout_imports_prefect_in_the_library() -> None:
    assert _importers("prefect") == {"src/hpopipe/sweep/fanout.py"}


def test_the_library_never_imports_the_flows_folder() -> None:
    assert _importers("flows") == set()
    # importlib serves two purposes: user code named in params.yaml ("package.module:function"), and
    # the package's public names loaded on first use (so neither `import hpopipe` nor a stage's DVC
    # deps pull in the ask/tell API or `hpopipe.run`: a function-level import would count as a
    # dependency).
    assert _importers("importlib") == {"src/hpopipe/plugins.py", "src/hpopipe/__init__.py"}


@pytest.mark.parametrize("stage", ["prepare", "hpo", "cv", "select", "refit", "cleanup"])
def test_pipeline_stages_do_not_import_status_fanout_report_or_cli(stage: str) -> None:
    closure = importgraph.closure(REPO / "stages" / f"{stage}.py")
    assert not [path for path in closure if any(part in path for part in COSMETIC)]


def test_workers_start_at_a_library_entry_point_not_the_cli() -> None:
    closure = {p for p in importgraph.closure(LIBRARY / "sweep" / "agent.py") if "/cli/" in p}
    assert closure == set()
    assert "hpopipe.cli" not in (LIBRARY / "sweep" / "workers.py").read_text()


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(REPO))
        for path in (REPO / "tests").glob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")
    }
    assert offenders == set()


def test_every_exception_class_lives_in_errors() -> None:
    elsewhere = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            bases = [
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                for b in getattr(node, "bases", [])
            ]
            if isinstance(node, ast.ClassDef) and any(b.endswith(("Error", "Exception")) for b in bases):
                elsewhere.append(f"{path.relative_to(REPO)}:{node.name}")
    assert [e for e in elsewhere if not e.startswith("src/hpopipe/errors.py")] == []


def _loaded_at_import(stage: str) -> set[str]:
    """The top-level packages importing ``stages.<stage>`` loads, in a fresh interpreter, tracking off."""
    import subprocess

    from tests.conftest import subprocess_env

    code = f"import sys, stages.{stage}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = subprocess_env(HPOPIPE_TRACKING="off")
    env["PYTHONPATH"] = f"{REPO}:{env['PYTHONPATH']}"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("stage", ["cleanup", "select", "report"])
def test_stages_that_train_nothing_start_without_torch(stage: str) -> None:
    """torch costs a second or more to import: the stages that never train must not pay it at start.

    (The report never loads it: it draws the refit's predictions from artifacts/refit/evaluation.json.)
    """
    assert "torch" not in _loaded_at_import(stage)


@pytest.mark.parametrize("stage", ["cleanup", "select"])
def test_stages_that_read_no_table_start_without_pandas(stage: str) -> None:
    """pandas (a fifth of a second) is imported by ``artifacts.read_frame``/``write_frame``, not by
    ``artifacts`` itself: select and cleanup read JSON and YAML only."""
    assert "pandas" not in _loaded_at_import(stage)


@pytest.mark.parametrize("stage", ["prepare", "hpo", "cv", "select", "refit", "report", "cleanup"])
def test_no_stage_loads_mlflow_at_import(stage: str) -> None:
    """MLflow (about a second) is loaded only once a tracker is made with tracking on."""
    assert "mlflow" not in _loaded_at_import(stage)
