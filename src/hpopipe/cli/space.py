"""``hpopipe space export`` / ``import``: the search space in other tools' formats, both ways."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpopipe.atomic import atomic_write_text
from hpopipe.config import load_params
from hpopipe.space.formats import FORMATS, export_space
from hpopipe.space.imports import import_sweep


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``hpopipe space export`` on the ``hpopipe`` command's sub-parsers."""
    space = subparsers.add_parser("space", help="the search space in other tools' formats")
    commands = space.add_subparsers(dest="space_command", required=True)
    export = commands.add_parser(
        "export",
        help="write the search space as Optuna distributions, a W&B sweep or an AzureML sweep job",
        description="Write params.yaml's search space, with its sampler, pruner, metric and budget, as "
        "Optuna distributions (JSON), a W&B sweep config or an AzureML sweep job (YAML). Exact where the "
        "target can say the same thing; an error naming the key where it cannot.",
    )
    export.add_argument("--format", dest="fmt", required=True, choices=FORMATS)
    export.add_argument("--params", type=Path, default=Path("params.yaml"))
    export.add_argument("--output", type=Path, help="file to write (atomically); default: stdout")
    export.set_defaults(func=space_export_command)
    imp = commands.add_parser(
        "import",
        help="write a W&B sweep config or an AzureML sweep job into params.yaml",
        description="Read a W&B sweep config or an AzureML sweep job (told apart by their keys) and write "
        "its search space, sampler, metric, pruner and budget into params.yaml, keeping every comment and "
        "other section. One line per part of the file says whether it was mapped, approximated (and how) or "
        "not mapped (and why); docs/strategies.md has the tables.",
    )
    imp.add_argument("--from", dest="source", type=Path, required=True, metavar="FILE")
    imp.add_argument("--params", type=Path, default=Path("params.yaml"))
    imp.set_defaults(func=space_import_command)


def space_export_command(args: argparse.Namespace) -> None:
    """Handler of ``hpopipe space export``."""
    from hpopipe.data import with_metric  # imported here: pandas loads for this command only

    text = export_space(with_metric(load_params(args.params)), args.fmt)
    if args.output is None:
        sys.stdout.write(text)
        return
    atomic_write_text(args.output, text)
    print(f"wrote the {args.fmt} search space to {args.output}")


def space_import_command(args: argparse.Namespace) -> None:
    """Handler of ``hpopipe space import``."""
    for line in import_sweep(args.source, args.params):
        print(line)
    print(f"wrote search_space and hpo from {args.source} into {args.params}")
