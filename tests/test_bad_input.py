"""Bad input and untrusted files, through the real entry points of a real DVC project.

``BAD_INPUTS`` is the one list of bad inputs docs/reliability.md counts ("bad inputs
rejected n/n"). Each runs the command DVC would run for the stage that reads
it (``python -m stages.<stage>``) or the ``hpopipe`` CLI, in a copy of one
project that has been through the pipeline up to ``refit``, and must fail with exit status 2,
exactly one line on stderr naming the field or file, no traceback, and not a
byte of the project changed (the study database and the model included).

The stages are run directly rather than through ``dvc repro`` because DVC
itself deletes a stage's outputs before running it: that is DVC's clean-up,
restorable from its cache, not something hpopipe wrote. Cases whose entry
point imports torch (the hpo, cv and refit stages) are marked slow; the
others (``hpopipe validate``, the prepare stage) take a second or two each.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import REPO, TINY_PARAMS, inside, make_project, params_variant, subprocess_env

Raw = dict[str, Any]

# 40 rows, two features, classes 24/16: after the 25 % test split, 30 training rows
# with 18/12 per class, so 40 folds are more than the rows and 15 more than a class.
SMALL_CSV = "a,b,y\n" + "".join(f"{i},{(i * 7) % 11},{'p' if i < 24 else 'q'}\n" for i in range(40))


def _set(dotted: str, value: Any) -> Callable[[Raw], None]:
    def edit(raw: Raw) -> None:
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value

    return edit


def _sets(**values: Any) -> Callable[[Raw], None]:
    """Several edits at once; ``data__path`` stands for ``data.path``."""

    def edit(raw: Raw) -> None:
        for key, value in values.items():
            _set(key.replace("__", "."), value)(raw)

    return edit


SMALL_FOLDS_40 = _sets(data__path="data/raw/small.csv", data__target="y", cv__folds=40)
SMALL_FOLDS_15 = _sets(data__path="data/raw/small.csv", data__target="y", cv__folds=15)


@dataclass(frozen=True)
class BadInput:
    """One bad input: how to plant it, which entry point must refuse it, and the line it must print."""

    id: str
    kind: str  # the class of bad input, as the README lists it
    command: tuple[str, ...]  # ("stage", name) or ("hpopipe", *args)
    expect: str  # must appear in the one line on stderr
    edit: Callable[[Raw], None] | None = None
    text: Callable[[str], str] | None = None  # edits params.yaml as text (YAML-level problems)
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()  # stages run (in-process) before the snapshot
    damage: Callable[[Path], None] | None = None  # edits a file of the project (given its root)

    @property
    def slow(self) -> bool:
        """The hpo, cv, refit and report stages import torch: seconds per case even when idle."""
        return self.command[0] == "stage" and self.command[1] != "prepare"


def _damage_study(root: Path) -> None:
    """A line of the study journal overwritten by garbage, as by a bad disk or a bad copy (a cut
    at the end is no damage: the next append cuts it off, tests/test_journal_file.py)."""
    study = root / "artifacts/hpo/study.journal"
    lines = study.read_bytes().splitlines(keepends=True)
    lines[3] = b"\x00" * (len(lines[3]) - 1) + b"\n"
    study.write_bytes(b"".join(lines))


def _model_naming(factory: str) -> Callable[[Path], None]:
    """models/model.pt rewritten (weights_only-loadable, no pickle) to name ``factory`` in its config."""

    def damage(root: Path) -> None:
        path = root / "models/model.pt"
        payload = torch.load(path, weights_only=True)
        payload["config"]["model"] = {"factory": factory, "params": {}}
        torch.save(payload, path)

    return damage


# A module of the user's own that runs code when imported: a model file must not make anyone import it.
IMPORT_TOUCHES = {
    "evilmod.py": "import pathlib\npathlib.Path('{marker}').touch()\ndef build(p, n, k):\n    return None\n"
}
PREDICT = ("hpopipe", "predict", "--input", "data/raw/breast_cancer.csv", "--output")
REGRESSION_BAD = _sets(
    data={"path": "data/raw/bad.csv", "target": "y", "task": "regression"}, hpo__metric="rmse"
)


def _regression_csv(last: str) -> str:
    return "a,b,y\n" + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(19)) + last + "\n"


def _classes_csv(header: str, last: str) -> str:
    return header + "\n" + "".join(f"{i},{i % 3},{'p' if i < 10 else 'q'}\n" for i in range(20)) + last + "\n"


HPO = ("stage", "hpo")
VALIDATE = ("hpopipe", "validate")
SMALL = {"data/raw/small.csv": SMALL_CSV}
PREPARE_SMALL = ("prepare",)
TAG = '!!python/object/apply:os.system ["touch {marker}"]'

BAD_INPUTS: list[BadInput] = [
    # hpo.n_trials
    BadInput("n_trials-zero", "hpo.n_trials", HPO, "params.yaml: hpo.n_trials: ", _set("hpo.n_trials", 0)),
    BadInput(
        "n_trials-negative", "hpo.n_trials", VALIDATE, "params.yaml: hpo.n_trials: ", _set("hpo.n_trials", -3)
    ),
    BadInput(
        "n_trials-string",
        "hpo.n_trials",
        VALIDATE,
        "params.yaml: hpo.n_trials: ",
        _set("hpo.n_trials", "ten"),
    ),
    BadInput(
        "n_trials-absurd",
        "hpo.n_trials",
        VALIDATE,
        "params.yaml: hpo.n_trials: ",
        _set("hpo.n_trials", 10**9),
    ),
    # search space
    BadInput(
        "space-low-above-high",
        "search space",
        VALIDATE,
        "search_space.lr: min (0.1) is greater than max (0.01)",
        _set("search_space.lr", {"type": "log_uniform", "min": 0.1, "max": 0.01}),
    ),
    BadInput(
        "space-log-nonpositive",
        "search space",
        VALIDATE,
        "search_space.lr: log_uniform needs min > 0",
        _set("search_space.lr", {"type": "log_uniform", "min": 0.0, "max": 0.1}),
    ),
    BadInput(
        "space-step-not-dividing",
        "search space",
        VALIDATE,
        "search_space.dropout: step 0.07 does not divide",
        _set("search_space.dropout", {"type": "uniform", "min": 0.0, "max": 0.3, "step": 0.07}),
    ),
    BadInput(
        "space-empty-choice",
        "search space",
        VALIDATE,
        "search_space.width.values: ",
        _set("search_space.width", {"type": "choice", "values": []}),
    ),
    BadInput(
        "space-name-nothing-reads",
        "search space",
        VALIDATE,
        "params.yaml: search_space.seed_shift: nothing reads it: the mlp model reads n_layers, width, "
        "dropout, norm, embedding, embedding_scale; the training loop reads lr, weight_decay, batch_size, "
        "optimizer, schedule, momentum",
        _set("search_space.seed_shift", {"type": "int_uniform", "min": 0, "max": 2}),
    ),
    BadInput(
        "space-name-reused",
        "search space",
        HPO,
        "search_space.lr: duplicate key at line",
        text=lambda t: t.replace(
            "search_space:\n", "search_space:\n  lr: {type: uniform, min: 0.1, max: 0.2}\n"
        ),
    ),
    # names
    BadInput(
        "model-name-empty",
        "names",
        VALIDATE,
        "refit.registered_model_name: must not be empty",
        _set("refit.registered_model_name", ""),
    ),
    BadInput(
        "model-name-slash",
        "names",
        VALIDATE,
        "refit.registered_model_name: 'a/b' contains '/'",
        _set("refit.registered_model_name", "a/b"),
    ),
    BadInput(
        "model-name-dotdot",
        "names",
        VALIDATE,
        "refit.registered_model_name: '..' contains '..'",
        _set("refit.registered_model_name", ".."),
    ),
    BadInput(
        "model-name-nul",
        "names",
        VALIDATE,
        "refit.registered_model_name: 'a\\x00b' contains the control character",
        _set("refit.registered_model_name", "a\x00b"),
    ),
    BadInput(
        "model-name-shell",
        "names",
        VALIDATE,
        "contains the shell metacharacter ';'",
        _set("refit.registered_model_name", "m;touch PWNED"),
    ),
    BadInput(
        "model-name-600",
        "names",
        ("stage", "refit"),
        "refit.registered_model_name: is 600 characters long",
        _set("refit.registered_model_name", "m" * 600),
    ),
    BadInput(
        "experiment-slash",
        "names",
        HPO,
        "HPOPIPE_EXPERIMENT: '../runs' contains '/'",
        env={"HPOPIPE_EXPERIMENT": "../runs"},
    ),
    BadInput(
        "experiment-600",
        "names",
        VALIDATE,
        "HPOPIPE_EXPERIMENT: is 600 characters long",
        env={"HPOPIPE_EXPERIMENT": "e" * 600},
    ),
    BadInput(
        "experiment-newline",
        "names",
        VALIDATE,
        "HPOPIPE_EXPERIMENT: 'a\\nb' contains the control character",
        env={"HPOPIPE_EXPERIMENT": "a\nb"},
    ),
    BadInput(
        "study-dotdot",
        "names",
        ("hpopipe", "status", "--study", "../study"),
        "--study: '../study' contains '/'",
    ),
    BadInput(
        "study-shell",
        "names",
        ("hpopipe", "resume", "--study", "s$(touch {marker})"),
        "--study: ",
    ),
    BadInput("study-empty", "names", ("hpopipe", "resume", "--study", ""), "--study: must not be empty"),
    # data
    BadInput(
        "csv-zero-bytes",
        "data",
        ("stage", "prepare"),
        "data.path: data/raw/bad.csv: the file is empty (0 bytes)",
        _set("data.path", "data/raw/bad.csv"),
        files={"data/raw/bad.csv": ""},
    ),
    BadInput(
        "csv-header-only",
        "data",
        ("stage", "prepare"),
        "data.path: data/raw/bad.csv: the table is empty",
        _set("data.path", "data/raw/bad.csv"),
        files={"data/raw/bad.csv": "a,b,y\n"},
    ),
    BadInput(
        "target-missing",
        "data",
        ("stage", "prepare"),
        "data.target: column 'label' is not in data/raw/breast_cancer.csv",
        _set("data.target", "label"),
    ),
    BadInput(
        "target-all-nan",
        "data",
        ("stage", "prepare"),
        "data.target: every value of 'y' is missing",
        _set("data", {"path": "data/raw/bad.csv", "target": "y"}),
        files={"data/raw/bad.csv": "a,b,y\n" + "".join(f"{i},{i % 3},\n" for i in range(20))},
    ),
    BadInput(
        "target-infinite",
        "data",
        ("stage", "prepare"),
        "data.target: 'y' has 1 infinite value(s) in data/raw/bad.csv",
        _sets(data={"path": "data/raw/bad.csv", "target": "y", "task": "regression"}, hpo__metric="rmse"),
        files={
            "data/raw/bad.csv": "a,b,y\n"
            + "".join(f"{i},{i % 3},{i * 0.5}\n" for i in range(19))
            + "1,1,inf\n"
        },
    ),
    BadInput(
        "rows-fewer-than-folds",
        "data",
        ("stage", "cv"),
        "cv.folds: 40 folds need at least 40 training rows; data/prepared/train.parquet has 30",
        SMALL_FOLDS_40,
        files=SMALL,
        setup=PREPARE_SMALL,
    ),
    BadInput(
        "class-smaller-than-folds",
        "data",
        ("stage", "cv"),
        "cv.folds: 15 folds need at least 15 rows of every class; "
        "class 'q' has 12 in data/prepared/train.parquet",
        SMALL_FOLDS_15,
        files=SMALL,
        setup=PREPARE_SMALL,
    ),
    BadInput(
        "rows-fewer-than-folds-validate",
        "data",
        VALIDATE,
        "cv.folds: 40 folds need at least 40 training rows; the train split of data/raw/small.csv has 30",
        SMALL_FOLDS_40,
        files=SMALL,
    ),
    BadInput(
        "class-smaller-than-folds-validate",
        "data",
        VALIDATE,
        "cv.folds: 15 folds need at least 15 rows of every class; class 'q' has 12",
        SMALL_FOLDS_15,
        files=SMALL,
    ),
    # params.yaml itself
    BadInput(
        "yaml-python-tag",
        "params.yaml",
        ("stage", "prepare"),
        "params.yaml: evil: tag '!!python/object/apply:os.system' at line",
        text=lambda t: t + f"evil: {TAG}\n",
    ),
    BadInput(
        "yaml-python-tag-validate",
        "params.yaml",
        VALIDATE,
        "params.yaml: seed: tag '!!python/object/apply:os.system' at line 1",
        text=lambda t: re.sub(r"^seed: .*$", f"seed: {TAG}", t, count=1, flags=re.M),
    ),
    BadInput(
        "yaml-duplicate-top-level",
        "params.yaml",
        VALIDATE,
        "params.yaml: hpo: duplicate key at line",
        text=lambda t: t + "hpo:\n  n_trials: 1\n",
    ),
    BadInput(
        "unknown-key",
        "params.yaml",
        VALIDATE,
        "params.yaml: hpo.n_trail: unknown key",
        _set("hpo.n_trail", 3),
    ),
    # storages and workers
    BadInput(
        "storage-sqlite-several-workers",
        "storage",
        VALIDATE,
        "params.yaml: hpo.storage: SQLite takes one writer",
        _sets(hpo__n_workers=2, hpo__storage="sqlite"),
    ),
    BadInput(
        "storage-unknown-scheme",
        "storage",
        VALIDATE,
        "params.yaml: hpo.storage: unknown storage 'mysql://db/optuna'",
        _set("hpo.storage", "mysql://db/optuna"),
    ),
    BadInput(
        "storage-password-in-params",
        "storage",
        VALIDATE,
        "params.yaml: hpo.storage: a password here would be copied into dvc.lock",
        _set("hpo.storage", "postgresql://hpo:secret@db/optuna"),
    ),
    BadInput(
        "storage-env-unset",
        "storage",
        HPO,
        "hpo.storage: environment variable HPOPIPE_UNSET_STORAGE is not set",
        _set("hpo.storage", "env:HPOPIPE_UNSET_STORAGE"),
    ),
    BadInput(
        "storage-query-password",
        "storage",
        VALIDATE,
        "params.yaml: hpo.storage: a password here would be copied into dvc.lock",
        _set("hpo.storage", "postgresql://postgres@127.0.0.1:5432/db?password=QSECRET-8888"),
    ),
    BadInput(
        "storage-password-with-slash",
        "storage",
        VALIDATE,
        "params.yaml: hpo.storage: a password here would be copied into dvc.lock",
        _set("hpo.storage", "postgresql://postgres:canary/SECRET-7777@127.0.0.1:5432/db"),
    ),
    # secrets anywhere else in params.yaml: DVC copies every param into dvc.lock
    BadInput(
        "secret-token-in-model-params",
        "secrets",
        VALIDATE,
        "params.yaml: model.params.source: a password here would be copied into dvc.lock",
        _set("model.params", {"source": "https://example.org/w.bin?access_token=TSECRET-9999"}),
    ),
    BadInput(
        "secret-userinfo-in-choice",
        "secrets",
        VALIDATE,
        "params.yaml: search_space.mirror.values[0]: a password here would be copied into dvc.lock",
        _set("search_space.mirror", {"type": "choice", "values": ["s3://k:p@ss/w@rd@bucket/x"]}),
    ),
    # MLflow's store, from MLFLOW_TRACKING_URI (psycopg 3 is not installed here; psycopg2 is)
    BadInput(
        "mlflow-driver-missing",
        "tracking",
        HPO,
        "MLFLOW_TRACKING_URI: postgresql+psycopg://postgres:***@127.0.0.1:5432/mlflow: "
        "its driver 'psycopg' is not installed",
        env={
            "HPOPIPE_TRACKING": "on",
            "MLFLOW_TRACKING_URI": "postgresql+psycopg://postgres:MSECRET-1/x@127.0.0.1:5432/mlflow",
        },
    ),
    # values that would train garbage
    BadInput(
        "space-batch-size-below-one",
        "sizes",
        VALIDATE,
        "params.yaml: search_space.batch_size: sizes the model or its batches, so its values must be "
        "whole numbers >= 1: 0 is below 1",
        _set("search_space.batch_size", {"type": "choice", "values": [0, -5]}),
    ),
    BadInput(
        "space-width-range-from-zero",
        "sizes",
        VALIDATE,
        "params.yaml: search_space.width: sizes the model or its batches, so its range must start at 1",
        _set("search_space.width", {"type": "int_uniform", "min": 0, "max": 8}),
    ),
    BadInput(
        "space-width-true",
        "sizes",
        VALIDATE,
        "params.yaml: search_space.width: sizes the model or its batches, so its values must be whole "
        "numbers >= 1: True is not a number",
        _set("search_space.width", {"type": "choice", "values": [True]}),
    ),
    BadInput(
        "model-params-layers-zero",
        "sizes",
        VALIDATE,
        "params.yaml: model.params.n_layers: sizes the model or its batches, so its value must be whole "
        "numbers >= 1: 0 is below 1",
        _set("model.params", {"n_layers": 0}),
    ),
    BadInput(
        "model-params-heads-fraction",
        "sizes",
        VALIDATE,
        "params.yaml: model.params.n_heads: sizes the model or its batches, so its value must be whole "
        "numbers >= 1: 2.5 is not a whole number",
        _set("model.params", {"n_heads": 2.5}),
    ),
    BadInput(
        "space-choice-mixed-types",
        "search space",
        VALIDATE,
        "params.yaml: search_space.width.values: [16, 16, True, 1, 1.0, '16'] mixes booleans and numbers "
        "and strings",
        _set("search_space.width", {"type": "choice", "values": [16, 16, True, 1, 1.0, "16"]}),
    ),
    BadInput(
        "space-choice-duplicate",
        "search space",
        VALIDATE,
        "params.yaml: search_space.width.values: 1.0 is listed twice",
        _set("search_space.width", {"type": "choice", "values": [1, 16, 1.0]}),
    ),
    BadInput(
        "feature-infinite",
        "data",
        ("stage", "prepare"),
        "data.path: column 'a' has 1 infinite value(s) in data/raw/bad.csv",
        _sets(data__path="data/raw/bad.csv", data__target="y"),
        files={"data/raw/bad.csv": _classes_csv("a,b,y", "inf,1,p")},
    ),
    BadInput(
        "feature-float32-overflow",
        "data",
        VALIDATE,
        "data.path: column 'b' has 1 value(s) beyond float32's range",
        _sets(data__path="data/raw/bad.csv", data__target="y"),
        files={"data/raw/bad.csv": _classes_csv("a,b,y", "1,1e39,q")},
    ),
    BadInput(
        "target-times-1e307",
        "data",
        ("stage", "prepare"),
        "data.target: 'y' has 1 value(s) beyond float32's range",
        REGRESSION_BAD,
        files={"data/raw/bad.csv": _regression_csv("1,1,9.5e307")},
    ),
    BadInput(
        "target-too-large-to-standardise",
        "data",
        ("stage", "prepare"),
        "data.target: 'y' has values too large to standardise in float32",
        REGRESSION_BAD,
        files={"data/raw/bad.csv": _regression_csv("1,1,3e30")},
    ),
    BadInput(
        "column-reserved-name",
        "data",
        ("stage", "prepare"),
        "data.path: data/raw/bad.csv: column name(s) ['__target__'] are reserved",
        _sets(data__path="data/raw/bad.csv", data__target="y"),
        files={"data/raw/bad.csv": _classes_csv("a,__target__,y", "1,1,q")},
    ),
    BadInput(
        "csv-duplicate-header",
        "data",
        ("stage", "prepare"),
        "data.path: data/raw/bad.csv: column name(s) ['a'] appear more than once in the header",
        _sets(data__path="data/raw/bad.csv", data__target="y"),
        files={"data/raw/bad.csv": _classes_csv("a,a,y", "1,1,q")},
    ),
    # names that run code: factories, callbacks, model files
    BadInput(
        "callbacks-builtins-eval",
        "code",
        VALIDATE,
        "params.yaml: hpo.callbacks: 'builtins:eval' names Python's standard library (builtins)",
        _set("hpo.callbacks", ["builtins:eval"]),
    ),
    BadInput(
        "callbacks-stdlib-import",
        "code",
        VALIDATE,
        "params.yaml: hpo.callbacks: 'this:s' names Python's standard library (this)",
        _set("hpo.callbacks", ["this:s"]),
    ),
    BadInput(
        "on-new-best-stdlib",
        "code",
        VALIDATE,
        "params.yaml: hpo.on_new_best: 'os:system' names Python's standard library (os)",
        _set("hpo.on_new_best", ["os:system"]),
    ),
    BadInput(
        "factory-os-system",
        "code",
        VALIDATE,
        "params.yaml: model.factory: 'os:system' names Python's standard library (os)",
        _set("model", {"factory": "os:system"}),
    ),
    BadInput(
        "factory-not-importable",
        "code",
        VALIDATE,
        "params.yaml: model.factory: cannot import 'no_such_pkg_hpopipe.models'",
        _set("model", {"factory": "no_such_pkg_hpopipe.models:build"}),
    ),
    BadInput(
        "factory-not-callable",
        "code",
        VALIDATE,
        "params.yaml: hpo.callbacks: 'constmod' has no function 'X'",
        _set("hpo.callbacks", ["constmod:X"]),
        files={"constmod.py": "X = 3\n"},
    ),
    BadInput(
        "model-file-names-a-factory",
        "code",
        (*PREDICT[:-1], "--output", "p.csv"),
        "--model: models/model.pt: names the factory 'evilmod:build', which loading would import and run",
        files=IMPORT_TOUCHES,
        damage=_model_naming("evilmod:build"),
    ),
    BadInput(
        "model-file-names-builtins",
        "code",
        (*PREDICT[:-1], "--output", "p.csv", "--trust-factory"),
        "--model: models/model.pt: config: field 'model': Value error, "
        "model.factory: 'builtins:print' names Python's",
        damage=_model_naming("builtins:print"),
    ),
    # outputs the pipeline owns
    BadInput(
        "predict-over-the-study",
        "outputs",
        (*PREDICT, "artifacts/hpo/study.journal"),
        "--output: artifacts/hpo/study.journal lies in artifacts, which the pipeline owns",
    ),
    BadInput(
        "predict-over-params",
        "outputs",
        (*PREDICT, "params.yaml"),
        "--output: params.yaml lies in params.yaml",
    ),
    BadInput(
        "predict-over-dvc-lock", "outputs", (*PREDICT, "./dvc.lock"), "--output: dvc.lock lies in dvc.lock"
    ),
    BadInput(
        "predict-over-scratch",
        "outputs",
        (*PREDICT, ".hpopipe/x.csv"),
        "--output: .hpopipe/x.csv lies in .hpopipe",
    ),
    BadInput(
        "predict-over-its-input",
        "outputs",
        (*PREDICT, "data/raw/breast_cancer.csv"),
        "--output: data/raw/breast_cancer.csv lies in data",
    ),
    # a damaged study file
    BadInput(
        "study-damaged-studies",
        "study file",
        ("hpopipe", "studies"),
        "artifacts/hpo/study.journal: the study journal is damaged (line 4 is not JSON): "
        "bring back its last backup with `hpopipe restore",
        damage=_damage_study,
    ),
    BadInput(
        "study-damaged-status",
        "study file",
        ("hpopipe", "status"),
        "artifacts/hpo/study.journal: the study journal is damaged (line 4 is not JSON)",
        damage=_damage_study,
    ),
    BadInput(
        "study-damaged-hpo",
        "study file",
        HPO,
        "artifacts/hpo/study.journal: the study journal is damaged (line 4 is not JSON)",
        damage=_damage_study,
    ),
    # params.yaml too deep or too big
    BadInput(
        "yaml-5000-deep",
        "params.yaml",
        VALIDATE,
        "params.yaml: nested more than 32 levels deep at line",
        text=lambda t: t + "deep: " + "[" * 5000 + "]" * 5000 + "\n",
    ),
    BadInput(
        "yaml-2mb",
        "params.yaml",
        VALIDATE,
        "params.yaml: more than 1,000,000 bytes, the most a params file may hold",
        text=lambda t: t + ("# " + "x" * 98 + "\n") * 20_000,
    ),
]

# The project every case copies: the tiny sweep run up to `refit` so that a study database, trial
# checkpoints and a model exist to be left untouched. Built in-process (the stages' own main()),
# which saves five interpreter start-ups; the cases themselves run as separate processes.
BASE_PARAMS = params_variant(TINY_PARAMS, {"hpo.n_trials": 2, "train.max_epochs": 2, "cv.top_k": 1})
PIPELINE_TO_REFIT = ("prepare", "hpo", "cv", "select", "refit")


def child_env(**extra: str) -> dict[str, str]:
    # No bytecode: an import must not count as a file the command wrote. Tracking off unless a case
    # turns it on: an MLflow store is outside what these tests are about (and would be a file written).
    settings = {"PYTHONDONTWRITEBYTECODE": "1", "HPOPIPE_LOG_LEVEL": "INFO", "HPOPIPE_TRACKING": "off"}
    return subprocess_env(**{**settings, **extra})


def run_command(command: tuple[str, ...], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    kind, *args = command
    argv = (
        [sys.executable, "-m", f"stages.{args[0]}"]
        if kind == "stage"
        else [sys.executable, "-m", "hpopipe.cli", *args]
    )
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def run_stages(root: Path, names: tuple[str, ...]) -> None:
    with inside(root):
        for name in names:
            importlib.import_module(f"stages.{name}").main()


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (.git and .dvc included) with its content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def base_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("base"), BASE_PARAMS)
    run_stages(root, PIPELINE_TO_REFIT)
    assert (root / "models/model.pt").is_file() and (root / "artifacts/hpo/study.journal").is_file()
    assert list((root / ".hpopipe/checkpoints").rglob("*.pt"))
    return root


def copy_project(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest, symlinks=True)
    return dest


def plant(case: BadInput, root: Path, marker: Path) -> None:
    """Write the case's files and params.yaml; ``{marker}`` becomes a path that must stay absent."""
    for rel, content in case.files.items():
        path = root / rel
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{marker}", str(marker)))
    if case.damage is not None:
        case.damage(root)
    text = (root / "params.yaml").read_text()
    if case.edit is not None:
        raw = yaml.safe_load(text)
        case.edit(raw)
        text = yaml.safe_dump(raw, sort_keys=False)
    if case.text is not None:
        text = case.text(text)
    (root / "params.yaml").write_text(text.replace("{marker}", str(marker)))


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in BAD_INPUTS]
)
def test_bad_input_is_refused_in_one_line_and_changes_nothing(
    case: BadInput, base_project: Path, tmp_path: Path
) -> None:
    root = copy_project(base_project, tmp_path / "project")
    marker = tmp_path / "PWNED"
    plant(case, root, marker)
    env = child_env(**{k: v.replace("{marker}", str(marker)) for k, v in case.env.items()})
    run_stages(root, case.setup)
    command = tuple(a.replace("{marker}", str(marker)) for a in case.command)
    before = snapshot(root)

    proc = run_command(command, root, env)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hpopipe: error: ") and case.expect in lines[0], lines[0]
    assert snapshot(root) == before
    assert not marker.exists()


