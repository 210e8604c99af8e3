"""hpopipe: reproducible hyperparameter optimisation for PyTorch as a DVC pipeline.

The public Python API is loaded on first use (module ``__getattr__``), so ``import hpopipe``
stays cheap: no Optuna, torch or MLflow until a name below is touched.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "connect": "hpopipe.sweep.external",
    "Sweep": "hpopipe.sweep.external",
    "Trial": "hpopipe.sweep.external",
    "SweepStopped": "hpopipe.errors",
    "consumes": "hpopipe.consumption",
}

__all__ = ["Sweep", "SweepStopped", "Trial", "__version__", "connect", "consumes"]

if TYPE_CHECKING:
    from hpopipe.consumption import consumes
    from hpopipe.errors import SweepStopped
    from hpopipe.sweep.external import Sweep, Trial, connect


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once: later look-ups skip this function
        return value
    raise AttributeError(f"module 'hpopipe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
