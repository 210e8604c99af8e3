"""The ``hpopipe`` command: one parser tree (main, sweep, retrain, space, deploy)."""
