"""Keep secrets out of logs, MLflow and artifacts.

A URL carries a secret in two places: its userinfo (``scheme://user:password@host``) and its
query (``?password=...``, ``&token=...``). Passwords are often pasted unencoded, so the
userinfo is read up to the *last* ``@`` of the URL rather than by the URL grammar: a
password holding ``/``, ``@`` or ``:`` is masked whole (masking too much is the safe
mistake). Secrets of the URLs hpopipe itself opens (the study storage, the MLflow store)
are also registered, so their exact text is masked wherever it turns up, decoded or not.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

MASK = "***"
# A URL runs until whitespace or a quote; inside it, the userinfo is everything before the last '@'.
_USERINFO_RE = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<user>[^:@\s'\"`<>/]*):(?P<pw>[^\s'\"`<>]*)@")
# Query keys whose value is a secret: any key containing password, passwd, pwd, token, secret or
# apikey (sslpassword, access_token, apiKey, ...), or with key, pass, auth, sig, signature or
# credential(s) as one of its _-. separated parts (api_key, X-Amz-Signature; not "author").
_SECRET_KEY = (
    r"(?:[\w.-]*(?:password|passwd|pwd|token|secret|apikey)[\w.-]*"
    r"|(?:[\w.-]*[_.-])?(?:key|pass|auth|sig|signature|credentials?)(?:[_.-][\w.-]*)?)"
)
_QUERY_RE = re.compile(rf"(?P<key>[?&;](?i:{_SECRET_KEY})=)(?P<value>[^&;#\s'\"`<>]*)")
# libpq's key=value form (``password=... host=...``) as drivers print it in connection errors.
_DSN_RE = re.compile(
    r"(?P<key>(?<![\w.-])(?i:password|passwd|pwd|sslpassword)\s*=\s*)(?P<value>'[^']*'|[^\s'\"&;#]+)"
)
_MIN_REGISTERED = 4  # a shorter registered secret would mask ordinary words in every line

_registered: set[str] = set()
_lock = threading.Lock()


def _mask_userinfo(match: re.Match[str]) -> str:
    return f"{match['scheme']}{match['user']}:{MASK}@"


def mask_url(text: str) -> str:
    """``text`` with every URL password, secret query value and registered secret replaced by ***."""
    text = _USERINFO_RE.sub(_mask_userinfo, text)
    text = _QUERY_RE.sub(lambda m: f"{m['key']}{MASK}", text)
    text = _DSN_RE.sub(lambda m: f"{m['key']}{MASK}", text)
    with _lock:
        secrets = sorted(_registered, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url``: its password and the values of secret query keys (empty if none).

    Read with the same last-``@`` rule as :func:`mask_url`, so a password holding ``/``
    is found whole, not cut at the slash as ``urllib`` would.
    """
    found = [m["pw"] for m in _USERINFO_RE.finditer(url) if m["pw"]]
    found += [m["value"] for m in _QUERY_RE.finditer(url) if m["value"]]
    return found


def register_url(url: str) -> None:
    """Mask the secrets of a URL hpopipe uses (as written and percent-decoded) in every later line."""
    with _lock:
        for secret in url_secrets(url):
            for form in {secret, unquote(secret)}:
                if len(form) >= _MIN_REGISTERED:
                    _registered.add(form)
