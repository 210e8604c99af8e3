"""Parameter overrides of one retrain, written into ``params.yaml`` with DVC's ``--set-param`` code.

The overrides are applied before the stages run and committed together with ``dvc.lock`` and
the metrics, so the commit holds the values the model was trained with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hpopipe.config import load_params
from hpopipe.errors import HpopipeError
from hpopipe.retrain.commands import AnyLogger

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"


def override_list(
    n_trials: int | None = None, max_epochs: int | None = None, extra: Sequence[str] = ()
) -> list[str]:
    """Flow/CLI shortcuts as ``dvc exp run --set-param`` strings (``++`` adds a key left to defaults)."""
    shortcuts = {"hpo.n_trials": n_trials, "train.max_epochs": max_epochs}
    return [f"++{key}={value}" for key, value in shortcuts.items() if value is not None] + list(extra)


def apply_overrides(root: Path, overrides: Sequence[str], logger: AnyLogger = log) -> None:
    """Write ``overrides`` into params.yaml, the way ``dvc exp run --set-param`` does.

    Editing the file (instead of passing values past it) is what keeps ``dvc.lock`` honest: DVC
    records the values the stages actually read, and the retrain commit holds the edited
    params.yaml next to that lock file. The result is validated like any params.yaml; on an
    error the file is left as it was.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    path = root / PARAMS_FILE
    original = path.read_bytes()
    try:
        dvc_apply_overrides(path, list(overrides))
        load_params(path)
    except InvalidArgumentError as err:
        path.write_bytes(original)
        cause = str(err.__cause__ or err).splitlines()[0]
        raise HpopipeError(f"{PARAMS_FILE}: cannot apply --set {' '.join(overrides)}: {cause}") from None
    except HpopipeError:
        path.write_bytes(original)
        raise
    logger.info("%s: applied %s (committed with the results)", PARAMS_FILE, ", ".join(overrides))
