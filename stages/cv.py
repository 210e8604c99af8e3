"""DVC stage `cv`: k-fold CV of the top-k trials -> artifacts/cv/results.csv, metrics/cv.json."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.cv import cross_validate, summarise
from hpopipe.data import check_folds, to_arrays
from hpopipe.entry import run
from hpopipe.handoffs.cv import write_cv
from hpopipe.handoffs.ranked import read_ranked
from hpopipe.handoffs.schema import read_schema
from hpopipe.tracking import make_tracker
from hpopipe.training.loop import task_of


def main() -> None:
    x, y = to_arrays(artifacts.read_frame(artifacts.TRAIN))
    schema = read_schema(artifacts.SCHEMA)
    params = load_params().for_task(schema.task)  # hpo.metric: auto follows the data
    check_folds(y, schema, params.cv.folds, str(artifacts.TRAIN))
    ranked_file = read_ranked(artifacts.RANKED_JSON)
    task = task_of(schema.plain(), params.hpo.metric)
    tracker = make_tracker(nested_runs=params.cv.top_k * params.cv.folds, trainers=params.hpo.n_workers)
    study, ranked = ranked_file.study, ranked_file.trials
    settings = {"top_k": params.cv.top_k, "folds": params.cv.folds, "early_stop": params.cv.early_stop}
    with tracker.run(f"cv {study}", params=settings, tags={"stage": "cv", "study": study}):
        results = cross_validate(params, ranked, x, y, task, tracker, params.hpo.n_workers)
    artifacts.write_frame(artifacts.CV_RESULTS, results)
    write_cv(artifacts.metrics_file("cv"), summarise(results, params.hpo.metric))


if __name__ == "__main__":
    run(main)
