"""User code named in params.yaml as ``"package.module:function"`` (model factories, sweep hooks)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hpopipe.errors import HpopipeError


def load_callable(ref: str, field: str) -> Callable[..., Any]:
    """Import ``package.module:function``; a failure is an error naming the params key."""
    module_name, _, func_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise HpopipeError(f"{field}: cannot import {module_name!r} ({err})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise HpopipeError(f"{field}: {module_name!r} has no function {func_name!r}")
    return func
