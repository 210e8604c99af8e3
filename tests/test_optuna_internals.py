"""Pins each Optuna internal hpopipe relies on (hpopipe.sweep.optuna_internals) to the installed Optuna.

An Optuna upgrade that changes one of them fails here, naming the piece, instead
of deep inside a sweep (a resumed sweep proposing different trials, a hook's
``study.stop()`` ignored, a retry written to the wrong trial). Real Optuna
objects throughout; no mocks.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from hpopipe.sweep.optuna_internals import (
    CHECKED_WITH,
    PositionalCmaEs,
    PositionalGrid,
    PositionalQMC,
    inherit_sampler_state,
    optimize_loop_window,
    pin_to_position,
    queued_params,
    random_states,
    rdb_of,
    same_trial,
    stop_requested,
    storage_of,
    trial_id,
    write_intermediate_values,
)
from hpopipe.sweep.trial_steps import Reports

REPO = Path(__file__).resolve().parents[1]
UPGRADE = f"(optuna_internals was checked against Optuna {CHECKED_WITH}; installed: {optuna.__version__})"


def _sqlite(tmp_path: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")


@pytest.fixture(params=["memory", "sqlite"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    """A study in each kind of storage a sweep uses (in-memory for tests, an RDB storage otherwise)."""
    storage = None if request.param == "memory" else _sqlite(tmp_path)
    return optuna.create_study(study_name="s", storage=storage)


# --- storage_of, trial_id: writing to trials that are not our live optuna.Trial ------------------


def test_storage_writes_by_trial_id_reach_the_study(study: optuna.Study) -> None:
    trial = study.ask()
    storage = storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage), f"Study._storage is not a storage {UPGRADE}"
    storage.set_trial_user_attr(trial_id(trial), "fail_reason", "because")
    storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
    (frozen,) = study.get_trials(deepcopy=False)
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["fail_reason"] == "because", (
        f"writes through Study._storage by Trial._trial_id no longer reach the study {UPGRADE}"
    )


def test_live_and_frozen_trials_share_their_storage_id(study: optuna.Study) -> None:
    live = study.ask()
    (frozen,) = study.get_trials(deepcopy=False)
    assert trial_id(live) == trial_id(frozen), f"Trial._trial_id and FrozenTrial._trial_id disagree {UPGRADE}"
    assert storage_of(study).get_trial(trial_id(frozen)).number == live.number


def test_trial_id_is_the_storage_key_not_the_number(tmp_path: Path) -> None:
    storage = _sqlite(tmp_path)
    first = optuna.create_study(study_name="a", storage=storage)
    first.ask()
    second = optuna.create_study(study_name="b", storage=storage)
    trial = second.ask()
    assert trial.number == 0 and trial_id(trial) != 0, f"_trial_id is not the storage's own key {UPGRADE}"
    assert storage_of(second).get_trial(trial_id(trial)).number == 0


def test_reading_through_the_storage_sees_writes_past_the_live_trials_cache(tmp_path: Path) -> None:
    """workers._give_reason: an objective may record its own fail_reason through another storage handle."""
    study = optuna.create_study(study_name="s", storage=_sqlite(tmp_path))
    trial = study.ask()
    other = optuna.load_study(study_name="s", storage=_sqlite(tmp_path))  # as an objective's own handle
    storage_of(other).set_trial_user_attr(trial_id(trial), "fail_reason", "told by the objective")
    fresh = storage_of(study).get_trial(trial_id(trial))
    assert fresh.user_attrs.get("fail_reason") == "told by the objective", (
        f"Study._storage.get_trial no longer reads past its cache {UPGRADE}"
    )


def test_a_finished_trial_refuses_a_second_end(study: optuna.Study) -> None:
    """workers.fail_stale: a 'dead' worker that finished after all wins; the storage tells us so."""
    trial = study.ask()
    study.tell(trial, 1.0)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage_of(study).set_trial_state_values(trial_id(trial), TrialState.FAIL)


# --- rdb_of: the PostgreSQL budget lock needs the engine under Optuna's cache ---------------------


def test_rdb_of_finds_the_rdb_storage_under_the_studys_cache(tmp_path: Path) -> None:
    rdb = _sqlite(tmp_path)
    study = optuna.create_study(study_name="s", storage=rdb)
    assert rdb_of(storage_of(study)) is rdb, f"_CachedStorage._backend is not the RDBStorage {UPGRADE}"
    assert rdb_of(rdb) is rdb
    assert rdb_of(storage_of(study)).engine is rdb.engine  # type: ignore[attr-defined]


# --- random_states: re-seeding makes a sampler a pure function of (seed, history) -----------------


def _grid() -> dict[str, list[float | int]]:
    return {"x": [i / 10 for i in range(11)], "y": list(range(11))}


SAMPLERS: dict[str, Callable[[int], BaseSampler]] = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=3),
    "tpe-multivariate-liar": lambda seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=3, multivariate=True, constant_liar=True
    ),
    "grid": lambda seed: PositionalGrid(_grid(), seed=seed),
    "qmc": lambda seed: PositionalQMC(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(population_size=4, seed=seed),
    "cmaes": lambda seed: PositionalCmaEs(seed=seed, n_startup_trials=3),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=3),
}


def _proposals(sampler: BaseSampler, n: int = 7) -> list[tuple[float, int]]:
    """Run ``n`` trials, re-seeding every random state and pinning the position before each
    (as SeededSampler does)."""
    study = optuna.create_study(sampler=sampler)
    out = []
    for number in range(n):
        for index, rng in enumerate(random_states(sampler)):
            rng.seed(1000 * number + index)
        pin_to_position(sampler, number)
        trial = study.ask()
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("y", 0, 10)
        study.tell(trial, (x - 0.3) ** 2 + y)
        out.append((x, y))
    return out


# GPSampler also keeps its last fitted kernel as the next fit's starting point (Optuna's TODO: "Make
# the cache lists system_attrs to make GPSampler stateless"): pin_to_position drops it.
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_reseeding_the_random_states_fixes_every_proposal(name: str) -> None:
    """A resumed worker's sampler is a fresh instance; a straight run's has already drawn: same proposals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fresh, used = SAMPLERS[name](7), SAMPLERS[name](7)
        _proposals(used, n=5)  # advance every random state it has, reachable or not
        assert random_states(fresh), f"{name}: no LazyRandomState found among its attributes {UPGRADE}"
        assert _proposals(fresh) == _proposals(used), (
            f"{name}: re-seeding the LazyRandomStates found in the sampler (and the samplers inside it) "
            f"no longer fixes its proposals: it draws from a random state random_states() cannot reach, "
            f"or keeps a state pin_to_position() does not reset {UPGRADE}"
        )


