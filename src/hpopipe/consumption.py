"""``@hpopipe.consumes("width", "dropout")``: a model factory declares the params it reads.

Without it hpopipe cannot tell a tuned name the factory reads from one it silently ignores, so
an undeclared factory stays unchecked (as before the declaration existed). With it, a tuned
name that neither the factory nor the training loop reads is refused by ``hpopipe validate``
and before the sweep's first trial, the way the built-in families' names are refused when
params.yaml is read (their declaration: :data:`hpopipe.config.routes.BUILTIN_MODEL_PARAMS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from hpopipe.config.routes import check_names, condition_names
from hpopipe.errors import HpopipeError

if TYPE_CHECKING:
    from hpopipe.config import Params

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__hpopipe_consumes__"


def consumes(*names: str) -> Callable[[F], F]:
    """Declare the params a model factory reads (its flat names, and the heads of nested ones).

    Example::

        @hpopipe.consumes("width", "dropout", "encoder")
        def build(params, n_features, n_outputs): ...

    ``"encoder"`` covers ``model.encoder.depth``; the loop's names (``lr``, ``optimizer``, …)
    need no declaration.
    """
    for name in names:
        if not isinstance(name, str) or not name or "." in name:
            raise TypeError(f"hpopipe.consumes: {name!r} must be a parameter name without dots")

    def mark(factory: F) -> F:
        setattr(factory, _ATTR, tuple(names))
        return factory

    return mark


def declared(factory: Callable[..., Any]) -> tuple[str, ...] | None:
    """What ``factory`` declared it reads, or None when it did not declare."""
    reads = getattr(factory, _ATTR, None)
    return None if reads is None else tuple(reads)


def check_factory_names(params: Params, factory: Callable[..., Any], source: str = "params.yaml") -> None:
    """Refuse a tuned name nothing reads, for a user factory that declared what it reads.

    Raises:
        HpopipeError: ``<source>: search_space.<name>: nothing reads it: …``, one line.
    """
    reads = declared(factory)
    if params.model.factory is None or reads is None:
        return
    try:
        check_names(
            params.search_space,
            None,
            reads=reads,
            who=f"the factory {params.model.factory!r}",
            optimizer=params.train.optimizer,
            gates=condition_names(params.search_space),
        )
    except ValueError as err:
        raise HpopipeError(f"{source}: {err}") from None