def test_readme_counts_every_bad_input() -> None:
    """docs/reliability.md's "bad inputs rejected n/n" and its list of classes come from BAD_INPUTS."""
    readme = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    n = len(BAD_INPUTS)
    assert f"bad inputs rejected: {n}/{n}" in section.lower()
    for kind in {c.kind for c in BAD_INPUTS}:
        assert f"**{kind}**" in section, kind


def test_each_kind_has_its_cases() -> None:
    """The classes issue 7 names are all in the matrix (storage schemes are tested with the storages)."""
    ids = {c.id for c in BAD_INPUTS}
    for wanted in (
        "n_trials-zero",
        "space-name-reused",
        "model-name-600",
        "experiment-slash",
        "study-dotdot",
    ):
        assert wanted in ids
    for wanted in ("csv-zero-bytes", "target-all-nan", "rows-fewer-than-folds", "class-smaller-than-folds"):
        assert wanted in ids
    assert "yaml-python-tag" in ids


# ---------------------------------------------------------------- untrusted text and files


def test_no_stage_command_interpolates_a_param() -> None:
    """DVC runs ``cmd`` through a shell with ``${...}`` unquoted: no stage may have any."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        assert "${" not in stage["cmd"] and "$(" not in stage["cmd"], name


@pytest.mark.slow
def test_shell_text_in_free_text_params_never_runs(base_project: Path, tmp_path: Path) -> None:
    """Free text in params.yaml travels through a whole `dvc repro` (into dvc.lock, the study and its
    exports) without ever reaching a shell."""
    root = copy_project(base_project, tmp_path / "project")
    markers = [tmp_path / f"PWNED{i}" for i in range(3)]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    note = {"type": "choice", "values": [f"x; touch {markers[0]}", f"$(touch {markers[1]})"]}
    # A tuned name nothing reads is refused: `note` gates dropout (on either value), so the space reads it.
    dropout = {**raw["search_space"].pop("dropout"), "when": {"note": note["values"]}}
    raw["search_space"] = {"note": note, **raw["search_space"], "dropout": dropout}
    raw["model"]["params"] = {"comment": f"`touch {markers[2]}`"}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "hpo"], cwd=root, env=child_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lock = yaml.safe_load((root / "dvc.lock").read_text())  # the text did travel
    assert lock["stages"]["hpo"]["params"]["params.yaml"]["search_space"]["note"]["values"][0].endswith(
        f"touch {markers[0]}"
    )
    exported = (root / "artifacts/hpo/trials.csv").read_text()
    assert any(value in exported for value in raw["search_space"]["note"]["values"])
    assert not any(m.exists() for m in markers)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.target", "x; touch {marker}"),
        ("data.path", "data/raw/$(touch {marker}).csv"),
        ("model.factory", "x; touch {marker}"),
        ("hpo.callbacks", ["os:system; touch {marker}"]),
    ],
)
def test_shell_text_in_a_refused_param_never_runs(
    base_project: Path, tmp_path: Path, key: str, value: Any
) -> None:
    root = copy_project(base_project, tmp_path / "project")
    marker = tmp_path / "PWNED"
    raw = yaml.safe_load((root / "params.yaml").read_text())
    if key == "model.factory":
        raw["model"] = {"factory": value}
    else:
        _set(key, value)(raw)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False).replace("{marker}", str(marker)))
    proc = subprocess.run(["dvc", "repro"], cwd=root, env=child_env(), capture_output=True, text=True)
    assert proc.returncode != 0
    assert not marker.exists(), proc.stdout + proc.stderr


class _Payload:
    """Unpickling this runs ``touch <marker>``: the classic malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def plant_pickle(path: Path, marker: Path, *, torch_format: bool) -> None:
    payload = {"format": "hpopipe-model/1", "state_dict": _Payload(marker), "params_hash": "x"}
    if torch_format:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))


