"""The one reader of params.yaml: YAML checks, then the schema, every failure one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hpopipe.config.messages import one_line
from hpopipe.config.schema import Params
from hpopipe.config.storage_url import SECRET_IN_PARAMS, find_literal_secret
from hpopipe.config.yaml_checks import read_yaml
from hpopipe.errors import HpopipeError


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping; raise HpopipeError naming the key."""
    if not isinstance(raw, dict):
        raise HpopipeError(f"{source}: expected a mapping at the top level")
    secret_at = find_literal_secret(raw)  # before anything else: no other message may quote it
    if secret_at is not None:
        raise HpopipeError(f"{source}: {secret_at}: {SECRET_IN_PARAMS}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise HpopipeError(one_line(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (safe_load only: no arbitrary objects)."""
    path = Path(path)
    return parse_params(read_yaml(path), str(path))
