"""Typed hand-offs between stages: the files one stage writes and later stages read.

Each file has one pydantic model (frozen, unknown fields refused) and one
write/read pair, so a field renamed by the producer fails when the next stage
READS the file, with a one-line error naming the file and the field, instead of
as a ``KeyError`` stages later. One module per file keeps each stage's DVC deps
to the hand-offs it really uses: a change to the best configuration does not
make the sweep stale.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hpopipe.errors import HpopipeError

M = TypeVar("M", bound=BaseModel)
# Problems named in one error message; the rest are counted.
MAX_PROBLEMS = 3
# A tuned or fixed hyperparameter value; bool before int so that true stays a bool.
ParamValue = str | bool | int | float | None


class Handoff(BaseModel):
    """Base of every hand-off model: immutable, and no field the reader does not know."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse(model: type[M], payload: Any, source: str) -> M:
    """Validate what a file held; any mismatch is one HpopipeError naming ``source`` and the field."""
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        # A renamed field is two errors (the old name missing, the new one unknown): name both.
        problems = [
            f"field {'.'.join(str(p) for p in e['loc']) or '(top level)'!r}: {e['msg']}"
            for e in err.errors()[:MAX_PROBLEMS]
        ]
        more = f"; and {err.error_count() - MAX_PROBLEMS} more" if err.error_count() > MAX_PROBLEMS else ""
        raise HpopipeError(
            f"{source}: {'; '.join(problems)}{more} (re-run the stage that writes it: dvc repro)"
        ) from None
