"""Crash-recovery checkpoints under faults: a kill inside save, a truncated file, a foreign file, and
cleanup that must never delete outside its checkpoint root (real kills, real symlinks)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hpopipe.config import ModelConfig, TrainConfig
from hpopipe.errors import HpopipeError
from hpopipe.training import checkpoints, loop
from tests.conftest import REPO, subprocess_env

MLP = ModelConfig(name="mlp")
PARAMS = {"width": 16, "n_layers": 2, "dropout": 0.2}
CLS = loop.Task("classification", 2, "accuracy")
SETTINGS = TrainConfig(max_epochs=5, patience=100, batch_size=32, device="cpu")

# A child process that saves epochs 1..3 of a checkpoint and SIGKILLs itself inside the save of
# epoch 3, at the rename named by argv[2]: "rotate" (current -> previous) or "publish" (temp -> current).
_KILL_IN_SAVE = """
import os, signal, sys
from pathlib import Path
import torch
from hpopipe.training import checkpoints

path, where = Path(sys.argv[1]), sys.argv[2]
real = os.replace
def replace(src, dst):
    is_publish = str(src).endswith(".tmp")
    if EPOCH == 3 and is_publish == (where == "publish"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst)
os.replace = replace
for EPOCH in (1, 2, 3):
    checkpoints.save(path, {"params_hash": "h", "epoch": EPOCH, "w": torch.full((1000,), float(EPOCH))},
                     keep_previous=True)
"""


def splits(problem: dict[str, np.ndarray]) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The shared ``problem`` (conftest) as classification (train, validation)."""
    x, y = problem["x"], problem["y_cls"]
    return (x[:240], y[:240]), (x[240:], y[240:])


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("where", ["rotate", "publish"])
def test_a_kill_inside_save_leaves_a_loadable_checkpoint(tmp_path: Path, where: str) -> None:
    path = tmp_path / "h.pt"
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_IN_SAVE, str(path), where], env=subprocess_env(), cwd=REPO
    )
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any(name.endswith(".tmp") for name in left)  # epoch 3, written but never published
    if where == "publish":
        assert not path.exists()  # killed between the two renames: only the previous one is there
    ckpt = checkpoints.load_resumable(path, "h")  # epoch 2: the newest one that was complete
    assert ckpt is not None and ckpt["epoch"] == 2
    assert torch.equal(ckpt["w"], torch.full((1000,), 2.0))
    deleted, _ = checkpoints.cleanup(tmp_path, set())  # the orphaned temp file goes with the rest
    assert deleted == len(left) and not list(tmp_path.iterdir())


