"""Where a tuned name goes: the model factory, the training loop's optimiser settings, or both.

A flat name (``width``, ``lr``) goes where it always went: to the model factory, and, for
``lr``, ``weight_decay`` and ``batch_size``, to the loop as well. A dotted name says what it
reaches, the way W&B's nested sweeps and AzureML's dotted inputs name things:

* ``model.<param>``: a model-factory param; further dots nest, so ``model.encoder.depth`` reaches
  a factory as ``params["encoder"]["depth"]``. The built-in families read flat params only.
* ``train.<key>`` / ``optimizer.<key>``: the loop's settings a trial may override
  (:data:`TRAIN_KEYS`; ``optimizer.`` only ``lr`` and ``weight_decay``).

A dotted name nothing consumes is refused when params.yaml is validated: a sweep imported with
``optimiser.lr`` (or ``model.encoder.depth`` for ``mlp``) fails then, not after a sweep that
sampled values no one read. (Flat names are not checked here: a user factory may read anything.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# What the training loop takes from a trial (hpopipe.training.loop.hyper); the rest of
# `train` is fixed for a sweep.
TRAIN_KEYS = ("lr", "weight_decay", "batch_size")
_NAMESPACE_KEYS: dict[str, tuple[str, ...]] = {
    "train": TRAIN_KEYS,
    "optimizer": ("lr", "weight_decay"),
}
# The params each built-in family reads (hpopipe.training.models; tests/test_routes.py ties the two).
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


def name_problem(name: str, model_name: str | None) -> str | None:
    """Why dotted ``name`` reaches nothing, or None (flat names and names that do reach something).

    Args:
        name: a search-space name.
        model_name: ``model.name`` (a built-in family), or None for a user factory, whose
            params hpopipe cannot know.
    """
    head, _, rest = name.partition(".")
    if not rest:
        return None
    if head == "model":
        if model_name is None:
            return None
        known = BUILTIN_MODEL_PARAMS[model_name]
        if rest in known:
            return None
        return f"the {model_name} model reads no {rest!r} (it reads {', '.join(known)})"
    if head in _NAMESPACE_KEYS:
        keys = _NAMESPACE_KEYS[head]
        if rest in keys:
            return None
        return f"{head}.{rest} is read by nothing (a trial may set {', '.join(f'{head}.{k}' for k in keys)})"
    return f"a dotted name starts with model., train. or optimizer., not {head}."


def check_names(names: Iterable[str], model_name: str | None) -> None:
    """Refuse a dotted name nothing reads, and two names that set the same thing.

    Raises:
        ValueError: ``search_space.<name>: <why>``, one line.
    """
    seen: dict[Target, str] = {}
    for name in names:
        problem = name_problem(name, model_name)
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
    """The loop's settings a trial overrides: flat ``lr`` … and ``train.*`` / ``optimizer.*``."""
    out = {name: params[name] for name in TRAIN_KEYS if name in params}
    for name, value in params.items():
        head, _, rest = name.partition(".")
        if head in _NAMESPACE_KEYS and rest in _NAMESPACE_KEYS[head]:
            out[rest] = value
    return out
