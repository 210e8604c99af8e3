"""Rewrite each dvc.yaml stage's ``src/hpopipe/...`` deps from the stage module's import closure.

Run after adding or moving a library import (``make deps``); tests/test_contract.py
fails until the deps match.
"""

import re
from pathlib import Path

from importgraph import closure as library_closure

STAGE = re.compile(r"^  (\w+):$")
LIB_DEP = re.compile(r"^      - src/hpopipe/")


def regenerate(text: str) -> str:
    """dvc.yaml text with every stage's block of library deps recomputed."""
    lines, out, stage, i = text.splitlines(), [], None, 0
    while i < len(lines):
        if match := STAGE.match(lines[i]):
            stage = match.group(1)
        if LIB_DEP.match(lines[i]):
            while i < len(lines) and LIB_DEP.match(lines[i]):
                i += 1
            out += [f"      - {m}" for m in sorted(library_closure(Path("stages") / f"{stage}.py"))]
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = Path("dvc.yaml")
    path.write_text(regenerate(path.read_text()))