def test_truncated_latest_falls_back_to_the_previous_one_and_names_it(
    problem: dict[str, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tr, val = splits(problem)
    ckpt = tmp_path / "trial.pt"
    straight = loop.fit(MLP, PARAMS, SETTINGS, CLS, tr, val, seed=3, epochs=5)
    every_epoch = SETTINGS.model_copy(update={"checkpoint_every_s": 0.0})  # a previous file of epoch 2
    loop.fit(MLP, PARAMS, every_epoch, CLS, tr, val, seed=3, epochs=3, checkpoint=ckpt)
    blob = ckpt.read_bytes()
    ckpt.write_bytes(blob[: len(blob) // 2])  # the disk lost the end of the newest file
    with caplog.at_level(logging.WARNING, logger="hpopipe.training.checkpoints"):
        resumed = loop.fit(
            MLP, PARAMS, SETTINGS, CLS, tr, val, seed=3, epochs=5, checkpoint=ckpt, resume=True
        )
    assert resumed.resumed_from_epoch == 2
    assert f"checkpoint {ckpt} is unreadable" in caplog.text
    assert f"resuming from the previous checkpoint {checkpoints.previous(ckpt)}" in caplog.text
    # Epoch 3 is trained again from epoch 2's state: the result is the straight run's, bit for bit.
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.history == straight.history


def test_a_checkpoint_of_another_configuration_is_refused(
    problem: dict[str, np.ndarray], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tr, val = splits(problem)
    other, ckpt = tmp_path / "other.pt", tmp_path / "trial.pt"
    loop.fit(MLP, {**PARAMS, "width": 8}, SETTINGS, CLS, tr, val, seed=3, epochs=3, checkpoint=other)
    ckpt.write_bytes(other.read_bytes())  # a file under this trial's name, written for other params
    with caplog.at_level(logging.WARNING, logger="hpopipe.training.checkpoints"):
        result = loop.fit(MLP, PARAMS, SETTINGS, CLS, tr, val, seed=3, epochs=2, checkpoint=ckpt, resume=True)
    assert result.resumed_from_epoch == 0 and len(result.history) == 2
    assert f"refusing checkpoint {ckpt}" in caplog.text
    assert checkpoints.params_hash(PARAMS, 3) in caplog.text


def test_five_epochs_equal_three_plus_two_resumed_bit_for_bit(
    problem: dict[str, np.ndarray], tmp_path: Path
) -> None:
    tr, val = splits(problem)
    straight_ckpt, ckpt = tmp_path / "straight.pt", tmp_path / "trial.pt"
    straight = loop.fit(MLP, PARAMS, SETTINGS, CLS, tr, val, seed=3, epochs=5, checkpoint=straight_ckpt)
    loop.fit(MLP, PARAMS, SETTINGS, CLS, tr, val, seed=3, epochs=3, checkpoint=ckpt)
    resumed = loop.fit(MLP, PARAMS, SETTINGS, CLS, tr, val, seed=3, epochs=5, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from_epoch == 3
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.history == straight.history
    a, b = checkpoints.load(straight_ckpt), checkpoints.load(ckpt)  # optimiser and RNG states too
    assert same_weights(a["optimizer"]["state"][0], b["optimizer"]["state"][0])
    assert torch.equal(a["rng_torch"], b["rng_torch"]) and torch.equal(a["rng_generator"], b["rng_generator"])


# --- cleanup ---------------------------------------------------------------------------------------------


def scratch(folder: Path, *hashes: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for h in hashes:
        for name in (f"{h}.pt", f"{h}.prev.pt", f".{h}.pt.x1y2.tmp"):
            (folder / name).write_bytes(b"x" * 10)


def test_cleanup_deletes_every_file_of_a_dropped_trial_and_keeps_the_kept_ones(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    scratch(root / "study", "aaaa", "bbbb", "cccc")
    (root / "study/notes.txt").write_text("not a checkpoint")
    ranked = [{"checkpoint": "bbbb"}, {"checkpoint": "aaaa"}, {"checkpoint": "cccc"}]
    report = checkpoints.cleanup_study(root, "study", ranked, keep_best=1)
    assert report == {"study": "study", "deleted": 6, "bytes_freed": 60, "kept": 1}
    left = sorted(p.name for p in (root / "study").iterdir())
    assert left == [".bbbb.pt.x1y2.tmp", "bbbb.prev.pt", "bbbb.pt", "notes.txt"]


def test_cleanup_never_follows_a_symlinked_checkpoint(tmp_path: Path) -> None:
    root, outside = tmp_path / "ckpt", tmp_path / "outside"
    scratch(root / "study", "aaaa")
    outside.mkdir()
    canary = outside / "precious.pt"
    canary.write_bytes(b"keep me")
    (root / "study/dddd.pt").symlink_to(canary)
    (root / "study/dddd.prev.pt").symlink_to(outside)
    report = checkpoints.cleanup_study(root, "study", [], keep_best=1)
    assert report["deleted"] == 3  # aaaa's files only
    assert canary.read_bytes() == b"keep me"
    assert (root / "study/dddd.pt").is_symlink() and (root / "study/dddd.prev.pt").is_symlink()


def test_cleanup_refuses_a_symlinked_study_folder(tmp_path: Path) -> None:
    root, outside = tmp_path / "ckpt", tmp_path / "outside"
    scratch(outside, "aaaa")
    root.mkdir()
    (root / "study").symlink_to(outside, target_is_directory=True)
    with pytest.raises(HpopipeError, match="symbolic link"):
        checkpoints.cleanup_study(root, "study", [], keep_best=1)
    assert len(list(outside.iterdir())) == 3


@pytest.mark.parametrize("name", ["../outside", "..", "/abs/outside", "a/../../outside"])
def test_a_study_name_cannot_leave_the_root(tmp_path: Path, name: str) -> None:
    root, outside = tmp_path / "ckpt", tmp_path / "outside"
    scratch(outside, "aaaa")
    root.mkdir()
    folder = checkpoints.study_folder(root, name)
    assert folder.parent == root and folder.name not in {"", ".", ".."}
    checkpoints.cleanup_study(root, name, [], keep_best=1)
    assert len(list(outside.iterdir())) == 3


def test_a_symlinked_root_is_fine(tmp_path: Path) -> None:
    """Pointing hpo.checkpoint_dir at a scratch disk by a link is a normal setup."""
    real = tmp_path / "scratch-disk"
    scratch(real / "study", "aaaa")
    (tmp_path / "ckpt").symlink_to(real, target_is_directory=True)
    assert checkpoints.cleanup_study(tmp_path / "ckpt", "study", [], keep_best=1)["deleted"] == 3


def test_the_cleanup_stage_refuses_in_one_line(tmp_path: Path) -> None:
    """The stage edge: exit 2 and one line naming the folder, nothing deleted."""
    import yaml

    from tests.conftest import TINY_PARAMS

    outside = tmp_path / "outside"
    scratch(outside, "aaaa")
    raw = yaml.safe_load(TINY_PARAMS)
    raw["hpo"]["checkpoint_dir"] = "ckpt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt/study").symlink_to(outside, target_is_directory=True)
    ranked = tmp_path / "artifacts/hpo/ranked_trials.json"
    ranked.parent.mkdir(parents=True)
    ranked.write_text('{"study": "study", "trials": []}')
    proc = subprocess.run(
        [sys.executable, "-m", "stages.cleanup"],
        cwd=tmp_path,
        env=subprocess_env(PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")])),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"hpopipe: error: hpo.checkpoint_dir: {Path('ckpt/study')} is a symbolic link; "
        "refusing to delete in it"
    ]
    assert len(list(outside.iterdir())) == 3


def test_the_cleanup_stage_deletes_without_torch_or_mlflow(tmp_path: Path) -> None:
    """Run end to end as DVC runs it (tracking off): it deletes, writes its metrics, exits 0 through
    the fast exit (hpopipe.entry.finish), and never imports torch or MLflow, not even at run time."""
    import json

    import yaml

    from tests.conftest import TINY_PARAMS

    raw = yaml.safe_load(TINY_PARAMS)
    raw["hpo"]["checkpoint_dir"] = "ckpt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    scratch(tmp_path / "ckpt/study", "aaaa")
    ranked = tmp_path / "artifacts/hpo/ranked_trials.json"
    ranked.parent.mkdir(parents=True)
    ranked.write_text('{"study": "study", "trials": []}')
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stages.cleanup"],
        cwd=tmp_path,
        env=subprocess_env(
            PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src")]), HPOPIPE_TRACKING="off"
        ),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    assert "hpopipe" in imported  # importtime did report the imports
    assert not imported & {"torch", "mlflow"}
    assert json.loads((tmp_path / "metrics/cleanup.json").read_text())["deleted"] == 3
    assert not list((tmp_path / "ckpt/study").glob("*"))


# --- the interval (train.checkpoint_every_s) ---------------------------------------------------------------

SLOW = ModelConfig(factory="tests.failing_models:slow")  # sleeps HPOPIPE_TEST_DELAY s per forward pass
INTERVAL = 0.3
# A save is decided right before the report that timestamps it: slack for that, and for the set-up
# between the start timestamp and the first epoch.
SLACK = 0.1

# A child that trains the slow model with a checkpoint every INTERVAL s and prints "epoch monotonic-time"
# after each epoch (and "0 time" before it starts), until the parent SIGKILLs it.
_TRAIN_UNTIL_KILLED = """
import sys, time
import numpy as np
from hpopipe.config import ModelConfig, TrainConfig
from hpopipe.training import loop
data = np.load(sys.argv[1])
settings = TrainConfig(max_epochs=1000, patience=1000, batch_size=32, device="cpu",
                       checkpoint_every_s=float(sys.argv[3]))
print(0, time.monotonic(), flush=True)
loop.fit(ModelConfig(factory="tests.failing_models:slow"), {"width": 16, "n_layers": 2, "dropout": 0.2},
         settings, loop.Task("classification", 2, "accuracy"), (data["x"][:240], data["y"][:240]),
         (data["x"][240:], data["y"][240:]), seed=3, checkpoint=__import__("pathlib").Path(sys.argv[2]),
         reporter=lambda epoch, value: print(epoch, time.monotonic(), flush=True))
"""


def test_the_checkpoint_is_never_older_than_the_interval_and_not_written_every_epoch(
    problem: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPOPIPE_TEST_DELAY", "0.005")  # ~0.05 s an epoch: several epochs per interval
    tr, val = splits(problem)
    ckpt = tmp_path / "trial.pt"
    ended = {0: time.monotonic()}  # epoch -> when it ended (0: before the run)
    on_disk: list[tuple[int, int]] = []  # (epoch, the checkpoint's epoch right after it)

    def reporter(epoch: int, value: float) -> None:
        ended[epoch] = time.monotonic()
        on_disk.append((epoch, checkpoints.load(ckpt)["epoch"] if ckpt.exists() else 0))

    settings = SETTINGS.model_copy(update={"max_epochs": 30, "patience": 100, "checkpoint_every_s": INTERVAL})
    loop.fit(SLOW, PARAMS, settings, CLS, tr, val, seed=3, checkpoint=ckpt, reporter=reporter)
    for epoch, saved in on_disk:  # what a kill right after this epoch would resume from
        # Nothing saved yet: the clock started after the model was built, somewhere before epoch 1
        # ended (which, the first, may be slow), so only the epochs after it are counted.
        since = ended[saved] if saved else ended[1]
        assert ended[epoch] - since < INTERVAL + SLACK, (epoch, saved, on_disk)
    saves = {saved for _, saved in on_disk if saved}
    assert 1 < len(saves) <= len(on_disk) // 2, on_disk  # time-based: some, far fewer than the epochs
    assert checkpoints.load(ckpt)["epoch"] == 30  # and the end of the run


def test_a_killed_run_resumes_from_a_checkpoint_no_older_than_the_interval(
    problem: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, ckpt = tmp_path / "data.npz", tmp_path / "trial.pt"
    np.savez(data, x=problem["x"], y=problem["y_cls"])
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_UNTIL_KILLED, str(data), str(ckpt), str(INTERVAL)],
        env=subprocess_env(PYTHONPATH=str(REPO), HPOPIPE_TEST_DELAY="0.005"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ended: dict[int, float] = {}
    while not ended or max(ended) < 25:  # ~1.2 s of training: several intervals
        line = proc.stdout.readline()
        assert line, f"the child ended early (exit {proc.wait()})"
        epoch, when = line.split()
        ended[int(epoch)] = float(when)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ended.update((int(e), float(t)) for e, t in (line.split() for line in proc.stdout.read().splitlines()))
    last = max(ended)  # the last epoch the child finished (a later one may be saved: it was killed mid-way)
    monkeypatch.setenv("HPOPIPE_TEST_DELAY", "0")  # the same network, at full speed
    resumed = loop.fit(
        SLOW, PARAMS, TrainConfig(max_epochs=last + 3, patience=1000, batch_size=32, device="cpu"), CLS,
        *splits(problem), seed=3, checkpoint=ckpt, resume=True,
    )  # fmt: skip
    start = resumed.resumed_from_epoch
    assert start > 0  # ~1.2 s of training: at least one interval's checkpoint
    if start < last:  # the newest file holds an epoch at most INTERVAL older than the last one trained
        assert ended[last] - ended[start] < INTERVAL + SLACK, (start, ended)
    straight = loop.fit(
        SLOW, PARAMS, TrainConfig(max_epochs=last + 3, patience=1000, batch_size=32, device="cpu"), CLS,
        *splits(problem), seed=3,
    )  # fmt: skip
    assert same_weights(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.history == straight.history
