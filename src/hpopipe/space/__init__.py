"""The search space: suggestions from ``params.yaml`` and the W&B / AzureML / Optuna formats."""
