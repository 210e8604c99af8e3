"""Thin DVC stage entry points, run as ``python -m stages.<name>``.

Run as modules so that ``stages/select.py`` cannot shadow the stdlib ``select``.

Run so, a stage imports torch, pandas and MLflow with the cyclic garbage collector off: those
imports make hundreds of thousands of objects that live to the end, and the collector would
scan them again and again (about a sixth of a stage's import CPU, measured).
:func:`hpopipe.entry.run` freezes what the imports made and turns the collector back on.
Imported any other way (tests), nothing changes.
"""

import gc
import sys

if sys.argv[:1] == ["-m"]:  # what sys.argv[0] is while ``python -m`` imports this package
    gc.disable()
