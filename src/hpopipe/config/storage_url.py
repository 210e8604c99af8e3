"""Which Optuna storages ``hpo.storage`` may name: PostgreSQL URLs, never with a password in params.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from hpopipe.redact import mask_url, url_secrets

POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2")


def check_storage_setting(value: str) -> None:
    """Validate an ``hpo.storage`` setting (``env:NAME`` is read later, by hpopipe.sweep.storage)."""
    if value in ("sqlite", "journal"):
        return
    if value.startswith("env:"):
        if not value[4:].isidentifier():
            raise ValueError(f"{value!r}: after 'env:' comes an environment variable name")
        return
    check_storage_url(value, in_params=True)


def check_storage_url(url: str, in_params: bool) -> None:
    """Only PostgreSQL URLs are accepted, and none with a password when it sits in params.yaml."""
    parts = urlsplit(url)
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            f"unknown storage {mask_url(url)!r}: use sqlite, journal, postgresql://user@host/db or env:NAME"
        )
    if in_params and (parts.password or url_secrets(url)):
        raise ValueError(SECRET_IN_PARAMS)


SECRET_IN_PARAMS = (
    "a password here would be copied into dvc.lock and git: "
    "put the URL in an environment variable and write 'env:NAME'"
)


def find_literal_secret(raw: Any) -> str | None:
    """The dotted key of the first URL-like value in ``raw`` holding a password, token or key.

    Any string with ``://`` counts, in any section: DVC copies every param of a stage into
    ``dvc.lock``, its run-cache and git, so a secret written anywhere in params.yaml leaks.
    """
    for where, value in _strings(raw, ""):
        if "://" in value and url_secrets(value):
            return where or "(top level)"
    return None


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, f"{where}[{i}]")
