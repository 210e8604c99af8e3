"""Fail when the committed dvc.lock does not match the committed code, data and params.

Run in a fresh clone (CI does, before the tests): the pipeline's outputs are not there, so
DVC reports them missing, and a dep that another stage produces is missing too; everything
else a stage depends on is in git and must hash as dvc.lock says. A stale dvc.lock would make
a user's first `dvc repro` re-run every stage and leave dvc.lock modified.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def produced(dvc_yaml: Path) -> set[str]:
    """Every path a stage writes (outs, metrics, plots)."""
    paths: set[str] = set()
    for stage in yaml.safe_load(dvc_yaml.read_text())["stages"].values():
        for key in ("outs", "metrics", "plots"):
            paths |= {e if isinstance(e, str) else next(iter(e)) for e in stage.get(key, [])}
    return paths


def problems(status: dict[str, Any], outputs: set[str]) -> list[str]:
    """What in ``dvc status --json`` says the lock is stale (missing outputs are fine)."""
    found = []
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed"
                found.append(f"{stage}: {entry}")
                continue
            for kind, changes in entry.items():
                if kind == "changed outs":
                    continue
                if kind != "changed deps":
                    found.append(f"{stage}: {kind} {changes}")
                    continue
                found += [
                    f"{stage}: dep {path} {state}"
                    for path, state in changes.items()
                    if not (state == "deleted" and path in outputs)
                ]
    return found


def main() -> int:
    proc = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True, check=True)
    found = problems(json.loads(proc.stdout or "{}"), produced(Path("dvc.yaml")))
    for line in found:
        print(f"dvc.lock is stale: {line}", file=sys.stderr)
    if found:
        print("run `dvc repro` and commit dvc.lock with the code that produced it", file=sys.stderr)
        return 1
    print("dvc.lock matches the committed code, data and params")
    return 0


if __name__ == "__main__":
    sys.exit(main())
