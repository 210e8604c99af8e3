"""Where a tuned name goes: the model factory, the training loop's settings, or both.

A flat name (``width``, ``lr``) goes where it always went: to the model factory, and, for the
loop's keys (:data:`TRAIN_KEYS`: ``lr``, ``weight_decay``, ``batch_size``, ``optimizer``,
``schedule``, ``momentum``), to the loop as well. A dotted name says what it reaches, the way
W&B's nested sweeps and AzureML's dotted inputs name things:

* ``model.<param>``: a model-factory param; further dots nest, so ``model.encoder.depth`` reaches
  a factory as ``params["encoder"]["depth"]``. The built-in families read flat params only.
* ``train.<key>`` / ``optimizer.<key>``: the loop's settings a trial may override
  (:data:`TRAIN_KEYS` plus ``step_size`` and ``gamma``; ``optimizer.`` only ``lr``,
  ``weight_decay`` and ``momentum``).

A tuned name nothing consumes is refused when params.yaml is validated, so a sweep never samples
values no one reads: a dotted name outside these routes (``optimiser.lr``), a model param the
family does not read, a flat name neither the model nor the loop reads (``seed_shift`` for
``mlp``), ``momentum`` for an optimiser without one. What a model reads is known for the built-in
families (:data:`BUILTIN_MODEL_PARAMS`) and for a user factory that declares it with
:func:`hpopipe.consumes`; a factory that does not is unchecked. A name another parameter's
``when`` names is read by the space itself and always accepted.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

# The loop's choices (hpopipe.training.loop builds them); the first of each is the default.
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")
SCHEDULES = ("none", "cosine", "step")
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")
# What the training loop takes from a trial under a flat name (hpopipe.training.loop.settings);
# the rest of `train` is fixed for a sweep, or tuned by its dotted train.<key> name.
TRAIN_KEYS = ("lr", "weight_decay", "batch_size", "optimizer", "schedule", "momentum")
_NAMESPACE_KEYS: dict[str, tuple[str, ...]] = {
    "train": (*TRAIN_KEYS, "step_size", "gamma"),
    "optimizer": ("lr", "weight_decay", "momentum"),
}
# The params each built-in family reads: the declaration next to hpopipe.training.models'
# families (config must not import torch); tests/test_routes.py ties the two.
BUILTIN_MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "mlp": ("n_layers", "width", "dropout", "norm", "embedding", "embedding_scale"),
    "resnet": ("n_blocks", "d_main", "d_hidden_factor", "dropout_hidden", "dropout_residual"),
}

Target = tuple[str, tuple[str, ...]]  # ("model", path) or ("train", (key,))


def targets(name: str) -> list[Target]:
    """Everything ``name`` reaches (unchecked: :func:`check_names` says whether anything reads it)."""
    head, _, rest = name.partition(".")
    if not rest:
        flat: list[Target] = [("model", (name,))]
        return flat + ([("train", (name,))] if name in TRAIN_KEYS else [])
    if head == "model":
        return [("model", tuple(rest.split(".")))]
    return [("train", (rest,))]


def _dotted_problem(name: str, who: str, reads: tuple[str, ...] | None) -> str | None:
    """Why dotted ``name`` reaches nothing, or None."""
    head, _, rest = name.partition(".")
    if head == "model":
        if reads is None or rest in reads:
            return None
        return f"{who} reads no {rest!r} (it reads {', '.join(reads)})"
    if head in _NAMESPACE_KEYS:
        keys = _NAMESPACE_KEYS[head]
        if rest in keys:
            return None
        return f"{head}.{rest} is read by nothing (a trial may set {', '.join(f'{head}.{k}' for k in keys)})"
    return f"a dotted name starts with model., train. or optimizer., not {head}."


def _flat_problem(name: str, who: str, reads: tuple[str, ...] | None) -> str | None:
    """Why flat ``name`` reaches nothing, or None (the loop's keys; anything an undeclared factory reads)."""
    if name in TRAIN_KEYS or reads is None or name in reads:
        return None
    return (
        f"nothing reads it: {who} reads {', '.join(reads) or 'no tuned names'}; "
        f"the training loop reads {', '.join(TRAIN_KEYS)}"
    )


def check_names(
    names: Iterable[str],
    model_name: str | None,
    *,
    reads: tuple[str, ...] | None = None,
    who: str = "the model factory",
    optimizer: str = OPTIMIZERS[0],
    gates: Collection[str] = (),
) -> None:
    """Refuse a tuned name nothing reads, and two names that set the same thing.

    Args:
        names: the search-space names, in order.
        model_name: ``model.name`` (a built-in family), or None for a user factory.
        reads: what a user factory declared it reads (:func:`hpopipe.consumes`); None: unknown,
            so its flat and ``model.*`` names are not checked.
        who: the factory, as messages name it.
        optimizer: the fixed ``train.optimizer``: whether a tuned momentum is read.
        gates: names another parameter's ``when`` names (read by the space itself).

    Raises:
        ValueError: ``search_space.<name>: <why>``, one line.
    """
    names = list(names)
    if model_name is not None:
        reads, who = BUILTIN_MODEL_PARAMS[model_name], f"the {model_name} model"
    tuned_loop = {t[1][0] for name in names for t in targets(name) if t[0] == "train"}
    seen: dict[Target, str] = {}
    for name in names:
        if "." in name:
            problem = _dotted_problem(name, who, reads)
        else:
            problem = None if name in gates else _flat_problem(name, who, reads)
        if problem is None and ("train", ("momentum",)) in targets(name):
            problem = _momentum_problem(optimizer, "optimizer" in tuned_loop)
        if problem is not None:
            raise ValueError(f"search_space.{name}: {problem}")
        for target in targets(name):
            for other_target, other in seen.items():
                if other_target[0] == target[0] and _overlap(target[1], other_target[1]):
                    where = (
                        f"train {target[1][0]}"
                        if target[0] == "train"
                        else "model param " + ".".join(target[1])
                    )
                    raise ValueError(f"search_space.{name}: {other} sets {where} already")
            seen[target] = name


def condition_names(space: dict[str, Any]) -> set[str]:
    """Names another parameter's ``when`` names: the space itself reads them."""
    return {other for spec in space.values() for other in spec.when or {}}


def _momentum_problem(optimizer: str, optimizer_tuned: bool) -> str | None:
    if optimizer_tuned or optimizer in MOMENTUM_OPTIMIZERS:
        return None
    return (
        f"train.optimizer is {optimizer}, which reads no momentum "
        f"(set or tune optimizer to {' or '.join(MOMENTUM_OPTIMIZERS)})"
    )


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    # model.encoder and model.encoder.depth cannot both be given: one is a value, the other a mapping.
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def model_params(params: dict[str, Any]) -> dict[str, Any]:
    """What the model factory receives: flat names as they are, ``model.*`` names nested."""
    out = {name: value for name, value in params.items() if "." not in name}
    for name, value in params.items():
        head, _, rest = name.partition(".")
        if head != "model" or not rest:
            continue
        *parents, leaf = rest.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return out


def train_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The loop's settings a trial overrides: flat ``lr``, ``optimizer`` …, ``train.*``, ``optimizer.*``."""
    out = {name: params[name] for name in TRAIN_KEYS if name in params}
    for name, value in params.items():
        head, _, rest = name.partition(".")
        if head in _NAMESPACE_KEYS and rest in _NAMESPACE_KEYS[head]:
            out[rest] = value
    return out
