"""Every seed of a run derives from ``params.seed`` and a name for the sub-task.

One function, so the sweep, CV and refit agree on what "the seed of trial 3" or
"the seed of fold 2" means, whatever process or machine computes it.
"""

from __future__ import annotations

import hashlib
import json


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 31-bit seed for a sub-task (a trial, a CV fold) of a seeded run."""
    blob = json.dumps([seed, *parts], default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF
