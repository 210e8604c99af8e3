"""Prefect flows around the DVC pipeline (thin: the logic is in ``hpopipe.retrain`` and ``hpopipe.sweep``)."""
