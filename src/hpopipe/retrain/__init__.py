"""Retraining: the DVC stages run in order, the quality gate, publishing and the run summary."""
