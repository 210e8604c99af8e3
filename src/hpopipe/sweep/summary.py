"""The sweep summary the ``sweep`` flow publishes: trials by state, what each worker did, the best.

Read from the study alone (the source of truth for trials), so it is right whichever machines
ran the workers and whether some of them died.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpopipe import artifacts
from hpopipe.errors import HpopipeError
from hpopipe.redact import mask_url
from hpopipe.sweep.budget import count_finished, finished_in
from hpopipe.sweep.fanout import WorkerRun

WORKER_ATTR = "worker"  # user attr each trial carries: the id of the worker that ran it


def summary_markdown(
    study: optuna.Study, storage_url: str, runs: Sequence[WorkerRun], n_trials: int | None = None
) -> str:
    """Markdown for the sweep's Prefect artifact: trials by state, per-worker counts, the best trial.

    The storage URL is shown with its password masked; nothing else in it comes from the
    environment.
    """
    trials = study.get_trials(deepcopy=False)
    sections = [
        f"# hpopipe sweep `{study.study_name}`",
        f"**Storage:** `{mask_url(storage_url)}`",
        _state_table(trials, n_trials),
        _worker_table(trials),
        _best_line(study, trials),
        _runs_table(runs),
    ]
    return "\n\n".join(sections) + "\n"


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward ``hpo.n_trials`` (COMPLETE and PRUNED)."""
    return finished_in(study)


def _state_table(trials: Sequence[FrozenTrial], n_trials: int | None) -> str:
    counts = Counter(t.state.name for t in trials)
    rows = [f"| {state.name} | {counts[state.name]} |" for state in TrialState if counts[state.name]]
    done = count_finished(trials)
    budget = f"{done} of {n_trials}" if n_trials is not None else str(done)
    return "\n".join(
        [f"**Trials:** {budget} counted (COMPLETE + PRUNED)", "", "| state | trials |", "|---|---:|", *rows]
    )


def _worker_table(trials: Sequence[FrozenTrial]) -> str:
    per: dict[str, Counter[str]] = {}
    for t in trials:
        worker = str(t.user_attrs.get(WORKER_ATTR, "unknown"))
        per.setdefault(worker, Counter())[t.state.name] += 1
    if not per:
        return "**Workers:** no trials yet"
    header = ["| worker | complete | pruned | failed | total |", "|---|---:|---:|---:|---:|"]
    rows = [
        f"| {mask_url(w)} | {c['COMPLETE']} | {c['PRUNED']} | {c['FAIL']} | {sum(c.values())} |"
        for w, c in sorted(per.items())
    ]
    return "\n".join(["**Workers**", "", *header, *rows])


def _best_line(study: optuna.Study, trials: Sequence[FrozenTrial]) -> str:
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return "**Best:** no complete trial"
    best = study.best_trial
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best.params.items()))
    return f"**Best:** {_fmt(best.value)} (trial {best.number}: {params})"


def _runs_table(runs: Sequence[WorkerRun]) -> str:
    rows = [f"| {r.name} | {r.state} |" for r in runs]
    return "\n".join(["**Worker runs**", "", "| flow run | state |", "|---|---|", *rows])


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class OpenedSweep:
    """The study a sweep's workers shared, where it lives, and its budget."""

    study: optuna.Study
    storage_url: str
    n_trials: int


def open_sweep(root: Path, params: str = "params.yaml", study: str | None = None) -> OpenedSweep:
    """Load the study that ``hpopipe worker`` joined in the checkout ``root`` with these arguments.

    The name is derived as the workers derive it (params.yaml and the prepared data), unless
    given; the storage is the one ``hpo.storage`` names, with ``env:NAME`` read from this
    process's environment.
    """
    from hpopipe.config import load_params
    from hpopipe.sweep.storage import open_storage, resolve
    from hpopipe.sweep.study import data_fingerprint, study_name

    loaded = load_params(root / params)
    if study is None:
        train, schema = (
            artifacts.read_frame(root / artifacts.TRAIN),
            artifacts.read_json(root / artifacts.SCHEMA),
        )
        study = study_name(loaded.for_task(schema["task"]), data_fingerprint(train, schema))
    spec = resolve(loaded.hpo.storage, root / artifacts.HPO)
    try:
        opened = optuna.load_study(study_name=study, storage=open_storage(spec))
    except KeyError:
        raise HpopipeError(f"study {study!r}: not found in {spec.display} (no worker joined it)") from None
    return OpenedSweep(opened, spec.display, loaded.hpo.n_trials)