@pytest.mark.parametrize("torch_format", [True, False], ids=["torch-zip", "raw-pickle"])
def test_planted_pickle_is_live_when_unpickled_unsafely(tmp_path: Path, torch_format: bool) -> None:
    """The control: the payload the next tests plant does run code if anyone unpickles it."""
    marker = tmp_path / "LIVE"
    path = tmp_path / "evil.pt"
    plant_pickle(path, marker, torch_format=torch_format)
    if torch_format:
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("torch_format", [True, False], ids=["torch-zip", "raw-pickle"])
def test_planted_model_never_runs_on_predict(base_project: Path, tmp_path: Path, torch_format: bool) -> None:
    root = copy_project(base_project, tmp_path / "project")
    marker = tmp_path / "PWNED"
    plant_pickle(root / "models/model.pt", marker, torch_format=torch_format)
    before = snapshot(root)
    args = (
        "predict",
        "--model",
        "models/model.pt",
        "--input",
        "data/raw/breast_cancer.csv",
        "--output",
        "p.csv",
    )
    proc = run_command(("hpopipe", *args), root, child_env())
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("hpopipe: error: --model: models/model.pt: not a readable hpopipe model")
    assert not marker.exists()
    assert snapshot(root) == before


@pytest.mark.slow
def test_planted_trial_checkpoint_never_runs_on_resume(base_project: Path, tmp_path: Path) -> None:
    """Every trial checkpoint replaced by a malicious pickle; the trials are retried (so they try to
    resume from those files): each is skipped with a warning naming it, and retrains from scratch."""
    root = copy_project(base_project, tmp_path / "project")
    marker = tmp_path / "PWNED"
    planted = sorted((root / ".hpopipe/checkpoints").rglob("*.pt"))
    assert planted
    for path in planted:
        plant_pickle(path, marker, torch_format=True)
    resume = run_command(("hpopipe", "resume", "--states", "complete"), root, child_env())
    assert resume.returncode == 0, resume.stderr
    proc = run_command(("stage", "hpo"), root, child_env())
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()
    for path in planted:
        assert f"checkpoint {path.relative_to(root)} is unreadable" in proc.stderr, proc.stderr
    summary = json.loads((root / "metrics/hpo.json").read_text())
    assert summary["complete"] + summary["pruned"] == 2 and summary["fail"] == 0, summary
