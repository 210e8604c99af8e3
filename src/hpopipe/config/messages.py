"""A pydantic ValidationError as the one line a user reads: ``params.yaml: hpo.sampler.name: ...``."""

from __future__ import annotations

import re
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from hpopipe.config.schema import Params


def discriminator_tags(model: type[BaseModel]) -> frozenset[str]:
    """Every tag of every discriminated union reachable from ``model``'s fields.

    pydantic puts the tag of the member it tried (a search-space type, a sampler,
    pruner or select-rule name) into an error's location; these are dropped from it.
    Read from the schema, so a new member needs no edit here.
    """
    tags: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def visit_model(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for field in cls.model_fields.values():
            discriminator = field.discriminator if isinstance(field.discriminator, str) else None
            visit(field.annotation, discriminator)

    def visit(tp: Any, discriminator: str | None) -> None:
        if get_origin(tp) is Annotated:
            inner, *meta = get_args(tp)
            found = [
                m.discriminator for m in meta if isinstance(m, FieldInfo) and isinstance(m.discriminator, str)
            ]
            visit(inner, found[0] if found else discriminator)
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            if discriminator is not None:
                tags.update(str(tag) for tag in get_args(tp.model_fields[discriminator].annotation))
            visit_model(tp)
        else:
            for arg in get_args(tp):
                visit(arg, discriminator)

    visit_model(model)
    return frozenset(tags)


# Discriminator values pydantic puts in an error's location: search-space types, sampler and pruner names.
_SPEC_TAGS = discriminator_tags(Params)
# pydantic adds the member type of a union to the location (e.g. 'int', "literal['auto']").
_TYPE_TAG = re.compile(r"^(int|float|str|bool|none|literal\[.*\]|list\[.*\]|dict\[.*\]|function-\w+\[.*\])$")


# A check across keys names its own key first ("cv.select.weights: ..."): it becomes the location.
_NAMED_KEY = re.compile(r"^([a-z_]+\.[\w.]+): ")


def _location(loc: tuple[int | str, ...]) -> str:
    # Drop union-member segments so the key reads as the user wrote it.
    parts = [str(p) for p in loc if p not in _SPEC_TAGS and not _TYPE_TAG.match(str(p))]
    return ".".join(parts) or "(top level)"


def one_line(err: ValidationError, source: str) -> str:
    """The first problem, where it is and what is wrong, with a count of the others."""
    first = err.errors()[0]
    where = _location(tuple(first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    # A check across sections names its own key (e.g. "cv.select.weights: ..."): no "(top level)".
    named = _NAMED_KEY.match(msg)
    if named and (where == "(top level)" or named[1].startswith(where + ".")):
        where, msg = named[1], msg[named.end() :]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    elif first["type"] == "union_tag_invalid":  # e.g. sampler: {name: bayes}
        ctx = first.get("ctx", {})
        where = f"{where}.{str(ctx.get('discriminator', 'type')).strip(chr(39))}"
        msg = f"{ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}"
    # A section's validator names the key it refuses first ("storage: ..."): fold it into the place.
    key = re.match(r"^([a-z_]+): ", msg)
    if key and where != "(top level)":
        where, msg = f"{where}.{key.group(1)}", msg[key.end() :]
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    # A key or value with a line break must not break the one-line promise.
    return f"{source}: {where}: {msg}{tail}".replace("\r", "\\r").replace("\n", "\\n")
