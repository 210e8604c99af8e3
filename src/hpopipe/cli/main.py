"""The ``hpopipe`` command: predictions from a saved model, and looks at params and studies.

The pipeline itself runs through ``dvc repro``; this command covers what a
user does around it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpopipe import __version__, artifacts
from hpopipe.cli import deploy, retrain, space, sweep, trial
from hpopipe.entry import run
from hpopipe.errors import HpopipeError
from hpopipe.names import check_name


def _predict(args: argparse.Namespace) -> None:
    from hpopipe.data import read_table
    from hpopipe.outputs import refuse_owned_output
    from hpopipe.refit import load_model, predict_frame

    refuse_owned_output(args.output, "--output", (args.model, args.input, *_params_paths()))
    model, bundle = load_model(args.model, trust_factory=args.trust_factory)
    frame = read_table(args.input, field="--input")
    out = predict_frame(model, bundle, frame, str(args.input), keep=args.id_column)
    artifacts.write_frame(args.output, out)
    print(f"wrote {len(out)} predictions to {args.output}")


def _params_paths() -> list[Path]:
    """Paths params.yaml names outside the owned folders (scratch, backups); none without a valid one.

    predict needs no params.yaml (a model file is self-contained), so a missing or invalid
    one only means there is nothing more to protect.
    """
    from hpopipe.config import load_params

    try:
        hpo = load_params(Path("params.yaml")).hpo
    except HpopipeError:
        return []
    return [hpo.checkpoint_dir] + ([hpo.backup_dir] if hpo.backup_dir is not None else [])


def _validate(args: argparse.Namespace) -> None:
    from hpopipe.config import HOOK_KEYS, load_params
    from hpopipe.consumption import check_factory_names
    from hpopipe.plugins import load_callable
    from hpopipe.tracking import experiment_name

    params = load_params(args.params)
    experiment_name()  # HPOPIPE_EXPERIMENT, which the hpo, cv and refit stages would refuse
    refs = [("model.factory", params.model.factory)] if params.model.factory else []
    hooks = [(f"hpo.{key}", r) for key in HOOK_KEYS for r in getattr(params.hpo, key)]
    for field, ref in [*refs, *hooks]:
        func = load_callable(ref, f"{args.params}: {field}")  # importable, and a callable of the user's own
        if field == "model.factory":
            check_factory_names(params, func, str(args.params))  # a tuned name it declares it does not read
    # Imported only now: a params.yaml mistake is reported without loading torch, pandas and scikit-learn.
    from hpopipe.training.loop import check_device

    check_device(params.train.device)
    print(f"{args.params}: ok ({len(params.search_space)} tuned parameters, {params.hpo.n_trials} trials)")
    from hpopipe.data import check_folds, for_data, prepare, read_table, to_arrays

    if not params.data.path.exists():  # e.g. DVC-tracked data not pulled yet: params alone are checked
        print(f"{params.data.path}: not found, so the data was not checked")
        return
    table = read_table(params.data.path)
    params = for_data(params, table)  # the target exists, and hpo.metric fits its task
    # The same steps as the prepare stage, in memory: nothing is written.
    prepared = prepare(table, params.data, params.seed)
    check_folds(
        to_arrays(prepared.train)[1],
        prepared.schema,
        params.cv.folds,
        f"the train split of {params.data.path}",
    )
    rows = prepared.schema.n_rows
    print(
        f"{params.data.path}: ok ({prepared.schema.task}, hpo.metric {params.hpo.metric}; "
        f"{rows.train} train and {rows.test} test rows; cv.folds fits)"
    )


def _studies(args: argparse.Namespace) -> None:
    from hpopipe.sweep.status import list_studies

    spec, storage = sweep.target_storage(args.params, args.storage)
    rows = list_studies(storage)
    if not rows:
        print(f"no studies in {spec.display}")
        return
    print(f"{'study':<24} {'trials':>6} {'complete':>8} {'best':>10}")
    for row in rows:
        best = "-" if row["best"] is None else f"{row['best']:.4f}"
        print(f"{row['name']:<24} {row['trials']:>6} {row['complete']:>8} {best:>10}")


def _status(args: argparse.Namespace) -> None:
    from hpopipe.config import load_params
    from hpopipe.sweep.status import format_status, read_status
    from hpopipe.sweep.storage import open_storage, resolve

    params = load_params(args.params) if args.params.exists() else None
    n_trials = params.hpo.n_trials if params else None
    source: Any = args.storage
    if args.storage is None:
        spec = resolve(params.hpo.storage if params else "journal")
        if spec.path is not None and not spec.path.exists():
            raise HpopipeError(f"hpo.storage: {spec.path}: not found (no sweep has run here yet: dvc repro)")
        source = spec.path if spec.path is not None else open_storage(spec)
    field, name = ("NAME", args.name) if args.name is not None else ("--study", args.study)
    study = None if name is None else check_name(name, field)
    print(format_status(read_status(source, study, n_trials)))


def _resume(args: argparse.Namespace) -> None:
    from hpopipe.sweep.recovery import parse_states, retry_states

    states = parse_states(args.states if args.states else "fail")
    study = sweep.target_study(args.params, args.storage, args.study, "--study")
    backup, n = retry_states(study, states, sweep.grace_of(args.params))
    if backup is None:
        print(f"study {study.study_name}: nothing to retry (no latest attempt is {args.states or 'fail'})")
        return
    print(f"backed the study up as {backup}; re-enqueued {n} trial(s): run `dvc repro` to run them")


def _restore(args: argparse.Namespace) -> None:
    from hpopipe.sweep.backup import restore_study

    spec = sweep.storage_spec(args.params, args.storage)
    if spec.path is None:
        raise HpopipeError(
            f"hpo.storage: {spec.kind}: restore brings back a study file (journal or sqlite); "
            "back a database up with its own tools"
        )
    target = spec.path
    kept = restore_study(args.source, target, sweep.grace_of(args.params))
    note = f" (the previous file is kept as {kept})" if kept else ""
    print(f"restored {target} from {args.source}{note}")


STORAGE_HELP = "a study file, *.journal or SQLite (default: the storage hpo.storage in --params names)"
PARAMS_HELP = "names the storage (hpo.storage)"


def build_parser() -> argparse.ArgumentParser:
    """All sub-commands and their options."""
    parser = argparse.ArgumentParser(prog="hpopipe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hpopipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="apply models/model.pt to new rows")
    p.add_argument("--model", type=Path, default=artifacts.MODEL)
    p.add_argument("--input", type=Path, required=True, help="CSV or Parquet with the training columns")
    p.add_argument("--output", type=Path, required=True, help="CSV or Parquet to write")
    p.add_argument(
        "--trust-factory",
        action="store_true",
        help="let a model file that names a model.factory import and run it (only for files you trust)",
    )
    p.add_argument(
        "--id-column",
        action="append",
        default=[],
        metavar="NAME",
        help="copy this input column (e.g. an id) to the output, first; repeat for several",
    )
    p.set_defaults(func=_predict)
    v = sub.add_parser("validate", help="check params.yaml (and the data it names) without running anything")
    v.add_argument("--params", type=Path, default=Path("params.yaml"))
    v.set_defaults(func=_validate)
    s = sub.add_parser("studies", help="list the studies in the sweep storage")
    s.add_argument("--storage", type=Path, help=STORAGE_HELP)
    s.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    s.set_defaults(func=_studies)
    st = sub.add_parser("status", help="the sweep so far: state, trials by state, best value, rate, workers")
    st.add_argument("name", nargs="?", help="study name (default: the one whose trials started last)")
    st.add_argument(
        "--storage", type=Path, help="a study file, *.journal or SQLite (default: hpo.storage in --params)"
    )
    st.add_argument("--study", help="same as NAME")
    st.add_argument("--params", type=Path, default=Path("params.yaml"), help="read hpo.n_trials for the ETA")
    st.set_defaults(func=_status)
    r = sub.add_parser(
        "resume", help="re-enqueue failed (or other) trials into the same study, after a backup"
    )
    r.add_argument("--retry-failed", action="store_true", help="retry FAIL trials (the default state)")
    r.add_argument("--states", help="comma-separated states to retry, e.g. fail,pruned")
    r.add_argument("--study", help="study name (default: the one whose trials started last)")
    r.add_argument("--storage", type=Path, help=STORAGE_HELP)
    r.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    r.set_defaults(func=_resume)
    b = sub.add_parser("restore", help="bring the study file back from a backup folder (hpo.backup_dir)")
    b.add_argument("--from", dest="source", type=Path, required=True)
    b.add_argument("--storage", type=Path, help=STORAGE_HELP)
    b.add_argument("--params", type=Path, default=Path("params.yaml"), help=PARAMS_HELP)
    b.set_defaults(func=_restore)
    for wing in (retrain, sweep, deploy, space, trial):
        wing.add_parser(sub)
    _plain_help(parser)
    return parser


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Help is read in a terminal: the docstrings' reStructuredText and Markdown backticks become quotes."""
    parser.description = _unmark(parser.description)
    for action in parser._actions:
        action.help = _unmark(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for listed in action._choices_actions:
                listed.help = _unmark(listed.help)
            for child in action.choices.values():
                _plain_help(child)


def _unmark(text: str | None) -> str | None:
    return None if text is None else re.sub(r"``?([^`]+?)``?", r"'\1'", text)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    args = build_parser().parse_args(argv)
    run(lambda: args.func(args))
