"""``hpopipe worker`` and ``hpopipe sweep pause|resume|cancel``: the commands of a running sweep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hpopipe.errors import HpopipeError


def _worker(args: argparse.Namespace) -> None:
    from hpopipe.sweep.agent import run_worker

    run_worker(str(args.params), args.study, args.id)


def storage_spec(params_path: Path, storage: Path | None) -> Any:
    """The storage a command acts on: ``--storage`` (a journal or SQLite file), else hpo.storage in --params.

    --params may be a sweep-only file (an external sweep's, docs/external.md) as well.
    """
    from hpopipe.config import load_sweep_params
    from hpopipe.sweep.storage import file_spec, resolve

    if storage is not None:
        return file_spec(storage)
    return resolve(load_sweep_params(params_path).hpo.storage)


def target_storage(params_path: Path, storage: Path | None) -> tuple[Any, Any]:
    """(spec, storage) of :func:`storage_spec`, never created where it does not exist."""
    from hpopipe.sweep.storage import open_existing

    spec = storage_spec(params_path, storage)
    return spec, open_existing(spec)


def target_study(params_path: Path, storage: Path | None, name: str | None, field: str) -> Any:
    """The study ``name``, by default the one whose trials started last: a running sweep's.

    Read from the storage, never from metrics/hpo.json, which DVC deletes while the hpo stage runs.
    """
    import optuna

    from hpopipe.names import check_name
    from hpopipe.sweep.status import latest_study

    name = None if name is None else check_name(name, field)  # a bad name is refused before any I/O
    spec, store = target_storage(params_path, storage)
    name = latest_study(store, spec.display) if name is None else name
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        raise HpopipeError(f"{field}: no study named {name!r} in {spec.display}") from None


def grace_of(params_path: Path) -> float:
    """hpo.grace_s: how long a silent worker still counts as running (its default without params)."""
    from hpopipe.config import HpoConfig, load_params

    return load_params(params_path).hpo.grace_s if params_path.exists() else HpoConfig().grace_s


def _sweep(args: argparse.Namespace) -> None:
    from hpopipe.sweep.lifecycle import apply_action

    study = target_study(args.params, None, args.name, "NAME")
    state = apply_action(study, args.action)
    print(f"sweep {study.study_name}: {state} (workers see it before their next trial)")


def add_parser(sub: Any) -> None:
    """Register ``worker`` and ``sweep`` on the top-level sub-command parser."""
    w = sub.add_parser("worker", help="join the sweep this checkout describes; run trials until it is done")
    w.add_argument("--params", type=Path, default=Path("params.yaml"))
    w.add_argument("--study", help="refuse to start unless this is the sweep's study name")
    w.add_argument("--id", help="worker id shown by `hpopipe status` (default: <host>:<pid>)")
    w.set_defaults(func=_worker)
    s = sub.add_parser("sweep", help="pause, resume or cancel a sweep; workers honour it between trials")
    s.add_argument("action", choices=["pause", "resume", "cancel"])
    s.add_argument("name", nargs="?", help="study name (default: the one whose trials started last)")
    s.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="names the storage (hpo.storage): params.yaml, or an external sweep's params file",
    )
    s.set_defaults(func=_sweep)
