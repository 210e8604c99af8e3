"""Typed hand-offs: each file is written byte for byte as the untyped code wrote it, and a file
whose fields do not match fails when it is READ, in one line naming the file and the field.

The golden files in tests/data/handoffs were written by the untyped code (commit fbe9081) from
the inputs rebuilt here.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection

from hpopipe.config import DataConfig, Params, parse_params
from hpopipe.cv import summarise
from hpopipe.data import prepare, read_table
from hpopipe.errors import HpopipeError
from hpopipe.handoffs.best import read_best, write_best
from hpopipe.handoffs.cv import CvSummary, read_cv, write_cv
from hpopipe.handoffs.evaluation import RefitEvaluation, read_evaluation, write_evaluation
from hpopipe.handoffs.ranked import RankedTrials, read_ranked, write_ranked
from hpopipe.handoffs.schema import read_schema, write_schema
from hpopipe.select import best_config
from hpopipe.sweep.exports import ranked_trials
from tests.conftest import REPO, TINY_PARAMS

GOLDEN = REPO / "tests/data/handoffs"
CV = json.loads((GOLDEN / "cv_summaries.json").read_text())
SCHEMAS: dict[str, tuple[Path, str, dict[str, Any]]] = {
    "mixed": (GOLDEN / "mixed.csv", "label", {"max_categories": 3}),
    "breast_cancer": (REPO / "data/raw/breast_cancer.csv", "diagnosis", {}),
}


def golden_study(multi: bool) -> optuna.Study:
    """Four finished trials with typed params (a None and a bool among the choices)."""
    dists = {
        "lr": FloatDistribution(1e-3, 3e-2, log=True),
        "n_layers": IntDistribution(1, 2),
        "width": CategoricalDistribution([16, 32]),
        "act": CategoricalDistribution(["relu", None, True]),
    }
    rows = [
        (0.91, 5000.0, 0.0101, 1, 16, "relu"),
        (0.95, 9000.0, 0.0202, 2, 32, None),
        (0.93, 400.0, 0.003, 1, 32, True),
        (0.95, 12000.0, 0.005, 2, 16, "relu"),
    ]
    directions: list[StudyDirection | Literal["minimize", "maximize"]] = (
        ["maximize", "minimize"] if multi else ["maximize"]
    )
    study = optuna.create_study(study_name="golden", directions=directions)
    if multi:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["macro_f1", "n_params"])
    for i, (f1, size, lr, n_layers, width, act) in enumerate(rows):
        attrs: dict[str, Any] = {"best_epoch": i + 2, "checkpoint": None if i == 2 else f"ck{i}"}
        if not multi:
            attrs["position"] = [0, 1, 1, 3][i]
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "n_layers": n_layers, "width": width, "act": act},
                distributions=dists,
                user_attrs=attrs,
                **({"values": [f1, size]} if multi else {"value": f1}),
            )
        )
    return study


def golden_params(multi: bool) -> Params:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["data"]["path"] = "data/raw/breast_cancer.csv"
    if multi:
        del raw["hpo"]["metric"], raw["hpo"]["pruner"]
        raw["hpo"]["metrics"] = ["macro_f1", "n_params"]
        raw["cv"]["select"] = CV["multi_select"]
    raw["model"]["params"] = {"width": 8, "bias": True}
    return parse_params(raw)


def same_order(a: Any, b: Any) -> bool:
    """Equal, with the same key order at every level (what a pickled model bundle depends on)."""
    return bool(a == b and json.dumps(a) == json.dumps(b))


# --- the same bytes as before ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_file_is_written_as_before(tmp_path: Path, name: str) -> None:
    path, target, kw = SCHEMAS[name]
    golden = GOLDEN / f"schema_{name}.json"
    prepared = prepare(read_table(path), DataConfig(path=path, target=target, **kw), 7)
    write_schema(tmp_path / "fresh.json", prepared.schema)
    assert (tmp_path / "fresh.json").read_bytes() == golden.read_bytes()
    read_back = read_schema(golden)
    assert read_back == prepared.schema
    write_schema(tmp_path / "again.json", read_back)
    assert (tmp_path / "again.json").read_bytes() == golden.read_bytes()
    # What the study fingerprint hashes and the model bundle stores: the file's own mapping.
    assert same_order(read_back.plain(), json.loads(golden.read_text()))
    assert same_order(prepared.schema.plain(), json.loads(golden.read_text()))


@pytest.mark.parametrize("tag", ["single", "multi"])
def test_ranked_trials_file_is_written_as_before(tmp_path: Path, tag: str) -> None:
    golden = GOLDEN / f"ranked_{tag}.json"
    study = golden_study(tag == "multi")
    write_ranked(
        tmp_path / "fresh.json", RankedTrials(study=study.study_name, trials=tuple(ranked_trials(study)))
    )
    assert (tmp_path / "fresh.json").read_bytes() == golden.read_bytes()
    read_back = read_ranked(golden)
    assert read_back.trials == tuple(ranked_trials(study))
    assert next(t for t in read_back.trials if t.number == 2).params["act"] is True  # not 1
    write_ranked(tmp_path / "again.json", read_back)
    assert (tmp_path / "again.json").read_bytes() == golden.read_bytes()


@pytest.mark.parametrize("tag", ["single", "multi"])
def test_best_config_file_is_written_as_before(tmp_path: Path, tag: str) -> None:
    golden = GOLDEN / f"best_{tag}.yaml"
    ranked = read_ranked(GOLDEN / f"ranked_{tag}.json").trials
    best = best_config(golden_params(tag == "multi"), ranked, CvSummary.model_validate(CV[tag]))
    write_best(tmp_path / "fresh.yaml", best)
    assert (tmp_path / "fresh.yaml").read_bytes() == golden.read_bytes()
    read_back = read_best(golden)
    assert read_back == best
    write_best(tmp_path / "again.yaml", read_back)
    assert (tmp_path / "again.yaml").read_bytes() == golden.read_bytes()
    assert same_order(read_back.plain(), yaml.safe_load(golden.read_text()))


@pytest.mark.parametrize("tag", ["single", "multi"])
def test_cv_summary_round_trips(tmp_path: Path, tag: str) -> None:
    write_cv(tmp_path / "cv.json", CvSummary.model_validate(CV[tag]))
    assert json.loads((tmp_path / "cv.json").read_text()) == CV[tag]
    assert read_cv(tmp_path / "cv.json") == CvSummary.model_validate(CV[tag])


def _cv_results(trials: list[int], means: list[float]) -> pd.DataFrame:
    rows = [
        {"trial": t, "fold": f, "score": m + (0.01 if f else -0.01), "best_epoch": 3 + f}
        for t, m in zip(trials, means, strict=True)
        for f in (0, 1)
    ]
    return pd.DataFrame(rows)


def test_cv_metrics_are_keyed_by_rank_so_every_experiment_has_the_same_columns() -> None:
    """`dvc exp show` makes a column of every key: trial numbers as keys made columns per experiment."""
    one = summarise(_cv_results([10, 3, 7], [0.90, 0.95, 0.93]), "macro_f1").model_dump(exclude_none=True)
    two = summarise(_cv_results([0, 22, 5], [0.80, 0.70, 0.85]), "macro_f1").model_dump(exclude_none=True)

    def columns(tree: dict[str, Any], prefix: str = "") -> set[str]:
        out: set[str] = set()
        for key, value in tree.items():
            out |= columns(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
        return out

    assert columns(one) == columns(two)
    assert [one["ranks"][r]["trial"] for r in ("1", "2", "3")] == [3, 7, 10]  # best mean first
    assert [two["ranks"][r]["trial"] for r in ("1", "2", "3")] == [5, 0, 22]
    rmse = summarise(_cv_results([1, 2], [0.5, 0.3]), "rmse")  # lower is better
    assert [c.trial for c in rmse.candidates] == [2, 1] and rmse.best_trial == 2


def test_cv_ranks_break_ties_by_trial_number() -> None:
    tied = summarise(_cv_results([9, 4], [0.9, 0.9]), "macro_f1")
    assert [c.trial for c in tied.candidates] == [4, 9]


# --- a mismatched file fails when it is read ---------------------------------------------------------


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def tamper_json(source: Path, target: Path, change: Callable[[Any], None]) -> Path:
    payload = json.loads(source.read_text())
    change(payload)
    target.write_text(json.dumps(payload))
    return target


def tamper_yaml(source: Path, target: Path, change: Callable[[Any], None]) -> Path:
    payload = yaml.safe_load(source.read_text())
    change(payload)
    target.write_text(yaml.safe_dump(payload, sort_keys=False))
    return target


def one_line_error(read: Callable[[Path], Any], path: Path) -> Iterator[str]:
    with pytest.raises(HpopipeError) as info:
        read(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    yield message


CASES = [
    # (reader, golden file, tamper, field the message names)
    (
        read_schema,
        "schema_mixed.json",
        lambda s: rename(s, "feature_columns", "features"),
        "'feature_columns'",
    ),
    (read_schema, "schema_mixed.json", lambda s: s.pop("n_rows"), "'n_rows'"),
    (
        read_schema,
        "schema_mixed.json",
        lambda s: rename(s["numeric"]["size"], "fill", "median"),
        "numeric.size.",
    ),
    (read_schema, "schema_mixed.json", lambda s: s.update(task="ranking"), "'task'"),
    (
        read_ranked,
        "ranked_single.json",
        lambda r: rename(r["trials"][1], "params", "parameters"),
        "trials.1.",
    ),
    (read_ranked, "ranked_multi.json", lambda r: r.pop("study"), "'study'"),
    (read_best, "best_single.yaml", lambda b: rename(b, "epochs", "n_epochs"), "epochs"),
    (read_cv, "cv_single.json", lambda c: rename(c["ranks"]["1"], "trial", "number"), "ranks.1."),
    (read_cv, "cv_single.json", lambda c: rename(c["ranks"], "2", "3"), "ranks must be numbered 1 to 2"),
    (read_cv, "cv_single.json", lambda c: c.update(trials=c.pop("ranks")), "'ranks'"),
    (read_best, "best_multi.yaml", lambda b: b["source"].pop("trial"), "'source.trial'"),
    (read_best, "best_single.yaml", lambda b: rename(b["train"], "lr", "learning_rate"), "train."),
]


@pytest.mark.parametrize(("read", "name", "change", "field"), CASES)
def test_renamed_or_missing_field_fails_at_read(
    tmp_path: Path, read: Callable[[Path], Any], name: str, change: Callable[[Any], None], field: str
) -> None:
    tamper = tamper_yaml if name.endswith(".yaml") else tamper_json
    if name == "cv_single.json":  # the golden file holds several summaries: one of them as a file
        (tmp_path / "golden_cv.json").write_text(json.dumps(CV["single"]))
        path = tamper(tmp_path / "golden_cv.json", tmp_path / name, change)
    else:
        path = tamper(GOLDEN / name, tmp_path / name, change)
    for message in one_line_error(read, path):
        assert field in message
        if name == "schema_mixed.json" and field == "'feature_columns'":
            assert "field 'features': Extra inputs are not permitted" in message


def test_a_file_that_is_not_a_mapping_fails_at_read(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text("[1, 2]")
    for message in one_line_error(read_schema, path):
        assert "(top level)" in message


def test_select_refuses_a_source_field_refit_would_not_know(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new entry in the record of why a trial was chosen fails in select, before it writes."""
    from hpopipe.sweep import pareto

    choose = pareto.choose
    monkeypatch.setattr(
        pareto, "choose", lambda p, cv: (choose(p, cv)[0], {**choose(p, cv)[1], "score": 1.0})
    )
    ranked = read_ranked(GOLDEN / "ranked_multi.json").trials
    with pytest.raises(HpopipeError, match=r"^select: the best configuration: field 'source.score'"):
        best_config(golden_params(True), ranked, CvSummary.model_validate(CV["multi"]))


