"""A full disk: one line naming the file and "no space left on device", nothing corrupted, and the
next run (with space again) carries on.

Each test mounts a small tmpfs (tests run as root in CI) and fills it to the last byte.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from optuna.trial import TrialState

from hpopipe.atomic import atomic_write_text
from hpopipe.errors import DiskFull
from hpopipe.sweep.budget import FINISHED
from hpopipe.training import checkpoints
from tests.sweeps import assert_invariants, load, run_stage, sweep_params


class SmallDisk:
    """A tmpfs of ``size`` at ``root``; :meth:`fill` takes every free byte, :meth:`free` gives it back."""

    def __init__(self, root: Path, size: str) -> None:
        self.root, self.filler = root, root / f"filler-{uuid.uuid4().hex[:6]}"
        root.mkdir(parents=True)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")

    def fill(self) -> None:
        chunk = b"\0" * (1 << 16)
        with open(self.filler, "ab", buffering=0) as handle:
            for size in (1 << 16, 4096, 512, 1):
                try:
                    while True:
                        handle.write(chunk[:size])
                except OSError as err:
                    assert err.errno == errno.ENOSPC
        assert shutil.disk_usage(self.root).free == 0

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.root)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk", "16m")
    try:
        yield small
    finally:
        small.unmount()


def test_an_atomic_write_on_a_full_disk_names_the_file_and_keeps_the_old_one(disk: SmallDisk) -> None:
    target = disk.root / "metrics.json"
    atomic_write_text(target, "old\n")
    disk.fill()
    with pytest.raises(DiskFull, match=rf"^{target}: no space left on device"):
        atomic_write_text(target, "new " * 100_000)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in disk.root.iterdir()) == sorted(
        ["metrics.json", disk.filler.name]
    )  # no temp


def test_a_checkpoint_on_a_full_disk_names_the_file_and_keeps_the_last_one(disk: SmallDisk) -> None:
    path = disk.root / "study" / "abc.pt"
    checkpoints.save(path, {"epoch": 1, "w": torch.zeros(10)}, keep_previous=True)
    disk.fill()
    with pytest.raises(DiskFull, match=rf"^{path}: no space left on device"):  # torch said "unexpected pos"
        checkpoints.save(path, {"epoch": 2, "w": torch.zeros(100_000)}, keep_previous=True)
    assert checkpoints.load(path)["epoch"] == 1


def _project(workdir: Path, prepared: Path, n_trials: int, **hpo: object) -> Path:
    raw = sweep_params(n_trials=n_trials, **hpo)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    if not (workdir / "data/prepared").exists():
        shutil.copytree(prepared, workdir / "data/prepared")
    return workdir


def _finished(workdir: Path) -> list[tuple[int, str, object, dict[str, object]]]:
    return [(t.number, t.state.name, t.value, t.params) for t in load(workdir).trials if t.state in FINISHED]


def _refused_in_one_line(out: str, path: str) -> None:
    assert "Traceback" not in out, out
    (line,) = [line for line in out.splitlines() if line.startswith("hpopipe: error:")]
    assert line.startswith(f"hpopipe: error: {path}") and "no space left on device" in line, out


@pytest.mark.slow
@pytest.mark.parametrize("full", ["study", "checkpoints"])
def test_the_hpo_stage_on_a_full_disk_stops_in_one_line_and_the_next_run_goes_on(
    full: str, tmp_path: Path, prepared_dir: Path, disk: SmallDisk
) -> None:
    """``study``: the whole project (study and scratch) is on the small disk; ``checkpoints``:
    only ``hpo.checkpoint_dir`` is, the study still takes writes."""
    if full == "study":
        workdir, hpo = disk.root / "project", {}
    else:
        workdir, hpo = tmp_path / "project", {"checkpoint_dir": str(disk.root / "scratch")}
    _project(workdir, prepared_dir, 2, **hpo)
    first = run_stage(workdir)
    assert first.returncode == 0, first.stdout
    before = _finished(workdir)
    assert len(before) == 2
    _project(workdir, prepared_dir, 4, **hpo)  # more trials: the same study grows
    disk.fill()
    cut = run_stage(workdir)
    assert cut.returncode == 2, cut.stdout
    # The study file (relative to the project, as the log names it), or the checkpoint being written.
    _refused_in_one_line(
        cut.stdout, "artifacts/hpo/study.journal" if full == "study" else str(disk.root / "scratch")
    )
    assert _finished(workdir) == before  # the study reads, its trials as they were
    assert not [t for t in load(workdir).trials if t.state == TrialState.COMPLETE and t.number >= 2]
    disk.free()
    again = run_stage(workdir)
    assert again.returncode == 0, again.stdout
    assert_invariants(workdir, 4)  # budget exact, a trial the full disk cut is retried


def test_a_quoted_parameter_that_says_no_space_is_not_a_full_disk() -> None:
    import sqlite3

    import sqlalchemy.exc

    from hpopipe.atomic import no_space

    constraint = sqlalchemy.exc.IntegrityError(
        "INSERT", {"fail_reason": "DiskFull: x: no space left on device"}, sqlite3.IntegrityError("UNIQUE")
    )
    assert not no_space(constraint)
    full = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    try:
        raise full from full.orig
    except sqlalchemy.exc.OperationalError as err:
        assert no_space(err)
    assert no_space(OSError(28, "No space left on device"))
