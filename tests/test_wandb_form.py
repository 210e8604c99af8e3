"""Every W&B distribution, in params.yaml's per-parameter form, samples what W&B's own sampler does.

The reference is W&B's sampler as documented in its engine (the ``sweeps`` package's
``params.py``: each distribution's percentage-point function), re-derived here with scipy so the
test does not share hpopipe's arithmetic: the values W&B can draw are the values hpopipe samples,
exactly where the mapping says exact, within the stated approximation otherwise.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from scipy import stats

from hpopipe.config import IntUniformSpec, parse_params
from hpopipe.config.wandb_form import DISTRIBUTIONS, convert, from_wandb
from hpopipe.errors import HpopipeError
from hpopipe.space.suggest import suggest
from tests.conftest import REPO

# One example of every distribution, in W&B's words.
EXAMPLES: dict[str, dict[str, Any]] = {
    "constant": {"distribution": "constant", "value": 0.1},
    "categorical": {"distribution": "categorical", "values": [16, 32, 64]},
    "categorical_w_probabilities": {
        "distribution": "categorical_w_probabilities",
        "values": ["a", "b"],
        "probabilities": [0.2, 0.8],
    },
    "int_uniform": {"distribution": "int_uniform", "min": 2, "max": 9},
    "uniform": {"distribution": "uniform", "min": -1.5, "max": 2.0},
    "q_uniform": {"distribution": "q_uniform", "min": 0.0, "max": 0.5, "q": 0.05},
    "log_uniform": {"distribution": "log_uniform", "min": -9.2, "max": -3.5},
    "log_uniform_values": {"distribution": "log_uniform_values", "min": 1e-4, "max": 3e-2},
    "q_log_uniform": {"distribution": "q_log_uniform", "q": 1, "min": 3.47, "max": 5.55},
    "q_log_uniform_values": {"distribution": "q_log_uniform_values", "q": 8, "min": 8, "max": 256},
    "inv_log_uniform": {"distribution": "inv_log_uniform", "min": 2.3, "max": 9.2},
    "inv_log_uniform_values": {"distribution": "inv_log_uniform_values", "min": 1e-4, "max": 1e-1},
    "normal": {"distribution": "normal", "mu": 0.5, "sigma": 0.1},
    "q_normal": {"distribution": "q_normal", "mu": 10, "sigma": 2, "q": 1},
    "log_normal": {"distribution": "log_normal", "mu": -5.0, "sigma": 0.5},
    "q_log_normal": {"distribution": "q_log_normal", "mu": 4.0, "sigma": 0.3, "q": 1},
    "beta": {"distribution": "beta", "a": 2, "b": 5},
    "q_beta": {"distribution": "q_beta", "a": 2, "b": 2, "q": 0.1},
}


def wandb_ppf(spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """W&B's value at quantile ``x`` of each numeric distribution (its engine's definitions)."""
    d, q = spec["distribution"], spec.get("q", 1.0)

    def rounded(v: np.ndarray) -> np.ndarray:
        r = np.round(v / q) * q
        return r.astype(int) if isinstance(q, int) else r

    lo: Any = spec.get("min")
    hi: Any = spec.get("max")
    mu, sigma = spec.get("mu", 0.0), spec.get("sigma", 1.0)
    table = {
        "int_uniform": lambda: stats.randint.ppf(x, lo, hi + 1).astype(int),
        "uniform": lambda: stats.uniform.ppf(x, lo, hi - lo),
        "q_uniform": lambda: rounded(stats.uniform.ppf(x, lo, hi - lo)),
        "log_uniform": lambda: np.exp(stats.uniform.ppf(x, lo, hi - lo)),
        "log_uniform_values": lambda: np.exp(stats.uniform.ppf(x, np.log(lo), np.log(hi) - np.log(lo))),
        "q_log_uniform": lambda: rounded(np.exp(stats.uniform.ppf(x, lo, hi - lo))),
        "q_log_uniform_values": lambda: rounded(np.exp(stats.uniform.ppf(x, np.log(lo), np.log(hi / lo)))),
        "inv_log_uniform": lambda: np.exp(-stats.uniform.ppf(1 - x, lo, hi - lo)),
        "inv_log_uniform_values": lambda: np.exp(-stats.uniform.ppf(1 - x, -np.log(hi), np.log(hi / lo))),
        "normal": lambda: stats.norm.ppf(x, mu, sigma),
        "q_normal": lambda: rounded(stats.norm.ppf(x, mu, sigma)),
        "log_normal": lambda: stats.lognorm.ppf(x, s=sigma, scale=np.exp(mu)),
        "q_log_normal": lambda: rounded(stats.lognorm.ppf(x, s=sigma, scale=np.exp(mu))),
        "beta": lambda: stats.beta.ppf(x, spec.get("a", 1), spec.get("b", 1)),
        "q_beta": lambda: rounded(stats.beta.ppf(x, spec.get("a", 1), spec.get("b", 1))),
    }
    return np.asarray(table[d]())


def sampled(spec: dict[str, Any], n: int = 400) -> list[Any]:
    """What hpopipe's sweep samples from the W&B parameter (random sampler)."""
    params = parse_params(raw_with({"x": spec}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [suggest(study.ask(), params.search_space)["x"] for _ in range(n)]


def raw_with(space: dict[str, Any]) -> dict[str, Any]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["search_space"] = copy.deepcopy(space)
    raw["model"] = {"factory": "tests.factories:build_linear"}  # reads any name: the forms are what is tested
    return raw


def test_every_distribution_w_and_b_documents_is_here() -> None:
    schema = (REPO / "tests/data/wandb/sweep-config.schema.json").read_text()
    named = {d for d in DISTRIBUTIONS if f'"{d}"' in schema}
    assert named == set(DISTRIBUTIONS) == set(EXAMPLES)


# W&B distributions hpopipe samples exactly: the same set of values, the same ends.
EXACT = [
    "uniform",
    "log_uniform",
    "log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "int_uniform",
]


@pytest.mark.parametrize("dist", EXACT)
def test_exact_forms_have_w_and_bs_ends_and_shape(dist: str) -> None:
    spec = from_wandb(EXAMPLES[dist])
    ends = wandb_ppf(EXAMPLES[dist], np.array([1e-12, 1.0 - 1e-12]))
    assert (spec["min"], spec["max"]) == pytest.approx(tuple(ends), rel=1e-9)
    assert convert(EXAMPLES[dist]).note is None
    values = np.array(sampled(EXAMPLES[dist]), dtype=float)
    if "log" in dist:  # log-uniform in W&B: the logs of hpopipe's draws fill [log min, log max] evenly
        values = np.log(values)
        ends = np.log(ends)
    assert (
        stats.kstest(values, stats.uniform(ends[0], ends[1] - ends[0]).cdf).pvalue > 0.01
        or dist == "int_uniform"
    )


@pytest.mark.parametrize("dist", ["q_uniform", "q_log_uniform", "q_log_uniform_values", "q_normal", "q_beta"])
def test_quantised_forms_draw_only_values_w_and_b_can(dist: str) -> None:
    wandb_values = set(wandb_ppf(EXAMPLES[dist], np.linspace(0.00135, 0.99865, 20001)).round(9).tolist())
    ours = set(np.round(sampled(EXAMPLES[dist]), 9).tolist())
    assert ours <= wandb_values | {min(wandb_values), max(wandb_values)}
    if dist in ("q_uniform", "q_beta"):  # small sets: every W&B value is drawn too
        assert ours == wandb_values
    # an integer q gives integers, as in W&B
    assert all(isinstance(v, int) for v in sampled(EXAMPLES[dist], 20)) == isinstance(
        EXAMPLES[dist]["q"], int
    )


@pytest.mark.parametrize("dist", ["normal", "log_normal", "q_log_normal"])
def test_unbounded_priors_are_cut_at_three_sigma(dist: str) -> None:
    spec = from_wandb(EXAMPLES[dist])
    low, high = wandb_ppf(EXAMPLES[dist], stats.norm.cdf(np.array([-3.0, 3.0])))
    if dist == "normal":  # hpopipe's own normal spec: sampled within mu ± 3 sigma
        assert (spec["mu"], spec["sigma"]) == (0.5, 0.1)
    else:
        assert (spec["min"], spec["max"]) == pytest.approx((low, high), rel=1e-9, abs=0.5)
    assert "3 sigma" in (convert(EXAMPLES[dist]).note or "")
    assert all(low - 0.5 <= v <= high + 0.5 for v in sampled(EXAMPLES[dist], 100))


def test_beta_is_cut_at_mean_plus_minus_three_sd_and_uniform_beta_is_exact() -> None:
    a, b = 2, 5
    mean, sd = stats.beta.mean(a, b), stats.beta.std(a, b)
    spec = from_wandb(EXAMPLES["beta"])
    assert (spec["min"], spec["max"]) == pytest.approx((max(0, mean - 3 * sd), mean + 3 * sd))
    assert convert({"distribution": "beta"}).spec == {"type": "uniform", "min": 0.0, "max": 1.0}
    assert convert({"distribution": "beta"}).note is None


def test_issue_example_q_log_uniform_batch_sizes() -> None:
    # W&B's own examples: batch sizes 32 … 256 as exp-bounds 3.47 … 5.55 with q 1.
    spec = parse_params(raw_with({"batch_size": EXAMPLES["q_log_uniform"]})).search_space["batch_size"]
    assert isinstance(spec, IntUniformSpec)
    assert (spec.min, spec.max, spec.log) == (32, 257, True)


def test_categorical_forms_and_their_notes() -> None:
    assert from_wandb(EXAMPLES["constant"]) == {"type": "choice", "values": [0.1]}
    assert from_wandb(EXAMPLES["categorical"]) == {"type": "choice", "values": [16, 32, 64]}
    weighted = convert(EXAMPLES["categorical_w_probabilities"])
    assert weighted.spec == {"type": "choice", "values": ["a", "b"]}
    assert weighted.note is not None and "probabilities" in weighted.note


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_every_distribution_validates_in_params_yaml_and_keeps_when(dist: str) -> None:
    space = {"layer": {"values": ["a", "b"]}, "x": {**EXAMPLES[dist], "when": {"layer": "b"}}}
    params = parse_params(raw_with(space))
    assert params.search_space["x"].when == {"layer": "b"}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"distribution": "uniform", "min": 0, "max": 1, "q": 2}, "uniform takes max, min, not q"),
        ({"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}, "q must be > 0"),
        ({"distribution": "normal", "sigma": -1}, "sigma must be > 0"),
        ({"distribution": "log_uniform_values", "min": 0, "max": 1}, "needs min > 0"),
        ({"distribution": "int_uniform", "min": 1.5, "max": 3}, "whole numbers"),
        ({"distribution": "uniform", "min": 2, "max": 1}, "min (2) is greater than max (1)"),
        ({"distribution": "uniform", "min": "a", "max": 1}, "min must be a finite number"),
        ({"distribution": "lognormal"}, "unsupported W&B distribution 'lognormal'"),
        ({"distribution": "q_log_uniform", "min": 1}, "needs max"),
        ({"min": 1}, "no distribution given"),
    ],
)
def test_bad_w_and_b_parameters_are_one_line_naming_the_key(spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HpopipeError) as info:
        parse_params(raw_with({"lr": spec}))
    message = str(info.value)
    assert message.startswith("params.yaml: search_space.lr: ") and "\n" not in message
    assert fragment in message


