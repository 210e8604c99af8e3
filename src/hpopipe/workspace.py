"""Where persistent, untracked state lives: the workspace a stage was started from.

``dvc exp run --temp`` and queued experiments (``dvc exp run --queue``, then ``--run-all``)
run every stage in a fresh copy of the repository under ``<workspace>/.dvc/tmp/exps/``, and
DVC deletes that copy when the experiment ends. The state that is *not* a DVC output must
outlive it and be the workspace's own: the Optuna study (an experiment that raises
``hpo.n_trials`` grows the workspace's study, it does not start one from zero), the trial
checkpoints, and MLflow's default store. DVC tells each stage where the experiment came from:
its executor sets ``DVC_ROOT`` to the originating repository's root (``dvc/repo/experiments/
queue/base.py``; a plain ``dvc repro`` sets it to the repository it runs in).

This module is the one answer to "where is the workspace": the study storage, the checkpoint
folder, ``hpo.backup_dir`` and MLflow's default store all resolve their relative paths here.
Outside an experiment copy (the workspace itself, ``dvc exp run`` without ``--temp``, a stage
run by hand, ``hpopipe`` commands) the answer is the current directory, so paths stay exactly
what they were.
"""

from __future__ import annotations

import os
from pathlib import Path

# Where DVC puts experiment copies, relative to the originating repository's root.
EXPS_DIR = Path(".dvc/tmp/exps")


def root(cwd: Path | None = None) -> Path:
    """The workspace directory that plays the role of ``cwd`` for untracked state.

    In a DVC experiment copy, ``cwd``'s place inside the copy (its path below the copy's
    ``.dvc`` folder's parent) mapped onto ``DVC_ROOT``; anywhere else, ``cwd`` itself. The copy
    is recognised by where it lies (below ``DVC_ROOT/.dvc/tmp/exps``), never by the variable
    alone: a ``DVC_ROOT`` inherited from an unrelated process changes nothing.
    """
    here = (cwd or Path.cwd()).resolve()
    origin = os.environ.get("DVC_ROOT")
    if not origin:
        return here
    origin_root = Path(origin).resolve()
    exps = origin_root / EXPS_DIR
    if not here.is_relative_to(exps):
        return here
    for folder in (here, *here.parents):
        if folder == exps:
            break
        if (folder / ".dvc").is_dir():  # the copy's repository root
            return origin_root / here.relative_to(folder)
    return here


def in_copy(cwd: Path | None = None) -> bool:
    """Whether the process runs in a DVC experiment copy (``--temp`` or queued)."""
    here = (cwd or Path.cwd()).resolve()
    return root(here) != here


def state_path(path: Path) -> Path:
    """Where a configured path of persistent state lies: relative paths are taken from :func:`root`.

    Returned unchanged outside an experiment copy (relative stays relative, as logged and
    shown today), and absolute paths are the user's choice everywhere.
    """
    if path.is_absolute() or not in_copy():
        return path
    return root() / path
