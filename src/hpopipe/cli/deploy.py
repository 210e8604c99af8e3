"""``hpopipe deploy-worker``: register the sweep-worker Prefect deployment on a process work pool.

Run it once from the project checkout, against the Prefect server the workers talk to; then
``prefect worker start --pool NAME --limit 1`` on each machine that should run sweep workers,
and ``prefect deployment run sweep/...`` or the ``sweep`` flow fans runs out to them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from hpopipe.sweep.fanout import DEPLOYMENT_NAME


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``deploy-worker`` on the ``hpopipe`` command's sub-parsers."""
    d = subparsers.add_parser(
        "deploy-worker",
        help="register the sweep-worker Prefect deployment on a process work pool",
        description=__doc__,
    )
    d.add_argument("--pool", required=True, help="process work pool that runs the workers")
    d.add_argument("--project-dir", type=Path, default=Path("."), help="the project checkout (default: .)")
    d.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name (default: %(default)s)")
    d.set_defaults(func=_deploy_worker)


def _deploy_worker(args: argparse.Namespace) -> None:
    from hpopipe.sweep.fanout import deploy_worker

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    name = deploy_worker(args.project_dir, args.pool, args.name)
    print(f"registered deployment {name} on work pool {args.pool!r}")
    print(f"start a worker on each machine: prefect worker start --pool {args.pool} --limit 1")
