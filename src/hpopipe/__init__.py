"""hpopipe: reproducible hyperparameter optimisation for PyTorch as a DVC pipeline."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "consumes"]


def __getattr__(name: str) -> Any:
    # Lazily: `import hpopipe` stays cheap for the CLI and the stages.
    if name == "consumes":
        from hpopipe.consumption import consumes

        return consumes
    raise AttributeError(f"module 'hpopipe' has no attribute {name!r}")
