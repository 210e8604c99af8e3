"""`hpopipe status` and the sweep's progress reporter, on real studies (journal and SQLite files)
and a real terminal."""

from __future__ import annotations

import io
import logging
import os
import re
import select
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from hpopipe.errors import HpopipeError
from hpopipe.sweep.journal_file import is_journal, open_journal
from hpopipe.sweep.optuna_internals import trial_id
from hpopipe.sweep.progress import ProgressReporter, format_duration
from hpopipe.sweep.status import busy_seconds, format_status, latest_study, read_status

T0 = datetime(2026, 3, 1, 12, 0, 0)
DIST: dict[str, BaseDistribution] = {"x": FloatDistribution(0.0, 1.0)}


def trial(
    state: TrialState, start_s: float | None, end_s: float | None, value: float | None = None
) -> FrozenTrial:
    """A trial that started and ended at the given seconds after T0."""
    return FrozenTrial(
        number=0,
        state=state,
        value=value,
        datetime_start=None if start_s is None else T0 + timedelta(seconds=start_s),
        datetime_complete=None if end_s is None else T0 + timedelta(seconds=end_s),
        params={} if state == TrialState.WAITING else {"x": 0.5},
        distributions={} if state == TrialState.WAITING else DIST,
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=0,
    )


def storage(path: Path) -> optuna.storages.BaseStorage:
    """A study file's storage: a journal by its suffix (the default storage), else SQLite."""
    return open_journal(path) if is_journal(path) else optuna.storages.RDBStorage(f"sqlite:///{path}")


