"""The edge where user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from hpopipe.errors import HpopipeError
from hpopipe.redact import mask_url

EXIT_USER_ERROR = 2


class _MaskingFormatter(logging.Formatter):
    """Never let a storage password reach a log line."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_url(super().format(record))


def setup_logging() -> None:
    """Plain timestamped lines; level from HPOPIPE_LOG_LEVEL (default INFO)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("HPOPIPE_LOG_LEVEL", "INFO").upper())
    # hpopipe logs each trial itself (hooks.TrialLogger); Optuna's own lines would repeat them.
    # Optuna resets its logger's level when first imported, so set it through Optuna.
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def run(main: Callable[[], object]) -> None:
    """Call ``main``; print an HpopipeError as one line and exit 2, without a traceback."""
    setup_logging()
    try:
        main()
    except HpopipeError as err:
        print(f"hpopipe: error: {mask_url(str(err))}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
