"""hpopipe: reproducible hyperparameter optimisation for PyTorch as a DVC pipeline."""

__version__ = "0.1.0"
