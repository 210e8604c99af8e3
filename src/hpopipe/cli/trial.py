"""``hpopipe trial ask|report|tell|fail``: a training program in any language joins a sweep.

Each verb is one process and prints one JSON line on stdout; the logic is
:mod:`hpopipe.sweep.external` (``connect(..., detached=True)`` and ``attach``). Between two
calls no process beats for the trial: each call writes its heartbeat, and a trial with no call
for longer than ``hpo.grace_s`` is failed and retried by the next ``ask`` (docs/external.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

EXIT_NO_TRIAL = 3  # `trial ask`: no trial (the budget is spent, or a hook stopped the study); prints null
STUDY_HELP = "the study's name (default: the one --params describes)"
STORAGE_HELP = "where the study lives: sqlite:///path, postgresql://..., env:NAME (default: hpo.storage)"
PARAMS_HELP = "a params file: params.yaml (the hpo stage's study) or a sweep-only one (default: params.yaml)"


def _quiet() -> None:
    """One JSON line per call is the output: hpopipe's progress lines only when asked for."""
    if "HPOPIPE_LOG_LEVEL" not in os.environ:
        logging.getLogger().setLevel(logging.WARNING)


def _where(args: argparse.Namespace) -> dict[str, Any]:
    return {"storage": args.storage, "study": args.study}


def _print(record: dict[str, Any] | None) -> None:
    print(json.dumps(record), flush=True)


def _ask(args: argparse.Namespace) -> None:
    from hpopipe.sweep.external import connect

    _quiet()
    with connect(args.params, **_where(args), detached=True, owner_pid=args.owner_pid) as sweep:
        trial = sweep.ask(wait=args.wait)
    if trial is None:
        _print(None)
        sys.exit(EXIT_NO_TRIAL)
    _print({"number": trial.number, "params": trial.params, "seed": trial.seed, "retry_of": trial.retry_of})


def _attach(args: argparse.Namespace) -> Any:
    from hpopipe.sweep.external import attach

    _quiet()
    return attach(args.number, args.params, **_where(args))


def _ended(trial: Any) -> None:
    _print({"number": trial.number, "state": trial.state.name, "stop": trial.sweep_stopped})


def _report(args: argparse.Namespace) -> None:
    trial = _attach(args)
    _print({"stop": trial.report(args.step, args.value)})


def _tell(args: argparse.Namespace) -> None:
    trial = _attach(args)
    trial.tell(args.value[0] if len(args.value) == 1 else args.value)
    _ended(trial)


def _fail(args: argparse.Namespace) -> None:
    trial = _attach(args)
    trial.fail(args.reason, retry=args.retry)
    _ended(trial)


def _study_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, help=PARAMS_HELP)
    parser.add_argument("--storage", help=STORAGE_HELP)
    parser.add_argument("--study", help=STUDY_HELP)


def add_parser(sub: Any) -> None:
    """Register ``trial ask|report|tell|fail`` on the top-level sub-command parser."""
    t = sub.add_parser("trial", help="ask for a trial, report, tell or fail it: any program joins a sweep")
    verbs = t.add_subparsers(dest="verb", required=True)
    a = verbs.add_parser(
        "ask",
        help="print the next trial as one JSON line (number, params, seed); "
        f"none left: null, exit {EXIT_NO_TRIAL}",
    )
    _study_options(a)
    a.add_argument("--wait", action="store_true", help="wait while the sweep is paused (default: exit 2)")
    a.add_argument(
        "--owner-pid",
        type=int,
        default=0,
        metavar="PID",
        help="the process that runs the trial (a shell script's $$): once it is gone, the trial is retried",
    )
    a.set_defaults(func=_ask)
    r = verbs.add_parser(
        "report", help='an intermediate value; prints {"stop": true} when the pruner says stop'
    )
    _study_options(r)
    r.add_argument("--number", type=int, required=True, help="the trial's number (from ask)")
    r.add_argument("--step", type=int, required=True, help="e.g. the epoch")
    r.add_argument("--value", type=float, required=True)
    r.set_defaults(func=_report)
    e = verbs.add_parser("tell", help="the trial's final value; NaN or infinity fails it")
    _study_options(e)
    e.add_argument("--number", type=int, required=True, help="the trial's number (from ask)")
    e.add_argument(
        "--value", type=float, action="append", required=True, help="repeat, in order, for hpo.metrics"
    )
    e.set_defaults(func=_tell)
    f = verbs.add_parser("fail", help="record the trial as failed with its reason")
    _study_options(f)
    f.add_argument("--number", type=int, required=True, help="the trial's number (from ask)")
    f.add_argument("--reason", required=True)
    f.add_argument("--retry", action="store_true", help="queue it again, as an interrupted trial")
    f.set_defaults(func=_fail)
