"""kill -9 of a real ``stseq train`` process, during training and in the middle of a checkpoint
save, leaves a run that ``stseq train --resume`` finishes (issue 16 item 8), exactly as an
uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from stseq.cli import main
from stseq.train import load_checkpoint

ARGS = ["train", "--synthetic", "num_users=24", "--synthetic", "num_items=30", "--synthetic",
        "min_length=4", "--synthetic", "max_length=12", "--model", "gru4rec", "--no-baselines",
        "--epochs", "4", "--patience", "4", "--dim", "8", "--max-length", "8", "--batch-size",
        "16", "--no-progress"]
# Runs the command line with torch.save slowed down from its second call on: half the
# checkpoint is written, then the marker file appears and the save stalls (to be killed there).
SLOW_SAVE = r"""
import io, pathlib, sys, time
import torch
real_save, calls = torch.save, []

def slow_save(state, file):
    calls.append(1)
    if len(calls) < 2:
        return real_save(state, file)
    buffer = io.BytesIO()
    real_save(state, buffer)
    file.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    file.flush()
    pathlib.Path(sys.argv[1]).write_text("saving")
    time.sleep(120)

torch.save = slow_save
from stseq.cli import main
sys.exit(main(sys.argv[2:]))
"""


def wait_for(path, child, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def kill(child):
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def comparable(path):
    state = load_checkpoint(path)
    history = [{k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k}
               for row in state["history"]]
    return {"history": history, "model": state["model"], "best_model": state["best_model"],
            "epoch": state["epoch"], "finished": state["finished"]}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main([*ARGS, "--out", str(out)]) == 0
    return comparable(out / "gru4rec" / "checkpoint.pt")


def test_kill_during_training_then_resume(tmp_path, straight, capsys):
    out = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-m", "stseq.cli", *ARGS, "--out", str(out)],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(out / "gru4rec" / "checkpoint.pt", child)  # epoch 1 saved, epoch 2 under way
    kill(child)
    assert load_checkpoint(out / "gru4rec" / "checkpoint.pt")["epoch"] < 4
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    torch.testing.assert_close(comparable(out / "gru4rec" / "checkpoint.pt"), straight,
                               rtol=0, atol=0)


def test_kill_during_a_checkpoint_save_then_resume(tmp_path, straight, capsys):
    out, marker = tmp_path / "run", tmp_path / "saving"
    child = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(marker), *ARGS, "--out",
                              str(out)], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    wait_for(marker, child)  # the save of epoch 2 is half written
    kill(child)
    folder = out / "gru4rec"
    assert len(list(folder.glob(".checkpoint.pt.*.partial"))) == 1  # the torn write...
    assert load_checkpoint(folder / "checkpoint.pt")["epoch"] == 1  # ...left epoch 1 in place
    capsys.readouterr()
    assert main([*ARGS, "--out", str(out), "--resume"]) == 0
    assert "(removed 1 unfinished write of the interrupted run)" in capsys.readouterr().out
    assert not list(folder.glob(".*.partial"))
    torch.testing.assert_close(comparable(folder / "checkpoint.pt"), straight, rtol=0, atol=0)
