"""A stage imports with the garbage collector off and runs with it on (stages/__init__.py, entry.run)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

AS_STAGE = textwrap.dedent(
    """
    import sys
    sys.argv[:] = ["-m"]  # what python -m stages.<name> shows while it imports the package
    import gc
    import stages
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


def test_a_stage_imports_without_collection_and_runs_with_it() -> None:
    assert _python(AS_STAGE) == ["importing: False", "running: True"]


def test_importing_the_stages_any_other_way_leaves_the_collector_alone() -> None:
    assert _python("import gc, stages; print(gc.isenabled())") == ["True"]
