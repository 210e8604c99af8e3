"""The storage's remembered reads: fewer queries per trial, and never a stale budget count.

Two storage objects on one real SQLite study play two processes: ``mine`` remembers what it
read; ``theirs`` writes behind its back.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from hpopipe.sweep.optuna_internals import trial_id
from hpopipe.sweep.outage import RetryingStorage
from hpopipe.sweep.storage import budget_lock, open_storage, sqlite_spec

NAME = "memo"


@pytest.fixture
def two(tmp_path: Path) -> tuple[RetryingStorage, RetryingStorage, int]:
    spec = sqlite_spec(tmp_path / "study.db")
    mine, theirs = open_storage(spec), open_storage(spec)
    assert isinstance(mine, RetryingStorage) and isinstance(theirs, RetryingStorage)
    optuna.create_study(study_name=NAME, storage=theirs)
    study_id = mine.get_study_id_from_name(NAME)
    return mine, theirs, study_id


def _add_trial(storage: RetryingStorage) -> None:
    study = optuna.load_study(study_name=NAME, storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)


def _queries(storage: RetryingStorage) -> list[str]:
    seen: list[str] = []
    assert storage.rdb is not None
    sqlalchemy.event.listen(storage.rdb.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_back_to_back_reads_cost_one_query_and_filter_by_state(
    two: tuple[RetryingStorage, RetryingStorage, int],
) -> None:
    mine, theirs, study_id = two
    _add_trial(theirs)
    seen = _queries(mine)
    everything = mine.get_all_trials(study_id, deepcopy=False)
    asked = len(seen)
    complete = mine.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
    running = mine.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
    assert len(seen) == asked  # answered from the first read
    assert [t.number for t in everything] == [t.number for t in complete] == [0]
    assert running == []
    assert mine.get_study_directions(study_id) == [optuna.study.StudyDirection.MINIMIZE]
    mine.set_study_user_attr(study_id, "written", True)  # a write forgets the trials only
    asked = len(seen)
    assert mine.get_study_directions(study_id) == [optuna.study.StudyDirection.MINIMIZE]
    assert mine.get_study_id_from_name(NAME) == study_id
    assert len(seen) == asked  # the study's id and directions are remembered for good


def test_another_process_s_trial_is_seen_after_a_write_the_budget_lock_or_the_ttl(
    two: tuple[RetryingStorage, RetryingStorage, int], tmp_path: Path
) -> None:
    mine, theirs, study_id = two

    def numbers() -> list[int]:
        return [t.number for t in mine.get_all_trials(study_id, deepcopy=False)]

    assert numbers() == []
    _add_trial(theirs)
    assert numbers() == []  # as if read together with the previous read
    mine.set_study_user_attr(study_id, "anything", 1)  # this process wrote: read afresh
    assert numbers() == [0]

    _add_trial(theirs)
    assert numbers() == [0]
    with budget_lock(sqlite_spec(tmp_path / "study.db"), mine, NAME):  # counting the budget
        assert numbers() == [0, 1]

    _add_trial(theirs)
    assert numbers() == [0, 1]
    time.sleep(mine.memo.ttl_s + 0.1)
    assert numbers() == [0, 1, 2]  # nothing is remembered longer than ttl_s
    assert [t.number for t in mine.get_all_trials(study_id, deepcopy=True)] == [0, 1, 2]


def test_a_study_deleted_and_made_again_is_found_under_its_new_id(
    two: tuple[RetryingStorage, RetryingStorage, int],
) -> None:
    mine, theirs, study_id = two
    _add_trial(theirs)
    assert len(mine.get_all_trials(study_id, deepcopy=False)) == 1
    optuna.delete_study(study_name=NAME, storage=mine)
    optuna.create_study(study_name=NAME, storage=mine, direction="maximize")
    new_id = mine.get_study_id_from_name(NAME)  # SQLite may give it the old id again
    assert mine.get_study_directions(new_id) == [optuna.study.StudyDirection.MAXIMIZE]
    assert mine.get_all_trials(new_id, deepcopy=False) == []


def test_this_process_s_writes_to_its_trial_are_read_back_without_a_query_as_the_database_has_them(
    two: tuple[RetryingStorage, RetryingStorage, int],
) -> None:
    mine, theirs, study_id = two
    mine.memo.ttl_s = 60.0  # a slow machine does not expire what this test reads back
    _add_trial(theirs)
    study = optuna.load_study(study_name=NAME, storage=mine)
    live = study.ask()
    before = mine.get_all_trials(study_id, deepcopy=False)  # read once: remembered
    seen = _queries(mine)
    live.suggest_float("lr", 1e-4, 1e-1, log=True)
    live.suggest_int("layers", 1, 4)
    live.suggest_categorical("act", ["relu", "gelu"])
    live.report(0.5, step=0)
    live.report(float("inf"), step=1)
    live.set_user_attr("pair", (1, "a"))  # JSON: a tuple reads back as a list
    mine.set_trial_system_attr(trial_id(live), "rung", 2)
    writes = len(seen)
    after = mine.get_all_trials(study_id, deepcopy=False)
    one = mine.get_trial(trial_id(live))
    assert len(seen) == writes  # no read went to the database
    assert before[1].params == {}  # what an earlier read returned is not changed under its holder
    theirs.forget()
    fresh = theirs.get_all_trials(study_id, deepcopy=False)
    assert after == fresh and one == fresh[1]
    assert list(after[1].params) == list(fresh[1].params)  # same order too
    assert after[1].user_attrs["pair"] == [1, "a"]
    one.params["lr"] = -1.0  # a caller's copy: optuna.Trial fills in what it gets
    assert mine.get_trial(trial_id(live)).params["lr"] == fresh[1].params["lr"]
