"""hpopipe.names: the one check for a user-given name, and where it is wired in."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.names import MAX_NAME_LENGTH, check_name
from hpopipe.tracking import experiment_name, make_tracker
from tests.conftest import TINY_PARAMS


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "must not be empty"),
        ("a/b", "contains '/'"),
        ("a\\b", "contains '\\\\'"),
        ("..", "contains '..'"),
        ("a..b", "contains '..'"),
        ("a\x00b", "control character '\\x00'"),
        ("a\nb", "control character '\\n'"),
        ("a\x7fb", "control character '\\x7f'"),
        (" x", "whitespace"),
        ("x\t", "control character"),
        ("x ", "whitespace"),
        ("x" * 600, "is 600 characters long; at most 128"),
        (42, "must be text, got int"),
    ]
    + [(f"a{c}b", f"shell metacharacter {c!r}") for c in ";|&$`<>*?(){}[]!'\""],
)
def test_bad_names_are_refused_in_one_line(value: Any, fragment: str) -> None:
    with pytest.raises(HpopipeError) as info:
        check_name(value, "--study")
    message = str(info.value)
    assert message.startswith("--study: ") and fragment in message, message
    assert "\n" not in message and len(message) < 200


@pytest.mark.parametrize(
    "value", ["hpopipe", "mlp-1a2b3c4d", "My experiment", "v1.2_final", "x" * MAX_NAME_LENGTH]
)
def test_good_names_pass_unchanged(value: str) -> None:
    assert check_name(value, "--study") == value


def test_registered_model_name_is_checked_and_may_be_null() -> None:
    raw = yaml.safe_load(TINY_PARAMS)
    raw["refit"]["registered_model_name"] = None
    assert parse_params(raw).refit.registered_model_name is None
    raw["refit"]["registered_model_name"] = "../model"
    with pytest.raises(
        HpopipeError, match=r"^params.yaml: refit.registered_model_name: '../model' contains '/'"
    ):
        parse_params(raw)


def test_experiment_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPOPIPE_EXPERIMENT", raising=False)
    assert experiment_name() == "hpopipe"
    monkeypatch.setenv("HPOPIPE_EXPERIMENT", "team sweep")
    assert experiment_name() == "team sweep"
    monkeypatch.setenv("HPOPIPE_EXPERIMENT", "a;b")
    # Refused even with tracking off (conftest switches it off): the mistake shows before training.
    with pytest.raises(HpopipeError, match=r"^HPOPIPE_EXPERIMENT: 'a;b' contains the shell metacharacter"):
        make_tracker()
