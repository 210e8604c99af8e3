"""DVC stage `select`: best configuration by CV mean -> artifacts/best/{config.yaml,params.json}."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.entry import run
from hpopipe.handoffs.best import write_best
from hpopipe.handoffs.cv import read_cv
from hpopipe.handoffs.ranked import read_ranked
from hpopipe.handoffs.schema import read_schema
from hpopipe.select import best_config


def main() -> None:
    params = load_params().for_task(read_schema(artifacts.SCHEMA).task)  # hpo.metric: auto
    best = best_config(
        params,
        read_ranked(artifacts.RANKED_JSON).trials,
        read_cv(artifacts.metrics_file("cv")),
    )
    write_best(artifacts.BEST_CONFIG, best)
    artifacts.write_json(artifacts.BEST_PARAMS, best.params)


if __name__ == "__main__":
    run(main)
