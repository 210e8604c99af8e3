"""Masking that understands URLs: every place a URL can carry a secret, in every form it is pasted in."""

from __future__ import annotations

import importlib.util

import pytest

from hpopipe.config import parse_params
from hpopipe.errors import HpopipeError
from hpopipe.redact import mask_url, register_url, url_secrets
from hpopipe.tracking import with_driver

SECRET = "S3KRET-4242"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # userinfo: a password holding '/', '@' or ':' unencoded is masked whole
        (
            f"postgresql://postgres:canary/{SECRET}@127.0.0.1:5432/db",
            "postgresql://postgres:***@127.0.0.1:5432/db",
        ),
        (f"postgresql+psycopg2://u:a@b:c/{SECRET}@h:1/db", "postgresql+psycopg2://u:***@h:1/db"),
        (f"redis://:{SECRET}@h:6379/0", "redis://:***@h:6379/0"),
        (f"at postgresql://u:{SECRET}@h/db: refused", "at postgresql://u:***@h/db: refused"),
        (f"'postgresql://u:{SECRET}@h/db'", "'postgresql://u:***@h/db'"),
        # query parameters, any of the usual names, any case, wherever in the query
        (f"postgresql://postgres@h/db?password={SECRET}", "postgresql://postgres@h/db?password=***"),
        (f"https://h/x?sslmode=require&PASSWD={SECRET}&b=1", "https://h/x?sslmode=require&PASSWD=***&b=1"),
        (f"https://h/x?pwd={SECRET}#frag", "https://h/x?pwd=***#frag"),
        (f"https://h/x?api_key={SECRET}", "https://h/x?api_key=***"),
        (f"https://h/x?access_token={SECRET};secret={SECRET}", "https://h/x?access_token=***;secret=***"),
        (f"https://h/x?key={SECRET}&token={SECRET}", "https://h/x?key=***&token=***"),
        # libpq's key=value form, as drivers quote it in errors
        (f"password={SECRET} host=h", "password=*** host=h"),
        # nothing to mask
        ("postgresql://postgres@127.0.0.1:5432/db?sslmode=require", None),
        ("sqlite:////tmp/study.db", None),
        ("mysql://db/optuna", None),
        ("https://h/feed?author=ann&keyid=3", None),  # "auth" and "key" count only as whole parts
    ],
)
def test_every_url_form_is_masked(text: str, masked: str | None) -> None:
    assert mask_url(text) == (text if masked is None else masked)
    assert SECRET not in mask_url(text)


def test_secrets_of_a_url_in_use_are_masked_anywhere_decoded_or_not() -> None:
    """A driver may quote the password percent-decoded, outside any URL."""
    register_url("postgresql://u:reg%2Fpw%40x-777@h/db?password=q-secret-777")
    line = "FATAL: password 'reg/pw@x-777' refused; also reg%2Fpw%40x-777 and q-secret-777"
    assert mask_url(line) == "FATAL: password '***' refused; also *** and ***"


def test_url_secrets_finds_the_whole_password_and_secret_query_values() -> None:
    assert url_secrets(f"postgresql://u:a/b@c@h/db?password={SECRET}&x=1") == ["a/b@c", SECRET]
    assert url_secrets("postgresql://u@h/db?sslmode=require") == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("hpo.storage", f"postgresql://postgres@h/db?password={SECRET}"),
        ("hpo.storage", f"postgresql://postgres:canary/{SECRET}@h:5432/db"),
        ("model.params.weights", f"https://h/w.bin?token={SECRET}"),
        ("model.params.mirror", f"s3://key:{SECRET}@bucket/x"),
    ],
)
def test_a_literal_secret_anywhere_in_params_is_refused_naming_the_key(
    raw: dict, key: str, value: str
) -> None:
    section, *rest = key.split(".")
    if rest[0] == "params":
        raw[section]["params"] = {rest[1]: value}
    else:
        raw[section][rest[0]] = value
    with pytest.raises(HpopipeError) as err:
        parse_params(raw)
    assert str(err.value).startswith(f"params.yaml: {key}: a password here would be copied into dvc.lock")
    assert SECRET not in str(err.value)


def test_a_database_uri_whose_driver_is_missing_is_one_line() -> None:
    """Whichever drivers this venv has: a bare postgresql:// gets psycopg2 when psycopg 3 is absent,
    and a URI naming a driver that is absent is one line naming it, the password masked."""
    bare = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db"
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        assert with_driver(bare) == bare.replace("postgresql://", "postgresql+psycopg2://")
    cases = [
        (f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432/db", "psycopg"),
        (f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:5432/db", "psycopg2"),
        (f"mysql://u:{SECRET}@h/db", "MySQLdb"),
    ]
    missing = [(uri, module) for uri, module in cases if importlib.util.find_spec(module) is None]
    assert missing  # psycopg 3 and MySQLdb are not installed here
    for uri, module in missing:
        with pytest.raises(HpopipeError) as err:
            with_driver(uri)
        assert f"its driver {module!r} is not installed" in str(err.value)
        assert SECRET not in str(err.value) and str(err.value).startswith("MLFLOW_TRACKING_URI: ")


@pytest.fixture
def raw() -> dict:
    import yaml

    from tests.conftest import TINY_PARAMS

    return dict(yaml.safe_load(TINY_PARAMS))
