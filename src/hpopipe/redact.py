"""Keep secrets out of logs, MLflow and artifacts."""

from __future__ import annotations

import re

_PASSWORD_RE = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


def mask_url(text: str) -> str:
    """Replace the password of any ``scheme://user:password@host`` in ``text`` with ***."""
    return _PASSWORD_RE.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
