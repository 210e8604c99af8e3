"""The Optuna sweep: study identity and storage, objective, workers, lifecycle, recovery, exports."""

from hpopipe.entry import import_without_collection

import_without_collection()  # ``python -m hpopipe.sweep.agent``: a local worker starts faster
