"""Dotted and nested search-space names reach what they name: the model factory or the loop."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from hpopipe.config import ModelConfig, TrainConfig
from hpopipe.config.routes import BUILTIN_MODEL_PARAMS, check_names, model_params, train_settings
from hpopipe.training.loop import hyper
from hpopipe.training.models import build


def test_model_names_nest_and_loop_names_reach_the_loop() -> None:
    params = {
        "width": 8,
        "model.encoder.depth": 2,
        "model.encoder.width": 4,
        "optimizer.lr": 0.1,
        "train.batch_size": 16,
    }
    assert model_params(params) == {"width": 8, "encoder": {"depth": 2, "width": 4}}
    assert train_settings(params) == {"lr": 0.1, "batch_size": 16}
    assert train_settings({"lr": 0.2, "weight_decay": 0.01}) == {"lr": 0.2, "weight_decay": 0.01}


def test_tuned_dotted_names_reach_the_built_model_and_its_optimiser() -> None:
    model = build(
        ModelConfig(name="mlp", params={"width": 64}), {"model.width": 7, "model.n_layers": 1}, 5, 2
    )
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [7, 2]
    lr, weight_decay, batch = hyper({"optimizer.lr": 0.25, "train.batch_size": 9}, TrainConfig(lr=0.001))
    assert (lr, weight_decay, batch) == (0.25, 0.0, 9)


def test_a_factory_receives_a_nested_config() -> None:
    cfg = ModelConfig(factory="tests.factories:build_encoder")
    model = build(cfg, {"model.encoder.depth": 2, "model.encoder.width": 3, "optimizer.lr": 0.1}, 5, 2)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [3, 3, 2]


@pytest.mark.parametrize(("family", "names"), BUILTIN_MODEL_PARAMS.items())
def test_every_listed_builtin_param_changes_the_model(family: str, names: tuple[str, ...]) -> None:
    # BUILTIN_MODEL_PARAMS is what training.models reads: each name, changed, changes the network.
    changed: dict[str, Any] = {
        "n_layers": 3,
        "width": 9,
        "dropout": 0.37,
        "n_blocks": 3,
        "d_main": 12,
        "d_hidden_factor": 3.0,
        "dropout_hidden": 0.41,
        "dropout_residual": 0.13,
        "norm": "layer",
        "embedding": "periodic",
        "embedding_scale": 2.5,
    }
    needs = {"embedding_scale": {"embedding": "periodic"}}  # read only beside another value
    torch.manual_seed(0)
    for name in names:
        base = str(build(ModelConfig(name=family), needs.get(name, {}), 4, 2))  # type: ignore[arg-type]
        model = build(ModelConfig(name=family), {**needs.get(name, {}), name: changed[name]}, 4, 2)  # type: ignore[arg-type]
        assert str(model) != base, name


@pytest.mark.parametrize(
    ("names", "model", "fragment"),
    [
        (
            ["model.encoder.depth"],
            "mlp",
            "search_space.model.encoder.depth: the mlp model reads no 'encoder.depth'",
        ),
        (
            ["model.d_main"],
            "mlp",
            "the mlp model reads no 'd_main' "
            "(it reads n_layers, width, dropout, norm, embedding, embedding_scale)",
        ),
        (["optimiser.lr"], "mlp", "a dotted name starts with model., train. or optimizer., not optimiser."),
        (["train.max_epochs"], None, "train.max_epochs is read by nothing"),
        (["optimizer.batch_size"], None, "a trial may set optimizer.lr, optimizer.weight_decay"),
        (["lr", "optimizer.lr"], "mlp", "search_space.optimizer.lr: lr sets train lr already"),
        (["width", "model.width"], "mlp", "search_space.model.width: width sets model param width already"),
        (["model.enc", "model.enc.depth"], None, "model.enc sets model param enc.depth already"),
    ],
)
def test_names_nothing_reads_or_read_twice_are_refused(
    names: list[str], model: str | None, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_names(names, model)


def test_a_user_factory_may_read_any_model_name() -> None:
    check_names(["model.encoder.depth", "model.anything", "hidden"], None)
