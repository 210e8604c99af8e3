"""DVC stage `refit`: fit on all training rows, score the test rows and the baselines -> models/model.pt,
metrics/test.json, artifacts/refit/evaluation.json (what the report draws); the model goes to MLflow
as a servable pyfunc, registered."""

from hpopipe import artifacts
from hpopipe.config import load_params
from hpopipe.data import to_arrays
from hpopipe.entry import run
from hpopipe.handoffs.best import read_best
from hpopipe.handoffs.evaluation import write_evaluation
from hpopipe.handoffs.schema import read_schema
from hpopipe.refit import refit, save_model
from hpopipe.served import log_refit_model, registered_name
from hpopipe.tracking import git_commit, make_tracker


def main() -> None:
    params = load_params()
    best, schema = read_best(artifacts.BEST_CONFIG), read_schema(artifacts.SCHEMA)
    train_frame = artifacts.read_frame(artifacts.TRAIN)
    train, test = to_arrays(train_frame), to_arrays(artifacts.read_frame(artifacts.TEST))
    tracker = make_tracker()
    name = registered_name(params.refit, params.data)  # the run says which model it is
    with tracker.run(f"refit {name}", params={**best.params, "epochs": best.epochs}, tags={"stage": "refit"}):
        fitted = refit(best, params.refit, schema, train, test)
        tracker.log_history(fitted.result.history)
        tracker.log_metrics(fitted.tracked_metrics())
        log_refit_model(tracker, params, fitted, best, schema, train_frame, git_commit())
    save_model(artifacts.MODEL, fitted, best, schema)
    artifacts.write_json(artifacts.metrics_file("test"), fitted.metrics_file())
    write_evaluation(artifacts.REFIT_EVALUATION, fitted.evaluation(schema, test[1]))


if __name__ == "__main__":
    run(main)
