"""Exports of a study: trials.csv, ranked_trials.json, pareto.csv, statistics.json, metrics/hpo.json.

The study is the source of truth for trials; these files are views of it
that the later stages, DVC metrics and people read. A multi-objective study
has a ``value_<objective>`` column per objective where a single-objective one
has ``value``, and ranks its Pareto front (see :mod:`hpopipe.sweep.pareto`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hpopipe.handoffs.ranked import RankedTrial
from hpopipe.sweep import pareto
from hpopipe.sweep.budget import REUSED_FROM, WARM_STARTED, first_positions, own
from hpopipe.sweep.optuna_internals import TrialsView
from hpopipe.sweep.seeded_sampler import POSITION, sweep_position


def within_budget(study: optuna.Study, n_trials: int) -> optuna.Study:
    """The study as the exports see it: its first ``n_trials`` counted places, in sweep order.

    A study may hold more (``dvc exp run -S hpo.n_trials=35`` grew it); the hpo stage's
    outputs must be a function of its deps and params, so that ``dvc repro -f`` and a
    run-cache restore agree byte for byte. Trials added from earlier studies (warm start) are
    left out: they steered the sampler, but the exports - and so what CV and select may choose
    from - are the trials this sweep ran (reused results included, marked ``reused_from``).
    """
    every = study.get_trials(deepcopy=False)
    trials = own(every)
    keep = first_positions(trials, n_trials, lambda t: sweep_position(study, t))
    if len(keep) == len(every):
        return study
    numbers = frozenset(keep)
    return TrialsView(study, lambda t: t.number in numbers)


def _value_columns(study: optuna.Study) -> list[str]:
    if pareto.is_multi_objective_study(study):
        return [f"value_{name}" for name in pareto.objective_names(study)]
    return ["value"]


def _values(study: optuna.Study, t: FrozenTrial) -> dict[str, Any]:
    columns = _value_columns(study)
    values = t.values if t.values is not None else [math.nan] * len(columns)
    return dict(zip(columns, values, strict=True))


def export_trials(study: optuna.Study, names: list[str]) -> pd.DataFrame:
    """One row per trial: number, state, value, duration, best epoch, one column per parameter,
    and ``reused_from`` when a trial took an earlier study's result (see sweep/warm_start.py)."""
    rows, trials = [], study.get_trials(deepcopy=False)
    reused = any(REUSED_FROM in t.user_attrs for t in trials)  # the column only when it says something
    for t in trials:
        duration = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else math.nan
        )
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            **_values(study, t),
            "duration_s": round(duration, 3),
            "best_epoch": t.user_attrs.get("best_epoch"),
        }
        row.update({f"params_{n}": t.params.get(n) for n in names})
        if reused:
            row[REUSED_FROM] = t.user_attrs.get(REUSED_FROM)
        rows.append(row)
    columns = ["number", "state", *_value_columns(study), "duration_s", "best_epoch"]
    columns += [f"params_{n}" for n in names] + ([REUSED_FROM] if reused else [])
    frame = pd.DataFrame(rows, columns=columns)
    frame["best_epoch"] = frame["best_epoch"].astype("Int64")  # pruned/failed trials have none
    for name in names:  # an attempt killed before its parameters were written has none: 2, not 2.0
        if _all_int(t.params.get(name) for t in trials):
            frame[f"params_{name}"] = frame[f"params_{name}"].astype("Int64")
    return frame


def _all_int(values: Iterable[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, int) and not isinstance(v, bool) for v in present)


