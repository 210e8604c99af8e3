"""The hpo stage's work once its local workers are on their way: the sweep, then its exports.

``stages/hpo.py`` starts the workers (:func:`hpopipe.sweep.local.early_workers`) before it imports
this module, which loads the sweep (torch, MLflow, Optuna, pandas): the workers' start-up and the
stage's overlap.
"""

from __future__ import annotations

from collections.abc import Callable

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.handoffs.ranked import RankedTrials, write_ranked
from hpopipe.handoffs.schema import read_schema
from hpopipe.sweep.exports import (
    export_trials,
    pareto_front,
    ranked_trials,
    statistics,
    summary,
    within_budget,
)
from hpopipe.sweep.local import LocalWorkers
from hpopipe.sweep.runner import locked_sweep
from hpopipe.sweep.storage import resolve
from hpopipe.tracking import make_tracker


def sweep_and_export(stop: Callable[[], bool], children: LocalWorkers | None = None) -> None:
    """Run the sweep (study in ``hpo.storage``) and write artifacts/hpo/: trials, ranking, Pareto front.

    ``children`` are the local workers the stage started early; the sweep gives them the go.
    """
    train, schema = artifacts.read_frame(artifacts.TRAIN), read_schema(artifacts.SCHEMA).plain()
    params = load_params().for_task(schema["task"])  # hpo.metric: auto follows the data
    spec = resolve(params.hpo.storage)
    tracker = make_tracker(nested_runs=params.hpo.n_trials, trainers=params.hpo.n_workers)
    # The study stays locked until its exports are written (another DVC experiment may share it).
    with locked_sweep(params, train, schema, spec, tracker, stop, children) as run:
        study = within_budget(run, params.hpo.n_trials)  # never more than this run's budget
        ranked = ranked_trials(study)
        artifacts.write_frame(artifacts.TRIALS_CSV, export_trials(study, list(params.search_space)))
        write_ranked(artifacts.RANKED_JSON, RankedTrials(study=study.study_name, trials=tuple(ranked)))
        artifacts.write_frame(artifacts.PARETO_CSV, pareto_front(study, list(params.search_space)))
        artifacts.write_json(artifacts.STATISTICS_JSON, statistics(study))
        artifacts.write_json(artifacts.BEST_TRIAL_PARAMS, ranked[0].params if ranked else {})
        artifacts.write_json(artifacts.metrics_file("hpo"), {**summary(study), "storage": params.hpo.storage})
