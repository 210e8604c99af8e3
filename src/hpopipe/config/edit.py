"""Writing sections into params.yaml the way a person would: every comment and other key kept.

``hpopipe space import`` replaces ``search_space`` and sets a few ``hpo`` keys; the rest of the
file is the user's, comments and layout included. ruamel.yaml's round-trip mode (DVC's own YAML
library, so no new install) loads the file with its comments and writes back only what changed:
every other line comes back byte for byte (tests/test_space_import.py), ``null`` included. The
result is validated before it replaces the file, atomically.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from hpopipe.atomic import atomic_write_text
from hpopipe.config.load import load_params, parse_params
from hpopipe.config.schema import Params

# Where a key that params.yaml lacks goes: after the last of these that it has.
_HPO_ORDER = ("n_trials", "timeout", "metric", "sampler", "pruner")


def _round_trip_yaml() -> YAML:
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096  # never fold a long line the user wrote on one
    # ruamel writes None as an empty value; params.yaml says `null`.
    rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return rt


def _flow(value: Any) -> Any:
    """A mapping as one ``{key: value}`` line, as params.yaml writes search-space entries."""
    if not isinstance(value, dict):
        return value
    out = CommentedMap((key, _flow(item)) for key, item in value.items())
    out.fa.set_flow_style()
    return out


def write_sections(
    path: Path,
    search_space: dict[str, dict[str, Any]],
    hpo: dict[str, Any],
    *,
    drop_hpo: Iterable[str] = (),
    source: str,
) -> Params:
    """Replace ``search_space`` and set (or drop) ``hpo`` keys in params.yaml; return the result.

    Args:
        path: params.yaml. It must be valid as it is, so that its own errors name it.
        search_space: the new section, hpopipe's form, one flow-style line per parameter.
        hpo: ``hpo`` keys to set; keys not named here keep their values and comments.
        drop_hpo: ``hpo`` keys to remove.
        source: what the new values came from, named by any error in them (e.g. the sweep file).

    Raises:
        HpopipeError: params.yaml is invalid (naming it), or the new sections are (naming ``source``).
    """
    load_params(path)
    rt = _round_trip_yaml()
    doc = rt.load(path.read_text(encoding="utf-8"))
    doc["search_space"] = CommentedMap((name, _flow(spec)) for name, spec in search_space.items())
    section = doc["hpo"]
    for key in drop_hpo:
        section.pop(key, None)
    for key, value in hpo.items():
        if key in section:
            section[key] = _flow(value)  # the key's own comment stays
        else:
            section.insert(_position(section, key), key, _flow(value))
    out = io.StringIO()
    rt.dump(doc, out)
    text = out.getvalue()
    params = parse_params(yaml.safe_load(text), source=f"{source} (imported into {path})")
    atomic_write_text(path, text)
    return params


def _position(section: CommentedMap, key: str) -> int:
    keys = list(section)
    before = _HPO_ORDER[: _HPO_ORDER.index(key)] if key in _HPO_ORDER else _HPO_ORDER
    present = [keys.index(k) for k in before if k in keys]
    return max(present) + 1 if present else 0
