"""DVC stage `hpo`: the Optuna sweep -> artifacts/hpo/{study.db,trials.csv,ranked_trials.json}, metrics."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.entry import run
from hpopipe.study import export_trials, ranked_trials, summary, sweep
from hpopipe.tracking import make_tracker


def main() -> None:
    params = load_params()
    study = sweep(
        params,
        artifacts.read_frame(artifacts.TRAIN),
        artifacts.read_json(artifacts.SCHEMA),
        artifacts.STUDY_DB,
        make_tracker(),
    )
    artifacts.write_frame(artifacts.TRIALS_CSV, export_trials(study, list(params.search_space)))
    artifacts.write_json(artifacts.RANKED_JSON, {"study": study.study_name, "trials": ranked_trials(study)})
    artifacts.write_json(artifacts.metrics_file("hpo"), summary(study))


if __name__ == "__main__":
    run(main)