def test_nested_blocks_and_dotted_names_in_params_yaml() -> None:
    space = {
        "optimizer": {"parameters": {"lr": EXAMPLES["log_uniform_values"]}},
        "model": {"parameters": {"width": {"values": [8, 16]}}},
        "train.batch_size": {"values": [32, 64]},
    }
    params = parse_params(raw_with(space))
    assert list(params.search_space) == ["optimizer.lr", "model.width", "train.batch_size"]


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"model": {"parameters": {"width": {"values": [1]}}, "x": 1}}, "model: a nested block holds one"),
        ({"model": {"parameters": {}}}, "model: a nested block holds one"),
        (
            {"model": {"parameters": {"width": {"values": [1]}}}, "model.width": {"values": [2]}},
            "given twice",
        ),
        ({"model": {"parameters": {"bad-name": {"values": [1]}}}}, "'bad-name' must be a Python identifier"),
    ],
)
def test_bad_nesting_is_one_line(space: dict[str, Any], fragment: str) -> None:
    with pytest.raises(HpopipeError, match=fragment):
        parse_params(raw_with(space))


def test_log_bounds_read_back_exactly() -> None:
    # exp(log(x)) is x a few units in the last place off; the bound reads back as x.
    spec = from_wandb({"distribution": "log_uniform", "min": math.log(1e-4), "max": math.log(3e-2)})
    assert (spec["min"], spec["max"]) == (1e-4, 3e-2)
    assert from_wandb({"distribution": "log_uniform", "min": -9, "max": -4})["min"] == math.exp(-9)


def test_an_error_inside_a_nested_block_names_the_dotted_key() -> None:
    with pytest.raises(HpopipeError) as info:
        parse_params(raw_with({"optimizer": {"parameters": {"lr": {"distribution": "q_uniform", "min": 0}}}}))
    assert str(info.value) == "params.yaml: search_space.optimizer.lr: q_uniform needs max"
