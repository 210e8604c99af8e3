"""``hpopipe retrain`` (CI retraining) and ``hpopipe serve`` (the nightly Prefect deployment).

``retrain`` runs the same sequence as the Prefect flow, without a Prefect server: pull,
overrides, every DVC stage, the quality gate, push, commit. A failed gate prints the summary and
exits with status 1, having pushed and committed nothing; a user error exits 2 as everywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hpopipe.errors import HpopipeError
from hpopipe.names import check_name
from hpopipe.retrain.gate import DEFAULT_MAX_REGRESSION
from hpopipe.retrain.publish import DEFAULT_BRANCH

FLOW_FILE = Path("flows/retrain.py")
FLOW_MODULE = "flows.retrain"


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
        f"(default: retrain.max_regression in params.yaml, else {DEFAULT_MAX_REGRESSION:g})",
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
    from hpopipe.retrain.gate import EXIT_GATE_FAILED
    from hpopipe.retrain.overrides import override_list
    from hpopipe.retrain.sequence import RetrainOptions, retrain
    from hpopipe.retrain.summary import summary_markdown

    options = RetrainOptions(
        overrides=tuple(override_list(args.n_trials, args.max_epochs, args.overrides)),
        max_regression=args.max_regression,
        branch=args.branch,
        push=args.push,
        commit=args.commit,
    )
    report = retrain(args.project_dir, options)
    text = summary_markdown(report)
    print(text)
    if args.summary is not None:
        with args.summary.open("a", encoding="utf-8") as out:
            out.write(text)
    if not report.gate.passed:
        print(f"hpopipe: quality gate failed: {report.gate.reason}", file=sys.stderr)
        sys.exit(EXIT_GATE_FAILED)


def _serve(args: argparse.Namespace) -> None:
    """Become ``python -m flows.retrain serve`` in the project checkout (see :func:`serve_command`).

    The flows are part of the checkout, not of the installed package, so the package never
    imports them: this process checks what it can report as a one-line error, then replaces
    itself with the flow module's own process (same pid, so signals reach Prefect's runner).
    """
    from hpopipe.sweep.fanout import api_url

    project = args.project_dir.resolve()
    cmd = serve_command(project, check_name(args.name, "--name"), args.cron)
    api_url()  # without it Prefect would serve against a throwaway server that dies with this process
    os.chdir(project)  # the deployment's entrypoint is recorded relative to the checkout
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


def serve_command(project: Path, name: str, cron: str | None) -> list[str]:
    """The command line that serves the nightly deployment of ``project``'s ``flows/retrain.py``.

    Run with ``project`` as the working directory, so that ``flows`` is imported from the
    checkout, as the processes Prefect spawns for each flow run import it again.
    """
    if not (project / FLOW_FILE).is_file():
        raise HpopipeError(f"{project / FLOW_FILE}: not found (serve runs from a project checkout)")
    cron_args = ["--cron", cron] if cron else []
    return [
        sys.executable,
        "-m",
        FLOW_MODULE,
        "serve",
        "--project-dir",
        str(project),
        "--name",
        name,
        *cron_args,
    ]