def pareto_front(study: optuna.Study, names: list[str]) -> pd.DataFrame:
    """artifacts/hpo/pareto.csv: the front, best first as ranked (one objective: the best trial)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = []
    for entry in ranked_trials(study)[: None if pareto.is_multi_objective_study(study) else 1]:
        t = by_number[entry.number]
        rows.append(
            {"number": t.number, **_values(study, t), **{f"params_{n}": t.params.get(n) for n in names}}
        )
    columns = ["number", *_value_columns(study)] + [f"params_{n}" for n in names]
    return pd.DataFrame(rows, columns=columns)


def ranked_trials(study: optuna.Study) -> list[RankedTrial]:
    """COMPLETE trials, best first (ties by trial number), with their typed params.

    A multi-objective study ranks only its Pareto front, by the first
    objective, then the next ones; ``value`` is the first objective and
    ``values`` names them all.
    """
    if pareto.is_multi_objective_study(study):
        names = pareto.objective_names(study)
        return [
            RankedTrial(
                number=t.number,
                value=t.values[0],
                values=dict(zip(names, t.values, strict=True)),
                params=t.params,
                best_epoch=t.user_attrs.get("best_epoch"),
                checkpoint=t.user_attrs.get("checkpoint"),
            )
            for t in pareto.front(study)
        ]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    # Ties by sweep position, not number: a retry's new number must not reorder equal scores.
    ordered = sorted(complete, key=lambda t: (sign * float(t.value or 0.0), _position(t)))
    return [
        RankedTrial(
            number=t.number,
            value=t.values[0],  # COMPLETE: one value, never None
            params=t.params,
            best_epoch=t.user_attrs.get("best_epoch"),
            checkpoint=t.user_attrs.get("checkpoint"),
            # The trial's place in an uninterrupted sweep: a retry after a crash has a new number
            # but the same position, and CV seeds by it so a crash does not change CV results.
            position=_position(t),
        )
        for t in ordered
    ]


def _position(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(POSITION, trial.number))


def statistics(study: optuna.Study) -> dict[str, Any]:
    """artifacts/hpo/statistics.json: counts by state, success rate, durations, the best trial."""
    trials = study.get_trials(deepcopy=False)
    durations = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete and t.datetime_start
    ]
    ranked = ranked_trials(study)
    return {
        "study": study.study_name,
        **_directions(study),
        "counts": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        "success_rate": (sum(t.state == TrialState.COMPLETE for t in trials) / len(trials))
        if trials
        else 0.0,
        "total_duration_s": round(sum(durations), 3),
        "mean_duration_s": round(sum(durations) / len(durations), 3) if durations else None,
        "best_value": ranked[0].value if ranked else None,
        "best_trial": ranked[0].number if ranked else None,
        **_front_size(study, ranked),
        **_earlier(study, trials),
    }


def _earlier(study: optuna.Study, trials: list[FrozenTrial]) -> dict[str, int]:
    """What came from earlier studies: trials added by the warm start, results reused.

    Only when there was any, so the outputs of a sweep that started cold stay as they were.
    """
    found = {
        "warm_started": int(study.user_attrs.get(WARM_STARTED, 0)),
        "reused": sum(REUSED_FROM in t.user_attrs for t in trials),
    }
    return {key: n for key, n in found.items() if n}


def _directions(study: optuna.Study) -> dict[str, Any]:
    if pareto.is_multi_objective_study(study):
        names = pareto.objective_names(study)
        return {"directions": {n: d.name.lower() for n, d in zip(names, study.directions, strict=True)}}
    return {"direction": study.direction.name.lower()}


def _front_size(study: optuna.Study, ranked: list[RankedTrial]) -> dict[str, int]:
    # Multi-objective only (the ranking is the front), so single-objective outputs stay as they were.
    return {"front_size": len(ranked)} if pareto.is_multi_objective_study(study) else {}


def summary(study: optuna.Study) -> dict[str, Any]:
    """metrics/hpo.json: the best value and trial counts by state."""
    trials = study.get_trials(deepcopy=False)
    counts = {
        s.name.lower(): sum(t.state == s for t in trials)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    ranked = ranked_trials(study)
    return {
        "study": study.study_name,
        "best_value": ranked[0].value if ranked else None,
        "best_trial": ranked[0].number if ranked else None,
        "n_trials": len(trials),
        **counts,
        **_front_size(study, ranked),
        **_earlier(study, trials),
    }
