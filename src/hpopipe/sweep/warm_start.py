"""Warm start: a new study begins with what earlier studies on the same setting learned.

A changed search space, sampler or pruner is a new study (its name hashes them, see
:mod:`hpopipe.sweep.study`). With ``hpo.warm_start: auto`` that new study is not blind: before
its first trial, the finished trials (COMPLETE, and PRUNED with their intermediate values) of
earlier studies in the same storage whose *setting* is the same - data fingerprint, model,
training settings, validation split, seed and metric (:func:`~hpopipe.sweep.study.setting_key`)
- and whose parameters fit the new space are added with ``study.add_trials``, their
distributions rewritten to the new space. Widening a range thus keeps every old trial.

A trial fits when the new space, sampled through an ``optuna.trial.FixedTrial`` of its
parameters, asks for exactly its parameters and each value lies inside its new distribution:
a parameter the new space no longer tunes, one it tunes that the trial lacks, or a value
outside the new range (or off its step) makes it unfit.

What an added trial is and is not (each rule owned where it applies):

- it carries ``warm_start_from = "<study>#<number>"`` (:data:`~hpopipe.sweep.budget.WARM_START_FROM`);
- it does not count toward ``hpo.n_trials`` and holds no sweep position (so the sampler's
  re-seeding and the trials' seeds are those of a cold sweep, shifted by nothing), and sits in
  no Hyperband bracket;
- it is not exported: ``trials.csv``, ``ranked_trials.json`` and what CV may choose are the
  trials this sweep ran; ``statistics.json`` and ``metrics/hpo.json`` say how many were added.

It happens once, when the study is created (no trial yet) and is recorded on the study
(``warm_started``), so a resumed or extended sweep never adds more: the same earlier studies
give the same warm-started study, trial for trial (sources in study-name order, then trial
number).

**Reuse.** A configuration is never trained twice across studies: when the sampler proposes
parameters that a COMPLETE trial of a same-setting study already ran *with the same training
code* (a hash of the training wing's source and of a user model factory's file), the trial
takes that result - value, intermediate values, best epoch - instead of training, marked
``reused_from = "<study>#<number>"`` (:class:`Reuse`). It is an ordinary trial of this sweep
otherwise (it holds a position and counts toward the budget). The trial seed derives from the
sweep position, so the reused run had another one; the configuration (parameters, data, code,
``seed``) is what is compared. ``hpo.warm_start: none`` turns both off.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from hpopipe.config import Params, ParamSpec
from hpopipe.space import suggest
from hpopipe.sweep.backup import is_backup
from hpopipe.sweep.budget import REUSED_FROM, WARM_START_FROM, WARM_STARTED, warm_started
from hpopipe.sweep.optuna_internals import storage_of
from hpopipe.sweep.study import setting_key

log = logging.getLogger(__name__)

SETTING = "setting_key"  # study user attribute: what makes trial values comparable across studies
TRAINING_CODE = "training_code"  # study user attribute: hash of the code that trains a trial

_SOURCE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def training_code(params: Params) -> str:
    """A hash of the code that turns a configuration into a result: the training wing, the
    objective and a user model factory's module (its file, when it has one)."""
    here = Path(__file__).resolve().parent
    files = [*sorted((here.parent / "training").glob("*.py")), here / "objective.py", here / "trial_steps.py"]
    if params.model.factory is not None:
        from hpopipe.training.models import resolve_factory  # torch, only for a user factory

        source = inspect.getsourcefile(resolve_factory(params.model))
        if source is not None:
            files.append(Path(source))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def mark(study: optuna.Study, params: Params, fingerprint: str) -> None:
    """Record on the study what later studies compare against (every study, warm-started or not)."""
    for key, value in ((SETTING, setting_key(params, fingerprint)), (TRAINING_CODE, training_code(params))):
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def fit_space(params: dict[str, Any], space: dict[str, ParamSpec]) -> dict[str, BaseDistribution] | None:
    """The new space's distributions for ``params``, or None when they do not fit it (see module)."""
    fixed = optuna.trial.FixedTrial(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # FixedTrial warns (does not raise) on a value out of range
        try:
            suggest.suggest(fixed, space)  # type: ignore[arg-type]  # FixedTrial has Trial's suggest_*
        except ValueError:  # a parameter the new space needs and the trial lacks
            return None
    outside = any("out of the range" in str(w.message) for w in caught)  # Optuna's words, pinned by a test
    if outside or set(fixed.params) != set(params):
        return None
    return dict(fixed.distributions)


def earlier_trials(study: optuna.Study, key: str) -> list[tuple[str, FrozenTrial, str | None]]:
    """Finished trials of the other studies in ``study``'s storage with setting ``key``:
    ``(origin, trial, training code)``, in study-name then trial-number order.

    A trial that was itself warm-started is skipped (its original is listed from its own
    study), and one reused result is listed once (by the trial it came from). Backups
    (``hpo.fresh``, ``hpopipe resume``) are skipped: copies, and a fresh start means cold.
    """
    storage = storage_of(study)
    found: list[tuple[str, FrozenTrial, str | None]] = []
    seen: set[str] = set()
    others = [
        s
        for s in storage.get_all_studies()
        if s.study_name != study.study_name and not is_backup(s.study_name)
    ]
    for frozen in sorted(others, key=lambda s: s.study_name):
        if frozen.user_attrs.get(SETTING) != key:
            continue
        code = frozen.user_attrs.get(TRAINING_CODE)
        other = optuna.load_study(study_name=frozen.study_name, storage=storage)
        for trial in other.get_trials(deepcopy=False, states=_SOURCE_STATES):
            origin = str(trial.user_attrs.get(REUSED_FROM, f"{frozen.study_name}#{trial.number}"))
            if warm_started(trial) or origin in seen:
                continue
            seen.add(origin)
            found.append((origin, trial, code))
    return found


def warm_start(study: optuna.Study, params: Params, fingerprint: str) -> int:
    """Add the fitting finished trials of earlier same-setting studies to a new ``study``.

    Call once the study is open and before any worker asks for a trial (the hpo stage holds
    the budget lock). Returns how many were added; 0 for a study that already began, was
    warm-started before, or runs with ``hpo.warm_start: none``.
    """
    mark(study, params, fingerprint)
    if WARM_STARTED in study.user_attrs or study.get_trials(deepcopy=False):
        return 0
    added: list[FrozenTrial] = []
    if params.hpo.warm_start == "auto":
        for origin, trial, _ in earlier_trials(study, setting_key(params, fingerprint)):
            distributions = fit_space(trial.params, params.search_space)
            if distributions is not None:
                added.append(_copy(trial, origin, distributions))
    if added:
        study.add_trials(added)
    study.set_user_attr(WARM_STARTED, len(added))
    if added:
        sources = len({t.user_attrs[WARM_START_FROM].rsplit("#", 1)[0] for t in added})
        name = study.study_name
        log.info(
            "warm start: %d finished trials of %d earlier studies added to %s", len(added), sources, name
        )
    return len(added)


def _copy(trial: FrozenTrial, origin: str, distributions: dict[str, BaseDistribution]) -> FrozenTrial:
    attrs: dict[str, Any] = {WARM_START_FROM: origin}
    if "best_epoch" in trial.user_attrs:
        attrs["best_epoch"] = trial.user_attrs["best_epoch"]
    return optuna.trial.create_trial(
        state=trial.state,
        values=trial.values,
        params={name: trial.params[name] for name in distributions},
        distributions=distributions,
        user_attrs=attrs,
        intermediate_values=dict(trial.intermediate_values),
    )


@dataclass(frozen=True)
class Reused:
    """An earlier trial's result, for a proposal that repeats its configuration."""

    origin: str
    values: tuple[float, ...]
    intermediate_values: dict[int, float]
    best_epoch: int | None


class Reuse:
    """The COMPLETE trials of earlier same-setting studies run with the same training code,
    by configuration: what a proposal may take instead of training (see the module docstring)."""

    def __init__(self, results: dict[str, Reused]) -> None:
        self.results = results

    @classmethod
    def of(cls, study: optuna.Study, params: Params, fingerprint: str) -> Reuse:
        """The index for ``study``'s sweep; empty with ``hpo.warm_start: none``."""
        results: dict[str, Reused] = {}
        if params.hpo.warm_start == "auto":
            code = training_code(params)
            for origin, trial, trained_by in earlier_trials(study, setting_key(params, fingerprint)):
                if trained_by == code and trial.state == TrialState.COMPLETE and trial.values:
                    best = trial.user_attrs.get("best_epoch")
                    reused = Reused(
                        origin,
                        tuple(trial.values),
                        dict(trial.intermediate_values),
                        None if best is None else int(best),
                    )
                    results.setdefault(_config_key(trial.params), reused)
        return cls(results)

    def find(self, sampled: dict[str, Any]) -> Reused | None:
        """The earlier result for exactly these parameters, if there is one."""
        return self.results.get(_config_key(sampled))


def _config_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)
