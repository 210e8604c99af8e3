"""``hpopipe worker`` and ``hpopipe sweep pause|resume|cancel``: the commands of a running sweep."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hpopipe.errors import HpopipeError


def _worker(args: argparse.Namespace) -> None:
    from hpopipe.sweep.agent import run_worker

    run_worker(str(args.params), args.study, args.id)


def load_named_study(params_path: Path, name: str | None) -> Any:
    """The study ``name`` (default: the one metrics/hpo.json names) in the storage params.yaml names."""
    from hpopipe import artifacts
    from hpopipe.config import load_params
    from hpopipe.names import check_name
    from hpopipe.sweep.storage import load_existing

    if name is not None:
        name = check_name(name, "NAME")
    else:
        path = artifacts.metrics_file("hpo")
        if not path.exists():
            raise HpopipeError(f"NAME: not given, and {path} (which names the last study) does not exist")
        name = str(artifacts.read_json(path)["study"])
    return load_existing(load_params(params_path).hpo.storage, name, field="NAME")


def _sweep(args: argparse.Namespace) -> None:
    from hpopipe.sweep.lifecycle import apply_action

    study = load_named_study(args.params, args.name)
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
    s.add_argument("name", nargs="?", help="study name (default: the one in metrics/hpo.json)")
    s.add_argument("--params", type=Path, default=Path("params.yaml"), help="names the storage (hpo.storage)")
    s.set_defaults(func=_sweep)
