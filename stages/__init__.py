"""Thin DVC stage entry points, run as ``python -m stages.<name>``.

Run as modules so that ``stages/select.py`` cannot shadow the stdlib ``select``; run so, a stage
imports without garbage collection (see :func:`hpopipe.entry.import_without_collection`).
"""

from hpopipe.entry import import_without_collection

import_without_collection()
