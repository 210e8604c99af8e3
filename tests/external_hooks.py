"""An ``hpo.callbacks`` hook for tests/test_external.py: hold a process until a second one has a trial.

The example's trials take milliseconds; without this, the first process could spend the whole
budget before the second has imported torch, and the test would not show two processes sharing it.
"""

from __future__ import annotations

import time

import optuna
from optuna.trial import FrozenTrial


def until_two_workers(study: optuna.Study, trial: FrozenTrial) -> None:
    """Wait (at most two minutes) until trials of two different processes are in the study."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        owners = {t.user_attrs.get("worker") for t in study.get_trials(deepcopy=False)}
        if len(owners - {None}) >= 2:
            return
        time.sleep(0.2)
