"""User code named in params.yaml as ``"package.module:function"`` (model factories, sweep hooks).

Naming code is running code: importing a module runs it (``this`` prints a poem, a module of
one's own may do anything). So a reference may name only the user's own code, never Python's
standard library (``builtins:eval``, ``os:system``), and is checked by name before any import;
after the import it must be a callable defined in Python, not a C builtin re-exported by a
third-party package.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any

from hpopipe.errors import HpopipeError


def ref_problem(ref: str) -> str | None:
    """Why ``ref`` may not be imported (it names the standard library), or None; no import happens."""
    module_name = ref.partition(":")[0]
    top = module_name.split(".", 1)[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return (
            f"{ref!r} names Python's standard library ({top}); "
            "name a function of your own package, e.g. 'mypkg.models:build'"
        )
    if ref.partition(":")[2].startswith("_"):
        return f"{ref!r} names a private attribute; name a public function"
    return None


def load_callable(ref: str, field: str) -> Callable[..., Any]:
    """Import ``package.module:function``; a failure is an error naming the params key."""
    problem = ref_problem(ref)
    if problem is not None:
        raise HpopipeError(f"{field}: {problem}")
    module_name, _, func_name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise HpopipeError(f"{field}: cannot import {module_name!r} ({err})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise HpopipeError(f"{field}: {module_name!r} has no function {func_name!r}")
    if inspect.isbuiltin(func):
        raise HpopipeError(f"{field}: {ref!r} is a builtin ({func.__name__}), not a function of your own")
    return func
