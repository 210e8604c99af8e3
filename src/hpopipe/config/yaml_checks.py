"""Reading params.yaml as YAML: plain values only, no duplicate key, errors that name the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpopipe.errors import HpopipeError

# params.yaml is a page of settings: a real one is a few KB and nests about five levels deep.
# Past these limits it is a mistake or an attack: PyYAML composes recursively (5,000 levels
# is a RecursionError) and validating megabytes takes minutes.
MAX_BYTES = 1_000_000
MAX_DEPTH = 32


def read_yaml(path: Path) -> Any:
    """The parsed document at ``path`` (safe_load only: no arbitrary objects), or HpopipeError naming it."""
    try:
        with path.open("rb") as handle:  # read no more than the limit, even from an endless file
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise HpopipeError(
                f"{path}: more than {MAX_BYTES:,} bytes, the most a params file may hold "
                "(data belongs in data/, not in params)"
            )
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise HpopipeError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise HpopipeError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise HpopipeError(f"{path}: cannot read ({err.strerror})") from None
    try:
        _check_depth(text, path)
        _check_nodes(yaml.compose(text, Loader=yaml.SafeLoader), path)
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HpopipeError(f"{path}: not valid YAML{where}") from None


def _check_depth(text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH, from the parser's event stream (which does not recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark is not None else "?"
                raise HpopipeError(
                    f"{path}: nested more than {MAX_DEPTH} levels deep at line {line} "
                    "(params are a few levels)"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


# Tags safe_load can build; anything else (``!!python/object``, ``!custom``) is refused by name.
_SAFE_TAGS = frozenset(tag for tag in yaml.SafeLoader.yaml_constructors if tag is not None)
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(root: yaml.Node | None, path: Path) -> None:
    """Refuse duplicate keys and unsafe tags, naming the key and the line.

    safe_load keeps the last of two equal keys without a word, so a search-space
    entry written twice (say with another distribution) would silently lose one.
    Walked on the composed tree, before anything is constructed; aliases are
    visited once, so an alias bomb costs nothing.
    """
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        line = node.start_mark.line + 1
        label = where or "(top level)"
        if node.tag not in _SAFE_TAGS and node.tag != _MERGE_TAG:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise HpopipeError(f"{path}: {label}: tag {tag!r} at line {line} is refused (plain values only)")
        if isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.MappingNode):
            stack += _mapping_children(node, where, path)


def _mapping_children(node: yaml.MappingNode, where: str, path: Path) -> list[tuple[yaml.Node, str]]:
    first: dict[tuple[str, str], int] = {}
    children: list[tuple[yaml.Node, str]] = []
    for key, value in node.value:
        name = str(key.value) if isinstance(key, yaml.ScalarNode) else f"<{key.tag}>"
        dotted = f"{where}.{name}" if where else name
        ident = (key.tag, name)  # 1 and "1" are different keys
        if key.tag != _MERGE_TAG and ident in first:
            raise HpopipeError(
                f"{path}: {dotted}: duplicate key at line {key.start_mark.line + 1} "
                f"(first at line {first[ident]}); YAML would silently keep only the last"
            )
        first.setdefault(ident, key.start_mark.line + 1)
        children += [(key, dotted), (value, dotted)]
    return children
