"""The Optuna sweep: study identity and storage, objective, workers, lifecycle, recovery, exports."""
