"""``hpopipe retrain`` (CI retraining) and ``hpopipe serve`` (the nightly Prefect deployment).

``retrain`` runs the same sequence as the Prefect flow, without a Prefect server: pull,
overrides, every DVC stage, the quality gate, push, commit. A failed gate prints the summary and
exits with status 1, having pushed and committed nothing; a user error exits 2 as everywhere.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

from hpopipe.errors import HpopipeError
from hpopipe.names import check_name
from hpopipe.retrain.orchestrate import DEFAULT_BRANCH

FLOW_FILE = Path("flows/retrain.py")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``retrain`` and ``serve`` on the ``hpopipe`` command's sub-parsers."""
    r = subparsers.add_parser(
        "retrain",
        help="pull, dvc repro, quality gate, then dvc push and a commit (for CI)",
        description=__doc__,
    )
    r.add_argument("--project-dir", type=Path, default=Path("."), help="the project checkout (default: .)")
    r.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, as `dvc exp run -S` does; written to params.yaml and committed",
    )
    r.add_argument("--n-trials", type=int, help="override hpo.n_trials")
    r.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    r.add_argument(
        "--max-regression",
        type=float,
        help="allowed drop of the test metric (hpo.metric), in its units "
        "(default: retrain.max_regression in params.yaml, else 0.02)",
    )
    r.add_argument(
        "--branch", default=DEFAULT_BRANCH, help="branch that receives the commit (default: %(default)s)"
    )
    r.add_argument("--no-push", dest="push", action="store_false", help="do not dvc push")
    r.add_argument("--no-commit", dest="commit", action="store_false", help="do not commit")
    r.add_argument("--summary", type=Path, help="append the markdown summary here too ($GITHUB_STEP_SUMMARY)")
    r.set_defaults(func=_retrain)

    s = subparsers.add_parser(
        "serve", help="register the nightly Prefect deployment and run its flow runs until stopped"
    )
    s.add_argument("--project-dir", type=Path, default=Path("."), help="the project checkout (default: .)")
    s.add_argument("--cron", help="schedule, UTC (default: 0 2 * * *, nightly at 02:00)")
    s.add_argument("--name", default="nightly", help="deployment name (default: nightly)")
    s.set_defaults(func=_serve)


def _retrain(args: argparse.Namespace) -> None:
    from hpopipe.retrain import orchestrate

    options = orchestrate.RetrainOptions(
        overrides=tuple(orchestrate.override_list(args.n_trials, args.max_epochs, args.overrides)),
        max_regression=args.max_regression,
        branch=args.branch,
        push=args.push,
        commit=args.commit,
    )
    report = orchestrate.retrain(args.project_dir, options)
    text = orchestrate.summary_markdown(report)
    print(text)
    if args.summary is not None:
        with args.summary.open("a", encoding="utf-8") as out:
            out.write(text)
    if not report.gate.passed:
        print(f"hpopipe: quality gate failed: {report.gate.reason}", file=sys.stderr)
        sys.exit(orchestrate.EXIT_GATE_FAILED)


def _serve(args: argparse.Namespace) -> None:
    from prefect.settings import PREFECT_API_URL

    name = check_name(args.name, "--name")
    project = args.project_dir.resolve()
    flows = load_flow_module(project)
    if not PREFECT_API_URL.value():
        # Without it Prefect would serve against a throwaway server that dies with this process.
        raise HpopipeError(
            "PREFECT_API_URL: not set (start `prefect server start`, then "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`)"
        )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API poll otherwise
    os.chdir(project)  # the deployment's entrypoint is recorded relative to the checkout
    kwargs = {"cron": args.cron} if args.cron else {}
    flows.serve_nightly(project_dir=project, name=name, **kwargs)


def load_flow_module(project: Path) -> ModuleType:
    """Import ``flows.retrain`` from a project checkout (it is not part of the installed package).

    Imported by module name with the checkout on ``sys.path``, so the processes Prefect spawns
    for each flow run can import it again the same way.
    """
    if not (project / FLOW_FILE).is_file():
        raise HpopipeError(f"{project / FLOW_FILE}: not found (serve runs from a project checkout)")
    sys.path.insert(0, str(project))
    return importlib.import_module("flows.retrain")
