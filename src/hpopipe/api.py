"""The pipeline from Python: ``hpopipe.run`` and ``hpopipe.best_config``.

``run`` goes through DVC, never around it: without overrides it is ``dvc repro``, with them
``dvc exp run --set-param``, so ``dvc.lock`` always describes what is on disk and DVC alone
decides what is stale (a finished pipeline runs nothing). The results are read back through
the same readers the stages use (:mod:`hpopipe.handoffs.best`, :mod:`hpopipe.artifacts`).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.errors import HpopipeError, StageError
from hpopipe.handoffs.best import read_best
from hpopipe.retrain.commands import dvc, run_streaming
from hpopipe.retrain.stages import stage_failure

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"
_RAN = re.compile(r"Running stage '([\w.-]+)'")
_FAILED = re.compile(r"failed to reproduce '([\w.-]+)'")
_EXPERIMENT = re.compile(r"Ran experiment\(s\): (\S+)")


@dataclass(frozen=True)
class RunResult:
    """What a pipeline run left in the workspace, read back from the stages' outputs.

    Attributes:
        best_config: ``artifacts/best/config.yaml`` as a mapping (seed, model, params, train, ...).
        model_path: the refit model, ``models/model.pt`` under the project root.
        test_metrics: ``metrics/test.json``: the refit model scored on the held-out test split.
        study_name: the Optuna study the sweep ran (from ``metrics/hpo.json``).
        ran: the stages DVC ran, in order; empty when everything was up to date.
        experiment: the DVC experiment's name when overrides made it ``dvc exp run``, else None.
    """

    best_config: dict[str, Any]
    model_path: Path
    test_metrics: dict[str, Any]
    study_name: str
    ran: tuple[str, ...] = field(default=())
    experiment: str | None = None

    @property
    def reran(self) -> bool:
        """Whether DVC ran any stage (False: the pipeline was already up to date)."""
        return bool(self.ran)


def run(
    params: str | Path = PARAMS_FILE,
    overrides: Mapping[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
) -> RunResult:
    """Run the pipeline through DVC and return what it produced.

    Args:
        params: the project's ``params.yaml`` (relative to ``cwd``); its folder is the DVC project.
        overrides: dotted keys and values, e.g. ``{"hpo.n_trials": 5}``; validated like
            ``params.yaml`` before anything runs, then passed to ``dvc exp run --set-param``
            (which writes them into ``params.yaml``, as a DVC experiment does).
        cwd: where ``params`` is looked up; the current directory when None.

    Raises:
        HpopipeError: an unknown key or a bad value in ``overrides`` (one line, nothing ran), or
            no ``params.yaml``/``dvc.yaml`` there.
        StageError: a stage failed; the message names the stage and its one-line reason.
    """
    settings = override_args(overrides or {})
    root = _project_root(params, cwd)
    if settings:
        check_overrides(root / PARAMS_FILE, settings)
        cmd = dvc("exp", "run", *[arg for s in settings for arg in ("--set-param", s)])
    else:
        cmd = dvc("repro")
    lines, code = run_streaming(cmd, root, "dvc", log)
    if code != 0:
        raise _failure(lines, code or 1)
    ran = tuple(dict.fromkeys(m.group(1) for line in lines if (m := _RAN.search(line))))
    experiment = next((m.group(1) for line in lines if (m := _EXPERIMENT.search(line))), None)
    return read_result(root, ran, experiment)


def best_config(path_or_dir: str | Path = ".") -> dict[str, Any]:
    """The configuration select chose: ``artifacts/best/config.yaml`` of a project, or that file.

    Read through the hand-off reader refit uses, so a malformed file fails here in one line
    naming the file and the field.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / artifacts.BEST_CONFIG
    if not path.is_file():
        raise HpopipeError(f"{path}: not found (run the pipeline first: `dvc repro` or hpopipe.run())")
    return read_best(path).plain()


def read_result(root: Path, ran: tuple[str, ...] = (), experiment: str | None = None) -> RunResult:
    """The outputs of a finished pipeline under ``root`` as a :class:`RunResult`."""
    try:
        summary = artifacts.read_json(root / artifacts.metrics_file("hpo"))
        test = artifacts.read_json(root / artifacts.metrics_file("test"))
    except FileNotFoundError as err:
        raise HpopipeError(f"{err.filename}: not found (the pipeline did not finish)") from None
    return RunResult(
        best_config=best_config(root),
        model_path=root / artifacts.MODEL,
        test_metrics=dict(test),
        study_name=str(summary["study"]),
        ran=ran,
        experiment=experiment,
    )


def override_args(overrides: Mapping[str, Any]) -> list[str]:
    """``{"hpo.n_trials": 5}`` as ``dvc exp run --set-param`` values: ``["++hpo.n_trials=5"]``.

    ``++`` sets a key whether or not ``params.yaml`` spells it out (a default left out of the
    file is still overridable); an unknown key is caught by :func:`check_overrides`.
    """
    args = []
    for key, value in overrides.items():
        if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
            raise HpopipeError(f"overrides: {key!r} is not a dotted params.yaml key (e.g. 'hpo.n_trials')")
        args.append(f"++{key}={_hydra_value(value)}")
    return args


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (the one ``--set-param`` parses); strings are quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    raise HpopipeError(f"overrides: {value!r} is not a plain value (number, string, bool, list, mapping)")


def check_overrides(params_path: Path, settings: Sequence[str]) -> None:
    """Apply ``settings`` to a copy of ``params.yaml`` with DVC's own code and validate the result.

    An unknown key or a bad value is then one line before DVC starts anything, and the
    workspace's ``params.yaml`` is untouched.
    """
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory(prefix="hpopipe-overrides-") as tmp:
        copy = Path(tmp) / PARAMS_FILE
        shutil.copyfile(params_path, copy)
        try:
            apply_overrides(copy, list(settings))
            load_params(copy)
        except InvalidArgumentError as err:
            cause = str(err.__cause__ or err).splitlines()[0]
            raise HpopipeError(f"overrides: cannot apply {' '.join(settings)}: {cause}") from None
        except HpopipeError as err:
            raise HpopipeError(str(err).replace(str(copy), f"{PARAMS_FILE} with overrides")) from None


def _project_root(params: str | Path, cwd: str | Path | None) -> Path:
    path = (Path(cwd) if cwd is not None else Path.cwd()) / params
    if path.name != PARAMS_FILE:
        raise HpopipeError(f"{path}: the stages read {PARAMS_FILE}; pass that file (or its project's)")
    if not path.is_file():
        raise HpopipeError(f"{path}: not found")
    root = path.parent.resolve()
    if not (root / "dvc.yaml").is_file():
        raise HpopipeError(f"{root}: no dvc.yaml (is this an hpopipe project?)")
    return root


def _failure(lines: Sequence[str], code: int) -> StageError:
    """The failed stage, named: DVC's 'failed to reproduce' line, else the last stage it started."""
    stage = next((m.group(1) for line in reversed(lines) if (m := _FAILED.search(line))), None)
    if stage is None:
        stage = next((m.group(1) for line in reversed(lines) if (m := _RAN.search(line))), "dvc")
    return stage_failure(stage, code, lines)