@pytest.fixture(params=["study.journal", "study.db"])
def study_db(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A sweep half done: 3 complete, 1 pruned, 1 failed, 1 running, 1 waiting; a 60 s pause in it."""
    path = tmp_path / request.param
    study = optuna.create_study(study_name="mlp-aaaa", storage=storage(path), direction="maximize")
    for t in (
        trial(TrialState.COMPLETE, 0, 30, 0.80),
        trial(TrialState.COMPLETE, 30, 60, 0.90),
        trial(TrialState.PRUNED, 60, 70, 0.50),
        trial(TrialState.FAIL, 70, 80),
        # 60 s when nothing ran (the sweep was stopped and resumed): not counted.
        trial(TrialState.COMPLETE, 140, 170, 0.85),
        trial(TrialState.RUNNING, 170, None),
        trial(TrialState.WAITING, None, None),
    ):
        study.add_trial(t)
    return path


def test_status_counts_states_and_measures_the_time_trials_ran(study_db: Path) -> None:
    status = read_status(study_db, n_trials=10, now=T0 + timedelta(seconds=180))
    assert status.study == "mlp-aaaa" and status.direction == "maximize"
    assert status.counts["COMPLETE"] == 3 and status.counts["PRUNED"] == 1 and status.counts["FAIL"] == 1
    assert status.counts["RUNNING"] == 1 and status.counts["WAITING"] == 1
    assert (status.best_value, status.best_trial) == (0.90, 1)
    assert status.busy_s == 120.0  # 0-80 and 140-180 (the running trial up to now)
    assert status.finished == 4
    assert status.rate_per_min == 2.0
    assert status.eta_s == 180.0  # 6 more at 2 per minute


def test_status_table_has_a_row_per_state_and_the_progress(study_db: Path) -> None:
    text = format_status(read_status(study_db, n_trials=10, now=T0 + timedelta(seconds=180)))
    rows = dict(line.split(None, 1) for line in text.splitlines() if not line.startswith("best"))
    assert rows["study"] == "mlp-aaaa (maximize)"
    assert (rows["complete"], rows["pruned"], rows["fail"], rows["running"], rows["waiting"]) == (
        "3",
        "1",
        "1",
        "1",
        "1",
    )
    assert rows["finished"] == "4 of 10 (complete + pruned)"
    assert rows["rate"] == "2.00 trials/min"
    assert rows["eta"] == "3m 00s"
    assert "best so far  0.9000 (trial 1)" in text
    assert "elapsed      2m 00s (while trials ran)" in text


def test_a_finished_sweep_says_done(study_db: Path) -> None:
    text = format_status(read_status(study_db, study="mlp-aaaa", n_trials=4))
    assert "eta" in text and "done" not in text  # the budget is reached, but a trial still runs and one waits
    store = storage(study_db)
    study = optuna.load_study(study_name="mlp-aaaa", storage=store)
    for t in study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING)):
        store.set_trial_state_values(trial_id(t), TrialState.FAIL)
    assert format_status(read_status(study_db, n_trials=4)).splitlines()[-1] == "eta          done"


def test_status_of_a_study_without_trials(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    optuna.create_study(study_name="empty", storage=storage(path))
    text = format_status(read_status(path))
    assert "best so far  -" in text and "rate         -" in text and "eta" not in text


def test_without_a_name_the_study_that_ran_last_is_shown(study_db: Path) -> None:
    older = optuna.create_study(study_name="mlp-old", storage=storage(study_db))
    older.add_trial(trial(TrialState.COMPLETE, -1000, -900, 0.1))
    backup = optuna.create_study(study_name="mlp-aaaa_backup-1", storage=storage(study_db))
    backup.add_trial(trial(TrialState.COMPLETE, 500, 600, 0.1))  # a copy, however recent, is not the sweep
    assert latest_study(storage(study_db), study_db) == "mlp-aaaa"
    assert read_status(study_db, study="mlp-old").counts["COMPLETE"] == 1


def test_status_errors_name_the_file_or_study(tmp_path: Path, study_db: Path) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(HpopipeError, match=r"nothing\.db: file not found"):
        read_status(missing)
    assert not missing.exists()  # a look never creates a storage
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database")
    with pytest.raises(HpopipeError, match=r"garbage\.db: the study database is damaged .*`hpopipe restore"):
        read_status(garbage)
    garbage = tmp_path / "garbage.journal"
    garbage.write_text('{"op_code": 0}\nnot a journal\n')
    with pytest.raises(
        HpopipeError, match=r"garbage\.journal: the study journal is damaged \(line 2 is not JSON"
    ):
        read_status(garbage)
    with pytest.raises(HpopipeError, match="no study named 'mlp-zzzz'"):
        read_status(study_db, study="mlp-zzzz")
    for empty in (tmp_path / "empty.db", tmp_path / "empty.journal"):
        storage(empty)
        with pytest.raises(HpopipeError, match="holds no study yet"):
            read_status(empty)


def test_busy_time_counts_overlapping_workers_once() -> None:
    spans = [trial(TrialState.COMPLETE, 0, 50, 1.0), trial(TrialState.COMPLETE, 10, 40, 1.0)]
    spans.append(trial(TrialState.COMPLETE, 45, 60, 1.0))
    assert busy_seconds(spans, T0) == 60.0


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "-"), (0.4, "0s"), (42, "42s"), (185, "3m 05s"), (7620, "2h 07m")]
)
def test_durations_read_at_a_glance(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == 1:
        raise optuna.TrialPruned()
    return x


def ticking(step: float) -> Callable[[], float]:
    """A clock that advances ``step`` seconds each time it is read."""
    now = [0.0]

    def clock() -> float:
        value = now[0]
        now[0] += step
        return value

    return clock


def test_off_a_terminal_each_trial_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(4, stream=stream, clock=ticking(10.0))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    with caplog.at_level(logging.INFO, logger="hpopipe.sweep.progress"):
        study.optimize(objective, n_trials=3, callbacks=[reporter.clear, reporter])
    lines = [r.getMessage() for r in caplog.records if r.name == "hpopipe.sweep.progress"]
    assert len(lines) == 3 and stream.getvalue() == ""
    assert lines[0].startswith("after trial 0: 1/4 finished, best ")
    assert lines[1].startswith("after trial 1: 2/4 finished")  # trial 1 was pruned: it counts
    assert lines[2] == f"after trial 2: 3/4 finished, best {study.best_value:.4f}, ETA 10s"


def read_all(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other end is closed and drained
            break
        if not chunk:
            break
        data += chunk
    return data.decode()


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: carriage return, erase-line and newline applied."""
    lines, col = [""], 0
    for token in re.findall(r"\x1b\[2K|.", output, re.S):
        if token == "\r":
            col = 0
        elif token == "\n":
            lines.append("")
        elif token == "\x1b[2K":
            lines[-1] = ""
        else:
            lines[-1] = lines[-1][:col] + token + lines[-1][col + 1 :]
            col += 1
    return lines


def test_on_a_terminal_one_line_is_redrawn_below_the_log_lines() -> None:
    controller, terminal = os.openpty()
    with open(terminal, "w") as stream:
        reporter = ProgressReporter(3, stream=stream, clock=ticking(10.0))
        assert reporter.tty

        def log_line(study: optuna.Study, trial: FrozenTrial) -> None:  # as hooks.TrialLogger would
            stream.write(f"trial {trial.number} {trial.state.name}\n")

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(objective, n_trials=2, callbacks=[reporter.clear, log_line, reporter])
        shown = read_all(controller)
        assert screen(shown)[-3:] == [
            "trial 0 COMPLETE",
            "trial 1 PRUNED",
            f"[################--------] 2/3 trials  best {study.best_value:.4f}  ETA 10s",
        ]
        study.optimize(objective, n_trials=1, callbacks=[reporter.clear, log_line, reporter])
        shown += read_all(controller)
    os.close(controller)
    assert shown.count("\x1b[2K[") == 3  # drawn after every trial
    assert screen(shown)[-3:] == [
        "trial 2 COMPLETE",
        f"[########################] 3/3 trials  best {study.best_value:.4f}  ETA 0s",
        "",  # the budget is reached: the bar stays, and the cursor moves below it
    ]


def test_a_sweep_cut_short_ends_the_line() -> None:
    stream = io.StringIO()
    reporter = ProgressReporter(10, stream=stream)
    reporter.close()  # nothing drawn (not a terminal): nothing to end
    assert stream.getvalue() == ""
    assert reporter.line(5, 0.5, 65.0) == "[############------------] 5/10 trials  best 0.5000  ETA 1m 05s"
