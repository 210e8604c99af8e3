"""params.yaml validation: every mistake is one HpopipeError line that names the key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from hpopipe.config import (
    CLASSIFICATION_METRICS,
    MAX_TRIALS,
    MAXIMIZED_METRICS,
    REGRESSION_METRICS,
    Params,
    load_params,
    parse_params,
)
from hpopipe.data import for_data, read_table
from hpopipe.errors import HpopipeError

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = REPO / "params.yaml"


@pytest.fixture
def raw() -> dict[str, Any]:
    """A fresh, mutable copy of the repo's own params.yaml (known to be valid)."""
    return yaml.safe_load(REPO_PARAMS.read_text(encoding="utf-8"))


def setting(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets ``a.b.c`` to ``value`` in a raw params mapping."""

    def apply(raw: dict[str, Any]) -> None:
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    return apply


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(HpopipeError) as info:
        parse_params(raw)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    assert message.startswith("params.yaml: "), message
    return message


# --- the repo's own file -------------------------------------------------------------------------


def test_repo_params_yaml_validates() -> None:
    params = load_params(REPO_PARAMS)
    assert isinstance(params, Params)
    table = read_table(REPO / params.data.path)
    assert params.data.target in table.columns  # its table is in the repo
    assert params.search_space
    params = for_data(params, table)  # hpo.metric: auto, resolved as the stages resolve it
    assert params.hpo.direction == ("maximize" if params.hpo.metric in MAXIMIZED_METRICS else "minimize")
    assert params.model.label in {"mlp", "resnet"} or params.model.factory is not None


def test_parse_params_matches_load_params(raw: dict[str, Any]) -> None:
    assert parse_params(copy.deepcopy(raw)) == load_params(REPO_PARAMS)


def test_params_are_frozen(raw: dict[str, Any]) -> None:
    params = parse_params(raw)
    with pytest.raises(pydantic.ValidationError):
        params.seed = 1
    with pytest.raises(pydantic.ValidationError):
        params.hpo.n_trials = 1


@pytest.mark.parametrize("value", [None, [], ["seed", 1], "seed: 1", 42])
def test_top_level_must_be_a_mapping(value: Any) -> None:
    with pytest.raises(HpopipeError, match="expected a mapping at the top level"):
        parse_params(value)


# --- unknown keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "where"),
    [
        ("sed", "sed"),
        ("hpo.n_trail", "hpo.n_trail"),
        ("data.targte", "data.targte"),
        ("train.learning_rate", "train.learning_rate"),
        ("hpo.sampler.nmae", "hpo.sampler.nmae"),
        ("hpo.pruner.n_warmup", "hpo.pruner.n_warmup"),
    ],
)
def test_unknown_key_is_named(raw: dict[str, Any], dotted: str, where: str) -> None:
    setting(dotted, 1)(raw)
    assert error_of(raw) == f"params.yaml: {where}: unknown key (typo?)"


def test_unknown_key_in_a_spec_is_named(raw: dict[str, Any]) -> None:
    raw["search_space"]["dropout"] = {"type": "uniform", "min": 0.0, "max": 0.5, "stpe": 0.1}
    assert error_of(raw) == "params.yaml: search_space.dropout.stpe: unknown key (typo?)"


def test_several_problems_are_counted_on_one_line(raw: dict[str, Any]) -> None:
    raw["sed"] = 1
    raw["hpo"]["n_trail"] = 1
    message = error_of(raw)
    assert message.endswith("(and 1 more problem)")


# --- n_trials -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("ten", "valid integer"),
        (0, "greater than 0"),
        (-3, "greater than 0"),
        (1.5, "valid integer"),
        (True, "valid integer"),
        ("10", "valid integer"),
        (10.0, "valid integer"),
        (10**9, f"less than or equal to {MAX_TRIALS}"),
        (float("nan"), ""),
        (None, "valid integer"),
    ],
)
def test_bad_n_trials(raw: dict[str, Any], value: Any, fragment: str) -> None:
    raw["hpo"]["n_trials"] = value
    message = error_of(raw)
    assert message.startswith("params.yaml: hpo.n_trials: "), message
    assert fragment in message


@pytest.mark.parametrize("value", [1, 10, MAX_TRIALS])
def test_good_n_trials(raw: dict[str, Any], value: Any) -> None:
    raw["hpo"]["n_trials"] = value
    params = parse_params(raw)
    assert params.hpo.n_trials == int(value)
    assert isinstance(params.hpo.n_trials, int)


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("seed", "abc"),
        ("seed", 1.5),
        ("train.max_epochs", 0),
        ("train.patience", "many"),
        ("train.device", "tpu"),
        ("train.min_delta", -0.1),
        ("train.checkpoint_every_s", -1),
        ("train.checkpoint_every_s", "often"),
        ("hpo.timeout", 0),
        ("hpo.sampler.name", "bayes"),
        ("hpo.pruner.name", "sometimes"),
        ("cv.folds", 1),
        ("refit.epochs", 0),
        ("data.task", "clustering"),
    ],
)
def test_wrong_type_or_range_names_the_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    setting(dotted, value)(raw)
    assert error_of(raw).startswith(f"params.yaml: {dotted}: ")


@pytest.mark.parametrize(("dotted", "value"), [("refit.epochs", "max"), ("model.params", {"a": {"b": 1}})])
def test_union_field_error_names_the_key_as_written(raw: dict[str, Any], dotted: str, value: Any) -> None:
    setting(dotted, value)(raw)
    where = dotted if dotted == "refit.epochs" else "model.params.a"
    assert error_of(raw).startswith(f"params.yaml: {where}: ")


def test_key_with_newline_still_gives_one_line(raw: dict[str, Any]) -> None:
    raw["a\nb"] = 1
    error_of(raw)


# --- search space -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "spec", "fragment"),
    [
        ("dropout", {"type": "uniform", "min": 0.5, "max": 0.1}, "min (0.5) is greater than max (0.1)"),
        ("lr", {"type": "log_uniform", "min": 0.1, "max": 0.01}, "min (0.1) is greater than max (0.01)"),
        ("n_layers", {"type": "int_uniform", "min": 5, "max": 1}, "min (5) is greater than max (1)"),
        ("lr", {"type": "log_uniform", "min": 0, "max": 0.1}, "log_uniform needs min > 0"),
        ("lr", {"type": "log_uniform", "min": -1e-3, "max": 0.1}, "log_uniform needs min > 0"),
        ("n_layers", {"type": "int_uniform", "min": 0, "max": 4, "log": True}, "log needs min > 0"),
        ("n_layers", {"type": "int_uniform", "min": -2, "max": 4, "log": True}, "log needs min > 0"),
        (
            "n_layers",
            {"type": "int_uniform", "min": 1, "max": 4, "log": True, "step": 2},
            "cannot be combined",
        ),
        ("dropout", {"type": "uniform", "min": 0.0, "max": float("inf")}, "finite"),
        ("dropout", {"type": "uniform", "min": float("nan"), "max": 1.0}, "finite"),
    ],
)
def test_bad_range(raw: dict[str, Any], name: str, spec: dict[str, Any], fragment: str) -> None:
    raw["search_space"][name] = spec
    message = error_of(raw)
    assert message.startswith(f"params.yaml: search_space.{name}: "), message
    assert fragment in message


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"type": "choice", "values": []}, "search_space.width.values"),
        ({"type": "uniform", "min": 0.0, "max": 1.0, "step": 0}, "search_space.width.step"),
        ({"type": "int_uniform", "min": 1, "max": 4, "step": -1}, "search_space.width.step"),
        ({"type": "int_uniform", "min": 1.5, "max": 4}, "search_space.width.min"),
        ({"type": "lognormal", "min": 0.0, "max": 1.0}, "search_space.width.type"),
        ({"min": 0.0}, "search_space.width"),  # no `type`, and no W&B distribution follows from `min`
    ],
)
def test_bad_spec_is_named(raw: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    raw["search_space"]["width"] = spec
    assert error_of(raw).startswith(f"params.yaml: {where}: ")


def test_unknown_spec_type_lists_the_known_ones(raw: dict[str, Any]) -> None:
    raw["search_space"]["width"] = {"type": "lognormal", "min": 0.0, "max": 1.0}
    message = error_of(raw)
    assert "'lognormal'" in message
    for known in ("log_uniform", "uniform", "int_uniform", "choice", "normal"):
        assert known in message


def test_degenerate_ranges_are_allowed(raw: dict[str, Any]) -> None:
    raw["model"] = {"factory": "my_pkg.models:build_net"}  # reads any name (test_routes for the check)
    raw["search_space"] = {
        "a": {"type": "uniform", "min": 0.3, "max": 0.3},
        "b": {"type": "int_uniform", "min": 2, "max": 2},
        "c": {"type": "log_uniform", "min": 1e-3, "max": 1e-3},
    }
    assert set(parse_params(raw).search_space) == {"a", "b", "c"}


def test_empty_search_space(raw: dict[str, Any]) -> None:
    raw["search_space"] = {}
    assert error_of(raw).startswith("params.yaml: search_space: ")


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "a..b", "model.", ".lr", "", "lr\n", "é"])
def test_non_identifier_parameter_name(raw: dict[str, Any], name: str) -> None:
    raw["search_space"][name] = {"type": "choice", "values": [1]}
    message = error_of(raw)
    assert message.startswith("params.yaml: search_space: ")
    assert repr(name) in message
    assert "Python identifier" in message


def test_identifier_parameter_names_pass(raw: dict[str, Any]) -> None:
    raw["model"] = {"factory": "my_pkg.models:build_net"}  # reads any name (test_routes for the check)
    raw["search_space"]["_private"] = {"type": "choice", "values": ["a", "b"]}
    raw["search_space"]["snake_case_2"] = {"type": "int_uniform", "min": 1, "max": 8, "log": True}
    params = parse_params(raw)
    assert params.search_space["_private"].values == ["a", "b"]  # type: ignore[union-attr]


# --- metric, task, direction --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "task", "needs"),
    [(m, "classification", "regression") for m in REGRESSION_METRICS]
    + [(m, "regression", "classification") for m in CLASSIFICATION_METRICS],
)
def test_metric_must_fit_explicit_task(raw: dict[str, Any], metric: str, task: str, needs: str) -> None:
    raw["data"]["task"] = task
    raw["hpo"]["metric"] = metric
    message = error_of(raw)
    assert "hpo.metric" in message and "data.task" in message
    assert f"{metric!r} is for {needs}" in message


@pytest.mark.parametrize(
    ("metric", "task", "direction"),
    [
        ("macro_f1", "classification", "maximize"),
        ("accuracy", "classification", "maximize"),
        ("roc_auc", "classification", "maximize"),
        ("log_loss", "classification", "minimize"),
        ("rmse", "regression", "minimize"),
        ("mae", "regression", "minimize"),
        ("r2", "regression", "maximize"),
    ],
)
def test_metric_direction(raw: dict[str, Any], metric: str, task: str, direction: str) -> None:
    for declared in (task, "auto"):
        raw["data"]["task"] = declared
        raw["hpo"]["metric"] = metric
        assert parse_params(raw).hpo.direction == direction


def test_unknown_metric(raw: dict[str, Any]) -> None:
    raw["hpo"]["metric"] = "f1"
    message = error_of(raw)
    assert message.startswith("params.yaml: hpo.metric: ")
    assert "macro_f1" in message


# --- model ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        {"name": "mlp", "factory": "pkg.mod:build"},
        {},
        {"params": {"width": 3}},
        {"name": None, "factory": None},
    ],
)
def test_model_needs_exactly_one_source(raw: dict[str, Any], model: dict[str, Any]) -> None:
    raw["model"] = model
    message = error_of(raw)
    assert message.startswith("params.yaml: model: ")
    assert "model.name" in message and "model.factory" in message


@pytest.mark.parametrize(
    "factory", ["pkg.mod", "pkg.mod:a:b", "pkg mod:build", ":build", "pkg.mod:", "1pkg:build"]
)
def test_malformed_factory(raw: dict[str, Any], factory: str) -> None:
    raw["model"] = {"factory": factory}
    message = error_of(raw)
    assert message.startswith("params.yaml: model: ")
    assert "package.module:function" in message


def test_wellformed_factory(raw: dict[str, Any]) -> None:
    raw["model"] = {"factory": "my_pkg.models:build_net", "params": {"depth": 3}}
    model = parse_params(raw).model
    assert model.factory == "my_pkg.models:build_net"
    assert model.name is None
    assert model.label == "build_net"


def test_unknown_model_name(raw: dict[str, Any]) -> None:
    raw["model"]["name"] = "transformer"
    assert error_of(raw).startswith("params.yaml: model.name: ")


# --- data ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["data.txt", "data", "data.csv.gz", "data.xlsx", ""])
def test_data_path_extension(raw: dict[str, Any], path: str) -> None:
    raw["data"]["path"] = path
    message = error_of(raw)
    assert message.startswith("params.yaml: data.path: ")
    assert ".csv" in message and ".parquet" in message


@pytest.mark.parametrize("path", ["x.csv", "X.CSV", "x.parquet", "x.pq", "sub/dir/x.Parquet"])
def test_data_path_good_extension(raw: dict[str, Any], path: str) -> None:
    raw["data"]["path"] = path
    assert parse_params(raw).data.path == Path(path)


@pytest.mark.parametrize("key", ["test_size", "val_size"])
@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0, -0.2, 1.5, "x"])
def test_split_fractions_must_lie_in_open_unit_interval(raw: dict[str, Any], key: str, value: Any) -> None:
    raw["data"][key] = value
    assert error_of(raw).startswith(f"params.yaml: data.{key}: ")


def test_empty_target(raw: dict[str, Any]) -> None:
    raw["data"]["target"] = ""
    assert error_of(raw).startswith("params.yaml: data.target: ")


def test_missing_required_section(raw: dict[str, Any]) -> None:
    del raw["data"]
    assert error_of(raw).startswith("params.yaml: data: ")


# --- load_params: the file ------------------------------------------------------------------------


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(HpopipeError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: file not found"


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(HpopipeError, match="cannot read"):
        load_params(tmp_path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("seed: 1\ndata:\n  path: x.csv\n  target: y\n   bad: [\n", 5),
        ("seed: 1\nmodel:\n  name: mlp\n    params: 2\n", 4),
        ("seed: 1\ndata:\n\tpath: x.csv\n", 3),
    ],
)
def test_load_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HpopipeError) as info:
        load_params(path)
    message = str(info.value)
    assert message == f"{path}: not valid YAML at line {line}"


@pytest.mark.parametrize("where", ["top", "nested"])
def test_load_refuses_python_objects(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "PWNED"
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    text = tag if where == "top" else REPO_PARAMS.read_text(encoding="utf-8") + f"\nevil: {tag}\n"
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HpopipeError, match=r"tag '!!python/object/apply:os.system' at line \d+ is refused"):
        load_params(path)
    assert not marker.exists()


def test_load_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("", encoding="utf-8")
    with pytest.raises(HpopipeError, match="expected a mapping at the top level"):
        load_params(path)


def test_load_names_the_file_in_validation_errors(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["hpo"]["n_trail"] = 3
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(HpopipeError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: hpo.n_trail: unknown key (typo?)"


def test_load_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: 1\ndata: \xff\xfe\n")
    with pytest.raises(HpopipeError, match=str(path)):
        load_params(path)


# --- YAML-level problems safe_load would let through or report vaguely ------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "seed: 1\nsearch_space:\n  lr: {type: uniform, min: 0, max: 1}\n"
            "  lr: {type: choice, values: [1]}\n",
            "search_space.lr: duplicate key at line 4 (first at line 3)",
        ),
        ("seed: 1\nseed: 2\n", "seed: duplicate key at line 2 (first at line 1)"),
        ("a: [{b: 1, b: 2}]\n", "a[0].b: duplicate key at line 1"),
        ("seed: !!python/name:os.system\n", "seed: tag '!!python/name:os.system' at line 1 is refused"),
        ("hpo: {n_trials: !custom 3}\n", "hpo.n_trials: tag '!custom' at line 1 is refused"),
        ("!!python/object/apply:os.getcwd []\n", "(top level): tag '!!python/object/apply:os.getcwd'"),
    ],
)
def test_load_names_duplicate_keys_and_unsafe_tags(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HpopipeError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        'a: {1: x, "1": y}\n',  # an int and a string key are two keys
        "x: &x {a: 1}\ny: {<<: *x, b: 2}\n",  # merge keys are not duplicates
        "a: &a [1, 2]\nb: [*a, *a]\n",  # an alias used twice is not a duplicate
    ],
)
def test_load_allows_distinct_keys_merges_and_aliases(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HpopipeError, match="Field required"):  # gets as far as the schema
        load_params(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("deep: " + "[" * 5000 + "]" * 5000 + "\n", "nested more than 32 levels deep at line 1"),
        ("deep: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n", "nested more than 32 levels deep at line 1"),
        ("".join(" " * i + "a:\n" for i in range(40)), "nested more than 32 levels deep at line 33"),
        ("seed: 1\n" + ("# " + "x" * 98 + "\n") * 100_000, "more than 1,000,000 bytes"),
        ("seed: [" + "1, " * 2_000_000 + "1]\n", "more than 1,000,000 bytes"),
    ],
    ids=["5000-deep-list", "5000-deep-map", "40-deep-block", "10mb-comments", "6mb-list"],
)
def test_deep_or_huge_params_are_refused_quickly(tmp_path: Path, text: str, message: str) -> None:
    """PyYAML composes recursively (5,000 levels were a 3,000-line RecursionError) and a 10 MB file
    took 88 s to validate: both are refused by limits, in well under a second."""
    import time

    path = tmp_path / "params.yaml"
    path.write_text(text)
    start = time.perf_counter()
    with pytest.raises(HpopipeError) as err:
        load_params(path)
    assert time.perf_counter() - start < 2.0
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_params_just_under_the_limits_still_load(tmp_path: Path, raw: dict[str, Any]) -> None:
    raw["model"]["params"] = {"note": "x" * 900_000}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).model.params["note"] == "x" * 900_000


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("lr", {"type": "choice", "values": [0.001, 1]}),  # ints and floats are one type: numbers
        ("dropout_hidden", {"type": "uniform", "min": 0.0, "max": 0.3}),  # not a size despite 'hidden'
        ("width", {"type": "uniform", "min": 16, "max": 64}),
        ("n_layers", {"type": "choice", "values": [1, 2.0]}),
        ("batch_size", {"type": "int_uniform", "min": 1, "max": 256, "log": True}),
        ("activation", {"type": "choice", "values": ["relu", "gelu"]}),
        ("bias", {"type": "choice", "values": [True, False]}),
    ],
)
def test_sizes_and_choices_that_train_sensibly_pass(
    raw: dict[str, Any], name: str, spec: dict[str, Any]
) -> None:
    raw["model"] = {"factory": "my_pkg.models:build_net"}  # reads any name (test_routes for the check)
    raw["search_space"][name] = spec
    parse_params(raw)


@pytest.mark.parametrize(
    ("name", "spec", "fragment"),
    [
        ("batch_size", {"type": "choice", "values": [0, -5]}, "search_space.batch_size: sizes the model"),
        ("hidden_size", {"type": "normal", "mu": 2, "sigma": 1}, "search_space.hidden_size: sizes the model"),
        ("n_heads", {"type": "uniform", "min": 0.5, "max": 4}, "must start at 1 or more, not 0.5"),
        (
            "width",
            {"type": "choice", "values": [16, "32"]},
            "search_space.width.values: [16, '32'] mixes numbers and strings",
        ),
        (
            "act",
            {"type": "choice", "values": ["relu", "relu"]},
            "search_space.act.values: 'relu' is listed twice",
        ),
        ("flag", {"type": "choice", "values": [True, 1]}, "mixes booleans and numbers"),
    ],
)
def test_sizes_below_one_and_mixed_or_repeated_choices_are_refused(
    raw: dict[str, Any], name: str, spec: dict[str, Any], fragment: str
) -> None:
    raw["search_space"][name] = spec
    with pytest.raises(HpopipeError) as err:
        parse_params(raw)
    assert fragment in str(err.value)
