"""DVC stage `refit`: fit on all training rows, score the test rows -> models/model.pt, metrics/test.json."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.data import to_arrays
from hpopipe.entry import run
from hpopipe.handoffs.best import read_best
from hpopipe.handoffs.schema import read_schema
from hpopipe.refit import refit, save_model
from hpopipe.tracking import make_tracker


def main() -> None:
    params = load_params()
    best = read_best(artifacts.BEST_CONFIG)
    schema = read_schema(artifacts.SCHEMA)
    train = to_arrays(artifacts.read_frame(artifacts.TRAIN))
    tracker = make_tracker()
    with tracker.run("refit", params={**best.params, "epochs": best.epochs}):
        fitted = refit(best, params.refit, schema, train, to_arrays(artifacts.read_frame(artifacts.TEST)))
        tracker.log_history(fitted.result.history)
        tracker.log_metrics({f"test_{k}": v for k, v in fitted.test_metrics.items()})
        if params.refit.log_model:
            tracker.log_model(fitted.result.model.cpu(), train[0][:5], params.refit.registered_model_name)
    save_model(artifacts.MODEL, fitted, best, schema)
    artifacts.write_json(artifacts.metrics_file("test"), fitted.test_metrics)


if __name__ == "__main__":
    run(main)
