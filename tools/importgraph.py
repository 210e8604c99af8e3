"""The library's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` counts, at module level or inside a function: a function-level import
still runs the imported module's code, so it is a dependency all the same. Used by
``make deps`` (tools/regen_deps.py), the DVC contract test and the import-cycle test.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def module_file(module: str) -> Path | None:
    """The file that defines ``module`` (``pkg/__init__.py`` for a package), or None."""
    base = SRC / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parents(module: str) -> list[str]:
    """``hpopipe.sweep.study`` -> ``hpopipe``, ``hpopipe.sweep``: packages Python runs first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def direct_imports(path: Path) -> set[str]:
    """The ``hpopipe`` modules a file imports (a name imported from a package counts as its module)."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "hpopipe" and not node.module.startswith("hpopipe."):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if module_file(sub) is not None else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "hpopipe" or a.name.startswith("hpopipe.")}
    return {m for m in found if module_file(m) is not None}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``: imports there never run."""
    nodes: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo += node.orelse
            continue
        todo += list(ast.iter_child_nodes(node))
    return nodes


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def graph() -> dict[str, set[str]]:
    """Every library module and the library modules it imports (parents of a package included)."""
    edges: dict[str, set[str]] = {}
    for file in sorted((SRC / "hpopipe").rglob("*.py")):
        rel = file.relative_to(SRC).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        module = ".".join(parts)
        edges[module] = {m for m in direct_imports(file) if m != module}
    return edges


def closure(script: Path) -> set[str]:
    """Every library file a script runs when imported, as repo-relative paths."""
    seen: set[str] = set()
    todo = list(direct_imports(script))
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        file = module_file(module)
        assert file is not None
        todo += [*direct_imports(file), *_parents(module)]
    return {str(module_file(m).relative_to(REPO)) for m in seen}  # type: ignore[union-attr]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, ()):
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found
