"""The study journal (the default storage) survives a dead writer and a torn write, and backs up."""

from __future__ import annotations

import fcntl
import logging
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from hpopipe.errors import HpopipeError
from hpopipe.sweep import journal_file
from hpopipe.sweep.backup import backup_study, restore_study
from hpopipe.sweep.storage import file_spec, journal_spec, open_storage, resolve
from tests.conftest import subprocess_env


def _study(path: Path, xs: tuple[float, ...]) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=open_storage(journal_spec(path)), load_if_exists=True)
    for x in xs:
        study.enqueue_trial({"x": x})
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return study


def _xs(path: Path) -> list[float]:
    study = optuna.load_study(study_name="s", storage=open_storage(journal_spec(path)))
    return [t.params["x"] for t in study.trials]


def test_the_default_storage_is_a_journal_in_artifacts_hpo(tmp_path: Path) -> None:
    from hpopipe.config import HpoConfig

    spec = resolve(HpoConfig().storage, root=tmp_path)
    assert (spec.kind, spec.path) == ("journal", tmp_path / "study.journal")
    assert file_spec(tmp_path / "a.journal").kind == "journal"
    assert file_spec(tmp_path / "a.db").kind == "sqlite"


def test_a_torn_last_line_is_skipped_then_cut_off_before_the_next_write(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "study.journal"
    _study(path, (0.1, 0.2))
    whole = path.read_bytes()
    with path.open("ab") as handle:  # a write cut short: a full disk, a machine that died
        handle.write(b'{"op_code":4,"worker_id":"x","trial_id":')
    assert _xs(path) == [0.1, 0.2]  # Optuna's reader skips it
    with caplog.at_level(logging.WARNING, logger="hpopipe.sweep.journal_file"):
        _study(path, (0.3,))
    assert "its last write was cut short (40 bytes); they are dropped" in caplog.text
    assert path.read_bytes().startswith(whole) and path.read_bytes().endswith(b"\n")
    assert _xs(path) == [0.1, 0.2, 0.3]  # without the cut, the glued line would stop this read


def test_a_finished_trial_is_on_disk_and_its_epochs_cost_no_sync_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "study.journal"
    synced: list[int] = []  # the file's size at each fsync: every byte before it is durable
    fsync = journal_file.os.fsync

    def counted_fsync(fd: int) -> None:
        synced.append(path.stat().st_size)
        fsync(fd)

    monkeypatch.setattr(journal_file.os, "fsync", counted_fsync)
    study = optuna.create_study(study_name="s", storage=open_storage(journal_spec(path)))
    appends = len(path.read_bytes().splitlines())
    synced.clear()

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.suggest_int("n", 1, 3)
        for step in range(10):
            trial.report(x * step, step)
        trial.set_user_attr("best_epoch", 9)
        return x

    study.optimize(objective, n_trials=2)
    appends = len(path.read_bytes().splitlines()) - appends
    assert appends == 2 * (1 + 2 + 10 + 1 + 1)  # create, 2 params, 10 epochs, an attribute, the end
    assert len(synced) == 2  # each trial's end, not its start and 13 details
    study.enqueue_trial({"x": 0.5, "n": 2})
    assert len(synced) == 3 and synced[-1] == path.stat().st_size  # a queued trial is on disk at once
    study.optimize(objective, n_trials=1)
    assert len(synced) == 5  # the queued trial taken (WAITING to RUNNING, a state change) and its end
    assert synced[-1] == path.stat().st_size  # once told, every byte of the study is durable


def test_a_damaged_line_inside_the_journal_is_one_line_naming_the_file_and_the_way_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "study.journal"
    _study(path, (0.1, 0.2))
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:2], b"\x00\x00garbage\n", *lines[2:]]))
    with pytest.raises(HpopipeError) as raised:
        open_storage(journal_spec(path))
    assert str(raised.value) == (
        f"{path}: the study journal is damaged (line 3 is not JSON): bring back its last backup with "
        "`hpopipe restore --from DIR` (DIR: hpo.backup_dir), or move the file away to start the sweep afresh"
    )


def test_a_writer_killed_holding_the_append_lock_does_not_hold_it_any_more(tmp_path: Path) -> None:
    path = tmp_path / "study.journal"
    path.touch()
    code = (
        "import time; from pathlib import Path; from hpopipe.sweep.journal_file import FlockLock\n"
        f"lock = FlockLock(Path({str(path)!r})); lock.__enter__()\n"
        "print('held', flush=True); time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=subprocess_env())
    assert child.stdout is not None and child.stdout.readline() == b"held\n"
    lock_file = path.with_name("study.journal.append-lock")
    with lock_file.open("ab") as handle:
        with pytest.raises(BlockingIOError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while the writer lives
        child.send_signal(signal.SIGKILL)
        child.wait()
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free at once: no grace period to wait out
    _study(path, (0.5,))
    assert _xs(path) == [0.5]


def test_backup_and_restore_of_a_journal_keep_both_versions(tmp_path: Path) -> None:
    live = tmp_path / "hpo/study.journal"
    live.parent.mkdir()
    _study(live, (0.1, 0.2, 0.3))
    with live.open("ab") as handle:
        handle.write(b'{"op_code":')  # a torn tail is not copied: the backup must replay
    backup = backup_study(live, tmp_path / "backup")
    assert backup == tmp_path / "backup/study.journal"
    assert journal_file.unreadable_line(backup) is None and backup.read_bytes().endswith(b"\n")
    _study(live, (0.4, 0.5))
    kept = restore_study(tmp_path / "backup", live)
    assert kept == live.with_name("study.journal.before-restore")
    assert _xs(live) == [0.1, 0.2, 0.3]
    assert _xs(kept) == [0.1, 0.2, 0.3, 0.4, 0.5]


def test_restore_refuses_a_backup_that_does_not_replay_and_changes_nothing(tmp_path: Path) -> None:
    live = tmp_path / "study.journal"
    _study(live, (0.1,))
    before = live.read_bytes()
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup/study.journal").write_bytes(b'{"op_code":0}\nnot json\n')
    with pytest.raises(
        HpopipeError, match=r"--from: .*study\.journal: not a readable study journal \(line 2"
    ):
        restore_study(tmp_path / "backup", live)
    assert live.read_bytes() == before
    assert not live.with_name("study.journal.before-restore").exists()
