"""DVC stage `select`: best configuration by CV mean -> artifacts/best/{config.yaml,params.json}."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.entry import run
from hpopipe.select import best_config


def main() -> None:
    params = load_params()
    best = best_config(
        params,
        artifacts.read_json(artifacts.RANKED_JSON)["trials"],
        artifacts.read_json(artifacts.metrics_file("cv")),
    )
    artifacts.write_yaml(artifacts.BEST_CONFIG, best)
    artifacts.write_json(artifacts.BEST_PARAMS, best["params"])


if __name__ == "__main__":
    run(main)
