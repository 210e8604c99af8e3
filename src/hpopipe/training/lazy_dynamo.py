"""Keep ``torch._dynamo`` (torch.compile's tracer) out of eager training until something compiles.

Why: every optimiser ``step()`` runs ``import torch._dynamo; torch._dynamo.graph_break()``, and the
first ``Optimizer(...)``/``zero_grad()``/``state_dict()`` call ``torch._dynamo.disable(fn)``. Outside
torch.compile both are no-ops, but the import costs ~2 s of CPU in every process that trains: the
hpo, cv and refit stages, each sweep worker and each CV pool process (profiled: a third of the refit
stage). Plain eager training never needs the tracer.

:func:`defer` puts a stand-in module at ``torch._dynamo`` that answers those two calls as eager mode
would (``graph_break``: nothing; ``disable(fn)``: ``fn``) and loads the real module, for good, the
first time anything else is asked of it: ``torch.compile`` in a user's model factory, say, works
as before (tests/test_train.py compiles after training). What that leaves: an optimiser method
whose first call came before the real load keeps running undisabled if later called inside a
compiled region, which torch only does for optimisers it compiles itself (``torch.compile`` of a
function that calls ``optimizer.step()``); such users should compile before they train.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

import torch

NAME = "torch._dynamo"


class _Deferred(types.ModuleType):
    """The stand-in: eager answers to what optimisers ask, the real module for anything else."""

    def graph_break(self, msg: str = "") -> None:
        """Eager mode has no graph to break."""

    def disable(self, fn: Callable[..., Any] | None = None, recursive: bool = True, **_: Any) -> Any:
        """Eager mode traces nothing, so there is nothing to disable: the function itself."""
        return fn if fn is not None else (lambda f: f)

    def __getattr__(self, name: str) -> Any:
        return getattr(load_real(), name)


def defer() -> None:
    """Install the stand-in, unless the real module is already loaded (then nothing changes)."""
    if NAME in sys.modules:
        return
    stand_in = _Deferred(NAME)
    sys.modules[NAME] = stand_in
    torch._dynamo = stand_in  # torch's lazy __getattr__ would import it


def load_real() -> types.ModuleType:
    """The real ``torch._dynamo``, imported now if the stand-in was in its place."""
    if isinstance(sys.modules.get(NAME), _Deferred):
        del sys.modules[NAME]
    __import__(NAME)
    real = sys.modules[NAME]
    torch._dynamo = real
    return real


def deferred() -> bool:
    """Whether the stand-in is still in place (the real tracer was never needed)."""
    return isinstance(sys.modules.get(NAME), _Deferred)