def test_bundle_mappings_share_no_objects() -> None:
    """The model bundle pickles what a reader of each file gets: the same bytes as before."""
    best = read_best(GOLDEN / "best_multi.yaml")
    schema = read_schema(GOLDEN / "schema_mixed.json")
    as_read = yaml.safe_load((GOLDEN / "best_multi.yaml").read_text())
    assert pickle.dumps(best.plain()) == pickle.dumps(as_read)
    schema_as_read = json.loads((GOLDEN / "schema_mixed.json").read_text())
    assert pickle.dumps(schema.plain()) == pickle.dumps(schema_as_read)


def test_refit_evaluation_round_trips_and_refuses_a_short_prediction_list(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    history = [{"epoch": 1.0, "train_loss": 0.5}]
    written = RefitEvaluation(
        kind="classification", actual=["a", "b"], predicted=["a", "a"], classes=["a", "b"], history=history
    )
    write_evaluation(path, written)
    assert read_evaluation(path) == written
    regression = RefitEvaluation(
        kind="regression", actual=[1.5, 2.0], predicted=[1.0, 2.5], classes=[], history=[]
    )
    write_evaluation(path, regression)
    assert read_evaluation(path).predicted == [1.0, 2.5]
    broken = json.loads(path.read_text()) | {"predicted": [1.0]}
    path.write_text(json.dumps(broken))
    with pytest.raises(HpopipeError, match=r"evaluation\.json: .*2 actual values but 1 predictions"):
        read_evaluation(path)
