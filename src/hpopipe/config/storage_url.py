"""Which Optuna storages ``hpo.storage`` may name: PostgreSQL URLs, never with a password in params.yaml."""

from __future__ import annotations

from urllib.parse import urlsplit

from hpopipe.redact import mask_url

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
    if in_params and parts.password:
        raise ValueError(
            "a password here would be copied into dvc.lock and git: "
            "put the URL in an environment variable and write 'env:NAME'"
        )
