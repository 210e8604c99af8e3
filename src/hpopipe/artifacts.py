"""Where each stage's outputs live, and how they are read and (atomically) written.

The paths match ``dvc.yaml``; a contract test keeps the two in step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hpopipe.atomic import atomic_write_bytes, atomic_write_text
from hpopipe.errors import HpopipeError

if TYPE_CHECKING:  # pandas is imported by the frame readers: select and cleanup read none
    import pandas as pd

PREPARED = Path("data/prepared")
TRAIN = PREPARED / "train.parquet"
TEST = PREPARED / "test.parquet"
SCHEMA = PREPARED / "schema.json"
HPO = Path("artifacts/hpo")
STUDY_JOURNAL = HPO / "study.journal"  # hpo.storage: journal (the default)
STUDY_DB = HPO / "study.db"  # hpo.storage: sqlite
TRIALS_CSV = HPO / "trials.csv"
RANKED_JSON = HPO / "ranked_trials.json"
STATISTICS_JSON = HPO / "statistics.json"
BEST_TRIAL_PARAMS = HPO / "best_parameters.json"
PARETO_CSV = HPO / "pareto.csv"
CV_RESULTS = Path("artifacts/cv/results.csv")
BEST_CONFIG = Path("artifacts/best/config.yaml")
BEST_PARAMS = Path("artifacts/best/params.json")
MODEL = Path("models/model.pt")
REFIT_EVALUATION = Path("artifacts/refit/evaluation.json")
METRICS = Path("metrics")


def sqlite_url(path: Path) -> str:
    """SQLite storage URL for a study file (absolute, so the cwd does not matter)."""
    return f"sqlite:///{path.resolve()}"


def metrics_file(stage: str) -> Path:
    """One metrics file per stage, named after it."""
    return METRICS / f"{stage}.json"


def write_json(path: Path, payload: Any) -> None:
    """Stable, diff-friendly JSON, written atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def read_json(path: Path) -> Any:
    """Read a JSON artifact; a missing file means an earlier stage has not run."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HpopipeError(f"{path}: not found (run the stage that produces it first: dvc repro)") from None
    except json.JSONDecodeError as err:
        raise HpopipeError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def write_yaml(path: Path, payload: Any) -> None:
    """YAML artifact (the best configuration), written atomically."""
    atomic_write_text(path, yaml.safe_dump(payload, sort_keys=False))


def read_yaml(path: Path) -> Any:
    """safe_load only: config files never construct arbitrary objects."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HpopipeError(f"{path}: not found (run the stage that produces it first: dvc repro)") from None


def write_frame(path: Path, frame: pd.DataFrame) -> None:
    """Parquet or CSV by extension, written atomically."""
    if path.suffix == ".parquet":
        atomic_write_bytes(path, frame.to_parquet(index=False))
    else:
        atomic_write_text(path, frame.to_csv(index=False))


def read_frame(path: Path) -> pd.DataFrame:
    """Read a frame an earlier stage wrote."""
    import pandas as pd

    if not path.exists():
        raise HpopipeError(f"{path}: not found (run the stage that produces it first: dvc repro)")
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
