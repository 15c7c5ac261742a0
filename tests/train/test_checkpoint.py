"""Checkpoints (issue 16 items 8-10): atomic writes, weights_only loading, an integrity hash,
and resumes refused when the data or the configuration differ."""

import errno
import hashlib
import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from stseq.data import Interactions, leave_one_out, synthetic
from stseq.models import build_model
from stseq.train import (CheckpointError, TrainConfig, Trainer, atomic_write, load_checkpoint,
                         save_checkpoint, seed_everything, split_fingerprint, write_json)
from stseq.train.checkpoint import CHECKPOINT_FORMAT, HEADER_PREFIX

CONFIG = TrainConfig(epochs=2, batch_size=8, max_length=8, lr=1e-2, warmup_steps=2,
                     progress=False)


@pytest.fixture(scope="module")
def split():
    data = synthetic(num_users=20, num_items=25, min_length=4, max_length=12, seed=5)
    return leave_one_out(data.interactions)


def trainer_for(split, out=None, **changes):
    seed_everything(0)
    model = build_model("gru4rec", split.train, dim=16, max_length=8, dropout=0.0)
    return Trainer(model, split, replace(CONFIG, out=out and str(out), **changes))


@pytest.fixture(scope="module")
def saved(split, tmp_path_factory):
    """A checkpoint after one epoch."""
    out = tmp_path_factory.mktemp("saved")
    trainer_for(split, out).fit(epochs=1)
    return out / "checkpoint.pt"


def write_with_header(path, payload):
    """A file in the checkpoint layout (valid header and hash) around any torch.save payload."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.write_bytes(HEADER_PREFIX + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


# Item 8: atomic writes --------------------------------------------------------------------------
def test_a_save_that_fails_half_way_leaves_the_previous_checkpoint(split, tmp_path,
                                                                   monkeypatch):
    trainer = trainer_for(split, tmp_path)
    trainer.fit(epochs=1)
    real_save = torch.save

    def disk_full_half_way(state, file):
        buffer = io.BytesIO()
        real_save(state, buffer)
        file.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_half_way)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(epochs=1)  # epoch 2 trains, then its save fails
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.csv",
                                                                 "metrics.json"]
    resumed = trainer_for(split, tmp_path).load(tmp_path / "checkpoint.pt")
    assert resumed.fit()["test"] is not None


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"epoch": 1})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_write(path, "w") as file:
            file.write('{"epoch": 2, "trunc')
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


# Item 9: weights_only, integrity ----------------------------------------------------------------
class _Payload:
    """Runs code when unpickled by a full (unsafe) unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_malicious_pickle_is_refused_and_never_runs(saved, tmp_path):
    marker = tmp_path / "payload-ran"
    state = load_checkpoint(saved)
    state["model"]["embedding.weight"] = _Payload(marker)
    path = tmp_path / "malicious.pt"
    write_with_header(path, state)  # a valid hash: only weights_only stands in the way
    with pytest.raises(CheckpointError, match="refused: it holds more than tensors"):
        load_checkpoint(path)
    assert not marker.exists()
    # the payload is real: a full unpickler runs it
    with path.open("rb") as file:
        file.seek(len(HEADER_PREFIX) + 65)
        torch.load(file, weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("where", ["magic", "digest", "payload start", "payload middle",
                                   "last byte"])
def test_a_flipped_byte_is_refused(saved, tmp_path, where):
    data = bytearray(saved.read_bytes())
    position = {"magic": 3, "digest": len(HEADER_PREFIX) + 10, "payload start": 100,
                "payload middle": len(data) // 2, "last byte": len(data) - 1}[where]
    data[position] ^= 0x01
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is damaged|is not a stseq checkpoint"):
        load_checkpoint(path)


def test_truncated_and_foreign_files_are_refused(saved, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(saved.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="is damaged"):
        load_checkpoint(truncated)
    older = tmp_path / "older.pt"
    torch.save({"format": "stseq-checkpoint-1", "rng": {"numpy": np.zeros(3)}}, older)
    with pytest.raises(CheckpointError, match="older one .format 1"):
        load_checkpoint(older)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not a stseq checkpoint"):
        load_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("keys", [["optimizer"], ["model", "optimizer"], ["rng"],
                                  ["data_fingerprint"], ["spec"], ["trainable"]])
def test_a_checkpoint_missing_a_key_is_refused(saved, tmp_path, keys):
    state = load_checkpoint(saved)
    for key in keys:
        del state[key]
    path = tmp_path / "incomplete.pt"
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match=f"is incomplete: it lacks {', '.join(keys)}"):
        load_checkpoint(path)


def test_values_that_cannot_be_loaded_safely_are_refused_at_save(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['history'\]\[0\] is a numpy float64"):
        save_checkpoint({"format": CHECKPOINT_FORMAT, "history": [np.float64(1.0)]},
                        tmp_path / "x.pt")
    with pytest.raises(TypeError, match=r"checkpoint\['rng'\] is a ndarray"):
        save_checkpoint({"rng": np.zeros(3)}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


def test_random_states_round_trip(saved, split):
    """The numpy, python, torch and batch-order generators continue exactly after a load."""
    state = load_checkpoint(saved)
    trainer = trainer_for(split)
    trainer.load(saved)
    after_load = (np.random.random(), torch.rand(1).item(), trainer.batches._rng.random())
    trainer.load(saved)
    assert (np.random.random(), torch.rand(1).item(), trainer.batches._rng.random()) == after_load
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


# Item 10: fingerprints ---------------------------------------------------------------------------
def test_resume_with_another_configuration_is_refused(saved, split):
    with pytest.raises(CheckpointError, match="lr 0.01 in the checkpoint, 0.02 now"):
        trainer_for(split, lr=2e-2).load(saved)
    with pytest.raises(CheckpointError, match="epochs 2 in the checkpoint, 3 now"):
        trainer_for(split, epochs=3).load(saved)
    trainer_for(split, eval_batch_size=7, progress=True).load(saved)  # no effect on the result


def shifted(split, item_count=None):
    """The split of the same events with every item renamed (same sizes, other content)."""
    data = split.interactions
    num_items = item_count or data.num_items
    return leave_one_out(Interactions(data.offsets, (data.items + 1) % data.num_items,
                                      data.timestamps, num_items=num_items))


def test_resume_with_other_data_is_refused(saved, split):
    other = shifted(split)
    with pytest.raises(CheckpointError, match="same sizes but other events"):
        trainer_for(other).load(saved)
    more_items = shifted(split, item_count=split.interactions.num_items + 1)
    with pytest.raises(CheckpointError, match="items 25 in the checkpoint, 26 now"):
        trainer_for(more_items).load(saved)


def test_split_fingerprint_follows_the_content(split):
    again = leave_one_out(synthetic(num_users=20, num_items=25, min_length=4, max_length=12,
                                    seed=5).interactions)
    assert split_fingerprint(again) == split_fingerprint(split)
    assert split_fingerprint(shifted(split))["sha256"] != split_fingerprint(split)["sha256"]
    assert split_fingerprint(split)["items"] == 25
