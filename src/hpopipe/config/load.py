"""The one reader of params.yaml: YAML checks, then the schema, every failure one line naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from hpopipe.config.messages import one_line
from hpopipe.config.schema import Params, SweepParams
from hpopipe.config.storage_url import SECRET_IN_PARAMS, find_literal_secret
from hpopipe.config.yaml_checks import read_yaml
from hpopipe.errors import HpopipeError

_P = TypeVar("_P", bound=SweepParams)
# A section only the pipeline has: a file with one is a whole params.yaml, validated as one.
PIPELINE_KEYS = ("data", "model", "cv", "refit", "cleanup", "retrain")


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping; raise HpopipeError naming the key."""
    return _validate(Params, raw, source)


def _validate(model: type[_P], raw: Any, source: str) -> _P:
    if not isinstance(raw, dict):
        raise HpopipeError(f"{source}: expected a mapping at the top level")
    secret_at = find_literal_secret(raw)  # before anything else: no other message may quote it
    if secret_at is not None:
        raise HpopipeError(f"{source}: {secret_at}: {SECRET_IN_PARAMS}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise HpopipeError(one_line(err, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (safe_load only: no arbitrary objects)."""
    path = Path(path)
    return parse_params(read_yaml(path), str(path))


def load_sweep_params(path: str | Path = "params.yaml") -> SweepParams:
    """Read the params of a sweep that external training code joins (:func:`hpopipe.connect`).

    A file with the pipeline's sections is a whole ``params.yaml`` and validated as :class:`Params`
    (so the study is the hpo stage's); one with only ``seed``, ``search_space``, ``hpo`` and
    ``train`` is a :class:`SweepParams`.
    """
    path = Path(path)
    raw = read_yaml(path)
    whole = isinstance(raw, dict) and any(key in raw for key in PIPELINE_KEYS)
    return _validate(Params if whole else SweepParams, raw, str(path))
