"""Model families, the one training loop that sweep, CV and refit share, and its checkpoints."""
