"""hpopipe: reproducible hyperparameter optimisation for PyTorch as a DVC pipeline."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The public Python API, imported on first use: a stage that imports ``hpopipe.<module>`` runs
# this file, and must not load DVC and the retrain wing with it (nor list them as DVC deps).
_LAZY = {
    "run": "hpopipe.api",
    "best_config": "hpopipe.api",
    "RunResult": "hpopipe.api",
}

__all__ = ["RunResult", "__version__", "best_config", "run"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hpopipe' has no attribute {name!r}")