# --- renumbered samplers: Optuna reads the trial number where hpopipe needs the sweep position -----


def _positioned(sampler: BaseSampler, numbers_before: int, position: int) -> dict[str, float | int]:
    """Propose for the trial at sweep ``position`` after ``numbers_before`` trials (extra FAILs count)."""
    study = optuna.create_study(sampler=sampler)
    for number in range(numbers_before + 1):
        place = min(number, position)
        for index, rng in enumerate(random_states(sampler)):
            rng.seed(1000 * place + index)
        pin_to_position(sampler, place)
        trial = study.ask()
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("y", 0, 10)
        if position <= number < numbers_before:  # interrupted attempts before the trial we look at
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, (x - 0.3) ** 2 + y)
    return dict(study.trials[-1].params)


@pytest.mark.parametrize("name", ["grid", "cmaes", "qmc"])
def test_a_retry_shifting_trial_numbers_leaves_the_next_proposal_alone(name: str) -> None:
    """Grid point, CMA-ES seed and QMC point follow the sweep position, not the trial number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        straight = _positioned(SAMPLERS[name](7), numbers_before=4, position=4)
        shifted = _positioned(SAMPLERS[name](7), numbers_before=5, position=4)
    assert shifted == straight, f"{name}: a proposal depends on the trial number, not the position {UPGRADE}"


def test_optunas_grid_sampler_assigns_grid_points_by_trial_number() -> None:
    """Why PositionalGrid exists; if this fails, Optuna stopped doing it and PositionalGrid may go."""
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(_grid(), seed=7))
    study.ask()
    assert study.trials[0].system_attrs["grid_id"] == 0, f"GridSampler numbers grid points no more {UPGRADE}"


def test_a_retry_inherits_its_origins_generation() -> None:
    """NSGA-II never samples for a trial with fixed parameters, so a retry had no generation."""
    sampler = optuna.samplers.NSGAIISampler(population_size=4, seed=7)
    study = optuna.create_study(sampler=sampler)
    origin = study.ask()
    origin.suggest_float("x", 0.0, 1.0)
    study.tell(origin, state=TrialState.FAIL)
    study.enqueue_trial(origin.params)
    retry = study.ask()
    retry.suggest_float("x", 0.0, 1.0)
    key = "NSGAIISampler:generation"
    frozen = study.trials
    assert key in frozen[0].system_attrs and key not in frozen[1].system_attrs, (
        f"NSGA-II now samples for queued trials: inherit_sampler_state may be unneeded {UPGRADE}"
    )
    inherit_sampler_state(study, frozen[1], frozen[0])
    assert study.trials[1].system_attrs[key] == frozen[0].system_attrs[key]
    assert frozen[1].system_attrs[key] == frozen[0].system_attrs[key]  # the caller's copy too


def test_random_states_reach_samplers_inside_samplers() -> None:
    """TPE proposes its startup trials with a RandomSampler it holds: its state is reached too."""
    tpe = optuna.samplers.TPESampler(seed=1)
    alone = optuna.samplers.RandomSampler(seed=1)
    assert len(random_states(tpe)) > len(random_states(alone)), (
        f"TPESampler no longer holds its random fallback sampler as an attribute {UPGRADE}"
    )


# --- optimize_loop_window, stop_requested: study.stop() from our own trial loop -------------------


def test_study_stop_needs_the_window(study: optuna.Study) -> None:
    with pytest.raises(RuntimeError):
        study.stop()  # outside study.optimize: why the window exists
    with optimize_loop_window(study):
        study.stop()
    assert stop_requested(study), f"study.stop() no longer sets Study._stop_flag {UPGRADE}"


def test_the_window_closes_and_a_new_one_starts_without_a_stop(study: optuna.Study) -> None:
    with optimize_loop_window(study):
        study.stop()
    with pytest.raises(RuntimeError):
        study.stop()  # closed again: in_optimize_loop is reset
    with optimize_loop_window(study):
        assert not stop_requested(study), f"a new window still carries the last stop {UPGRADE}"
    assert not stop_requested(study)


def test_the_window_closes_when_a_hook_raises(study: optuna.Study) -> None:
    with pytest.raises(ValueError), optimize_loop_window(study):
        raise ValueError("a broken hook")
    with pytest.raises(RuntimeError):
        study.stop()


def test_trials_run_as_before_after_a_window(tmp_path: Path) -> None:
    """Asking and telling after the window behave as outside study.optimize (heartbeat checks and all)."""
    study = optuna.create_study(study_name="s", storage=_sqlite(tmp_path))
    with optimize_loop_window(study):
        pass
    trial = study.ask()
    study.tell(trial, 0.5)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]


# --- the adapter is the only place --------------------------------------------------------------

PRIVATE = re.compile(
    r"(optuna(\.\w+)*\._\w+"  # a private Optuna module: optuna.samplers._lazy_random_state
    r"|\._(storage|trial_id|stop_flag|thread_local|backend|rng|random_sampler|cached_frozen_trial)\b"
    r"|\._(study_id|get_trials|get_best_trial|get_bracket_id)\b|\.system_attrs\b"
    r"|[\"']_(storage|trial_id|stop_flag|thread_local|backend|rng|random_sampler)[\"']"
    r"|LazyRandomState|_CachedStorage)"
)


def test_a_queued_trial_keeps_its_parameters_where_queued_params_reads_them(study: optuna.Study) -> None:
    study.enqueue_trial({"x": 1.5}, user_attrs={"retry_of": 0})
    (queued,) = study.trials
    assert queued.state == TrialState.WAITING and queued.params == {}, UPGRADE
    assert queued_params(queued) == {"x": 1.5}, UPGRADE
    ran = study.ask()
    ran.suggest_float("x", 0, 2)
    study.tell(ran, 1.0)
    assert queued_params(study.trials[0]) == {"x": 1.5}


def test_nothing_else_touches_optuna_internals() -> None:
    adapter = REPO / "src/hpopipe/sweep/optuna_internals.py"
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for folder in ("src", "stages", "flows")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path != adapter
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not offenders, "Optuna internals outside sweep/optuna_internals.py:\n" + "\n".join(offenders)


def test_a_grid_sweep_that_uses_up_its_grid_ends_without_error(tmp_path: Path) -> None:
    """Our workers tell outside ``study.optimize``; Optuna's grid called ``study.stop()`` on its
    last point there, which raised (a grid sweep with ``n_trials`` = grid size crashed)."""
    sampler = PositionalGrid({"x": [0.0, 1.0], "y": [1, 2]}, seed=0)
    study = optuna.create_study(sampler=sampler, storage=_sqlite(tmp_path))
    seen = set()
    for number in range(4):
        pin_to_position(sampler, number)
        trial = study.ask()
        point = (trial.suggest_float("x", 0.0, 1.0), trial.suggest_int("y", 1, 2))
        study.tell(trial, point[0] + point[1])
        seen.add(point)
    assert seen == {(0.0, 1), (0.0, 2), (1.0, 1), (1.0, 2)}


def test_a_trial_created_from_a_template_is_the_same_trial_as_its_template(study: optuna.Study) -> None:
    """outage.py finds a queued retry whose commit looked lost by comparing it with its template."""
    template = optuna.trial.create_trial(
        state=TrialState.WAITING, system_attrs={"fixed_params": {"x": 1.5}}, user_attrs={"retry_of": 0}
    )
    created = storage_of(study).create_new_trial(study._study_id, template)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial_id(trial) == created and same_trial(trial, template), UPGRADE
    assert not same_trial(
        trial, optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"retry_of": 0})
    )


# --- write_intermediate_values: the epochs between pruning decisions in one transaction -----------


def test_intermediate_values_written_together_are_the_trials_as_if_reported(tmp_path: Path) -> None:
    import sqlalchemy

    rdb = _sqlite(tmp_path)
    study = optuna.create_study(study_name="s", storage=rdb, pruner=optuna.pruners.HyperbandPruner())
    trial = study.ask()
    commits: list[int] = []
    sqlalchemy.event.listen(rdb.engine, "commit", lambda conn: commits.append(1))
    assert write_intermediate_values(trial, [(1, 0.5), (2, 0.25)], storage_of(study)), UPGRADE
    assert len(commits) == 1, f"two values took {len(commits)} commits {UPGRADE}"
    assert trial._cached_frozen_trial.intermediate_values == {1: 0.5, 2: 0.25}, UPGRADE
    trial.report(0.75, 3)  # the live trial carries on as after reports of steps 1 and 2
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.25, 3: 0.75}
    assert not write_intermediate_values(trial, [(4, 1.0)], optuna.storages.InMemoryStorage())


def test_a_trial_reports_every_epoch_but_writes_only_at_the_pruners_steps(tmp_path: Path) -> None:
    import sqlalchemy

    rdb = _sqlite(tmp_path)
    study = optuna.create_study(study_name="s", storage=rdb, pruner=optuna.pruners.NopPruner())
    commits: list[int] = []
    sqlalchemy.event.listen(rdb.engine, "commit", lambda conn: commits.append(1))
    counted = {}
    for steps in ({1, 3, 9}, None):  # Hyperband's decision steps (1, 3, 9), then every epoch
        trial = study.ask()
        commits.clear()
        reports = Reports(trial, steps)
        for epoch in range(1, 12):
            assert reports.report(epoch, epoch / 10) is False
        reports.flush()
        counted[str(steps)] = len(commits)
        study.tell(trial, 1.1)
    for frozen in study.trials:
        assert frozen.intermediate_values == {e: e / 10 for e in range(1, 12)}
    # Step 1 alone; at 3 and 9 the values waiting (2; 4-8), then the step's own; 10-11 at the flush.
    assert counted == {"{1, 3, 9}": 1 + 2 + 2 + 1, "None": 11}, counted
