"""Stages and workers import with no garbage collection, then run with it (import_without_collection)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

AS_ENTRY = textwrap.dedent(
    """
    import sys
    sys.argv[:] = ["-m"]  # what python -m stages.<name> shows while it imports the package
    import gc
    import {package}
    print("importing:", gc.isenabled())

    from hpopipe.entry import run

    def main():
        print("running:", gc.isenabled(), flush=True)

    run(main)  # main lives in __main__, as a stage's does
    """
)


def _python(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


@pytest.mark.parametrize("package", ["stages", "hpopipe.sweep"])
def test_an_entry_point_imports_without_collection_and_runs_with_it(package: str) -> None:
    assert _python(AS_ENTRY.format(package=package)) == ["importing: False", "running: True"]


@pytest.mark.parametrize("package", ["stages", "hpopipe.sweep", "hpopipe.cli"])
def test_importing_them_any_other_way_leaves_the_collector_alone(package: str) -> None:
    assert _python(f"import gc, {package}; print(gc.isenabled())") == ["True"]


LATE = textwrap.dedent(
    """
    import gc
    from hpopipe.entry import late_imports, run

    def main():
        with late_imports():
            print("late:", gc.isenabled())
        print("after:", gc.isenabled(), flush=True)

    {how}
    """
)


def test_imports_a_stage_makes_once_started_are_made_without_collection_too() -> None:
    # The hpo stage starts its local workers first, then imports the sweep.
    assert _python(LATE.format(how="run(main)")) == ["late: False", "after: True"]
    # Called from an importer (a test, a zygote): the collector is left alone.
    main_elsewhere = "main.__module__ = 'stages.hpo'; run(main)"
    assert _python(LATE.format(how=main_elsewhere)) == ["late: True", "after: True"]
