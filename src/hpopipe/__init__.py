"""hpopipe: reproducible hyperparameter optimisation for PyTorch as a DVC pipeline.

The public Python API is loaded on first use (module ``__getattr__``), so ``import hpopipe``
stays cheap: no Optuna, torch, MLflow or DVC until a name below is touched. A stage that imports
``hpopipe.<module>`` runs this file, and must not load (nor list as DVC deps) the API's modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_LAZY = {
    "run": "hpopipe.api",
    "best_config": "hpopipe.api",
    "RunResult": "hpopipe.api",
    "connect": "hpopipe.sweep.external",
    "Sweep": "hpopipe.sweep.external",
    "Trial": "hpopipe.sweep.external",
    "SweepStopped": "hpopipe.errors",
    "consumes": "hpopipe.consumption",
}

__all__ = [
    "RunResult",
    "Sweep",
    "SweepStopped",
    "Trial",
    "__version__",
    "best_config",
    "connect",
    "consumes",
    "run",
]

if TYPE_CHECKING:
    from hpopipe.api import RunResult, best_config, run
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
