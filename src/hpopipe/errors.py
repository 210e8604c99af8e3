"""The one exception type for errors a user can cause and fix."""

from __future__ import annotations


class HpopipeError(Exception):
    """A user error: bad params, bad data, a missing file.

    The CLI prints it as one line (no traceback) and exits with status 2, so
    the message must name the field or file and say what is wrong with it.
    """
