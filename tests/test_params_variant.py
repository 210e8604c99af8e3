"""The conftest helper that derives params.yaml variants: edits the parsed YAML, never a no-op."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import DROP, TINY_PARAMS, params_variant


def test_sets_and_drops_dotted_keys() -> None:
    text = params_variant(TINY_PARAMS, {"hpo.n_trials": 2, "refit.log_model": False, "hpo.pruner": DROP})
    raw = yaml.safe_load(text)
    assert raw["hpo"]["n_trials"] == 2 and raw["refit"] == {"epochs": "auto", "log_model": False}
    assert "pruner" not in raw["hpo"] and raw["train"] == yaml.safe_load(TINY_PARAMS)["train"]


@pytest.mark.parametrize("key", ["hpo.nope.n_trials", "nope.x", "hpo.n_trials.x"])
def test_a_key_whose_parent_is_missing_raises(key: str) -> None:
    with pytest.raises(KeyError, match="params_variant"):
        params_variant(TINY_PARAMS, {key: 1})


def test_dropping_a_missing_key_raises() -> None:
    with pytest.raises(KeyError, match="nothing to drop"):
        params_variant(TINY_PARAMS, {"hpo.nope": DROP})
