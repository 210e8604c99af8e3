"""DVC stage `cleanup`: delete trial checkpoints of all but the best trials -> metrics/cleanup.json."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.entry import run
from hpopipe.handoffs.ranked import read_ranked
from hpopipe.sweep.storage import resolve, sweep_lock
from hpopipe.training.checkpoints import cleanup_study


def main() -> None:
    params = load_params()
    ranked = read_ranked(artifacts.RANKED_JSON)
    trials = [t.plain() for t in ranked.trials]
    # Under the study's sweep lock: another DVC experiment's sweep may be writing checkpoints here.
    with sweep_lock(resolve(params.hpo.storage), ranked.study):
        report = cleanup_study(params.hpo.checkpoint_dir, ranked.study, trials, params.cleanup.keep_best)
    artifacts.write_json(artifacts.metrics_file("cleanup"), report)


if __name__ == "__main__":
    run(main)
