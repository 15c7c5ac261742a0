"""Checkpoint files: safe to load, verified before use, and tied to the run that wrote them.

A checkpoint is one header line followed by what ``torch.save`` writes::

    b"stseq-checkpoint 2 sha256 <64 hex digits>\\n"     the header (91 bytes)
    <torch.save zip archive>                           the payload: a dict of tensors and
                                                       plain values (dict, list, tuple, str,
                                                       int, float, bool, None)

- Safe: the payload is read with ``torch.load(weights_only=True)`` only, so no pickled object's
  code ever runs; RNG states are stored as tensors and plain values for that reason.
- Verified: the header holds the SHA-256 of the payload, checked before unpickling; a flipped
  byte is an error, never a silently different model.
- Atomic: written through ``stseq.files.atomic_write``; an interrupted save leaves the
  previous checkpoint in place.
- Tied to its run: the checkpoint holds the fingerprint of its data split
  (``split_fingerprint``) and its configuration; ``resume_differences`` says what differs when
  someone resumes it with other data or settings.
"""

import hashlib
import math
import pickle
import random
import re
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from stseq.files import atomic_write

CHECKPOINT_FORMAT = "stseq-checkpoint-2"
HEADER_PREFIX = b"stseq-checkpoint 2 sha256 "
HEADER_SIZE = len(HEADER_PREFIX) + 64 + 1
READ_CHUNK = 16 << 20
# Keys every checkpoint has; trainable models' checkpoints also have TRAINING_KEYS.
REQUIRED_KEYS = ("format", "spec", "trainable", "data", "data_fingerprint", "config", "epoch",
                 "finished", "history", "best_epoch", "best_value", "bad_epochs")
TRAINING_KEYS = ("model", "best_model", "step", "optimizer", "scheduler", "rng")
# TrainConfig fields that do not change what a run computes, so a resume may change them.
FREE_SETTINGS = ("progress", "out", "device", "eval_batch_size")
_PLAIN = (type(None), bool, int, float, str, torch.Tensor)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, altered, unsafe, incomplete, or of
    another run. The message names the file and what is wrong with it."""


# Writing --------------------------------------------------------------------------------------
class _HashingWriter:
    """A write-only file object that feeds what passes through it to a SHA-256."""

    def __init__(self, file):
        self.file, self.digest = file, hashlib.sha256()

    def write(self, data):
        self.digest.update(data)
        return self.file.write(data)

    def flush(self):
        self.file.flush()


def save_checkpoint(state, path):
    """Write ``state`` (a dict of tensors and plain values) to ``path`` atomically, with its
    SHA-256 in the header. A TypeError names any value that ``load_checkpoint`` could not
    read back safely (e.g. a numpy array: store it as a tensor).

    Example::

        save_checkpoint({"format": CHECKPOINT_FORMAT, ...}, "runs/x/gru4rec/checkpoint.pt")
    """
    check_plain(state)
    with atomic_write(path, "wb") as file:
        file.write(b"\0" * HEADER_SIZE)  # replaced by the header once the payload's hash is known
        writer = _HashingWriter(file)
        torch.save(state, writer)
        file.seek(0)
        file.write(HEADER_PREFIX + writer.digest.hexdigest().encode() + b"\n")
        file.seek(0, 2)
    return Path(path)


def check_plain(value, where="checkpoint"):
    """Raise a TypeError naming the first value under ``value`` that is not a tensor, a plain
    Python value or a dict/list/tuple of them (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(value, np.generic):  # np.float64 passes isinstance(float) but is not plain
        raise TypeError(f"{where} is a numpy {type(value).__name__}: store a Python number")
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a str or int")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    else:
        raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot hold "
                        "safely: store tensors and plain Python values")


# Reading --------------------------------------------------------------------------------------
def load_checkpoint(path):
    """Read a checkpoint written by ``Trainer.save``: its hash verified, then unpickled with
    ``weights_only=True`` (never running code from the file). A ``CheckpointError`` says what
    is wrong with anything else (a missing file raises FileNotFoundError).

    Example::

        state = load_checkpoint("runs/synthetic/latest/timesasrec/checkpoint.pt")
        state["spec"], state["data"], state["epoch"]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with path.open("rb") as file:
        _verify(file, path)
        file.seek(HEADER_SIZE)
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise CheckpointError(
                f"{path} was refused: it holds more than tensors and plain values, which "
                f"could run code when loaded{_unsafe_global(error)}") from None
        except Exception as error:  # torch raises several types for foreign payloads
            raise CheckpointError(f"{path} is not a readable stseq checkpoint "
                                  f"({_first_line(error)})") from None
    _check_keys(state, path)
    return state


def _verify(file, path):
    """Check the header and the payload's SHA-256."""
    header = file.read(HEADER_SIZE)
    if not header.startswith(HEADER_PREFIX) or not header.endswith(b"\n"):
        older = header.startswith(b"PK")
        raise CheckpointError(
            f"{path} is not a stseq checkpoint" + (
                " of this version: it looks like an older one (format 1, without an integrity "
                "hash), which cannot be loaded safely; train it again" if older else ""))
    expected = header[len(HEADER_PREFIX):-1].decode("ascii", errors="replace")
    digest = hashlib.sha256()
    while chunk := file.read(READ_CHUNK):
        digest.update(chunk)
    if digest.hexdigest() != expected:
        raise CheckpointError(f"{path} is damaged: its content does not match the SHA-256 in "
                              "its header (a truncated copy or flipped bytes); use another copy "
                              "or train again")


def _check_keys(state, path):
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a stseq checkpoint (format {CHECKPOINT_FORMAT})")
    missing = [key for key in REQUIRED_KEYS + (TRAINING_KEYS if state.get("trainable", True)
                                               else ()) if key not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}")
    spec = state["spec"]
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(
            spec.get("options"), dict):
        raise CheckpointError(f"{path} is incomplete: its model spec {spec!r} lacks a name or "
                              "options")


def _unsafe_global(error):
    """The suffix " (it calls exec)" for torch's "GLOBAL exec was not an allowed global"."""
    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
    return f" (it calls {found.group(1)})" if found else ""


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# Random number generators ---------------------------------------------------------------------
def capture_rng(batch_generator):
    """The state of python's, numpy's and torch's generators and of ``batch_generator`` (a
    ``numpy.random.Generator``) as tensors and plain values.

    Example::

        state["rng"] = capture_rng(trainer.batches._rng)
    """
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "batches": batch_generator.bit_generator.state}


def restore_rng(rng, batch_generator):
    """Put back the generator states of ``capture_rng``.

    Example::

        restore_rng(state["rng"], trainer.batches._rng)
    """
    legacy = rng["numpy"]
    random.setstate(rng["python"])
    np.random.set_state(("MT19937", legacy["keys"].numpy().astype(np.uint32), legacy["position"],
                         legacy["has_gauss"], legacy["cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    batch_generator.bit_generator.state = rng["batches"]


# Fingerprints ---------------------------------------------------------------------------------
_FINGERPRINTS = {}  # id(split) -> (weak reference to the split, fingerprint)


def split_fingerprint(split):
    """What identifies a ``stseq.data.Split``: its sizes and a SHA-256 over every event (users,
    items, timestamps, coordinates, behaviours, raw ids), the training prefixes and every target
    of the split. Computed once per split object (SHA-256 reads ~0.4 GB/s on a 2-core Xeon:
    ~10 s for 10^8 events with coordinates).

    Example::

        split_fingerprint(split)["sha256"]   # the same for the same events and split
    """
    cached = _FINGERPRINTS.get(id(split))
    if cached is not None and cached[0]() is split:
        return cached[1]
    digest = hashlib.sha256(f"{split.name}:{split.interactions.num_items}".encode())
    for name in ("offsets", "items", "timestamps", "coordinates", "behaviors", "user_ids",
                 "item_ids"):
        _hash_array(digest, name, getattr(split.interactions, name))
    _hash_array(digest, "train_offsets", split.train.offsets)  # train: per-user prefixes
    for targets in (split.valid, split.test):
        for name in ("users", "positions", "query_times", "item_offsets", "items"):
            _hash_array(digest, name, getattr(targets, name))
    interactions = split.interactions
    fingerprint = {"users": int(interactions.num_users), "items": int(interactions.num_items),
                   "events": int(interactions.num_events), "split": split.name,
                   "test_targets": len(split.test), "sha256": digest.hexdigest()}
    key = id(split)
    _FINGERPRINTS[key] = (weakref.ref(split, lambda _: _FINGERPRINTS.pop(key, None)),
                          fingerprint)
    return fingerprint


def _hash_array(digest, name, array):
    if array is None:
        digest.update(f"{name}:none;".encode())
        return
    array = np.asarray(array)
    if array.dtype == object:
        array = array.astype(str)
    digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
    digest.update(np.ascontiguousarray(array).data)


def resume_differences(state, *, spec, config, data_fingerprint, data_spec=None):
    """What differs between a checkpoint ``state`` and a run about to resume it (its model
    ``spec``, ``TrainConfig`` as a dict, ``split_fingerprint`` and data spec): a list of
    phrases like ``"lr 0.01 in the checkpoint, 0.001 now"``, empty when they match. The backend
    and the settings of ``FREE_SETTINGS`` may change.

    Example::

        differences = resume_differences(state, spec=model.spec, config=asdict(config),
                                         data_fingerprint=split_fingerprint(split))
    """
    differences = []
    if spec["name"] != state["spec"]["name"]:
        differences.append(f"model {state['spec']['name']} in the checkpoint, {spec['name']} now")
    else:
        differences += _dict_differences(state["spec"]["options"], spec["options"], ("backend",),
                                         "model option ")
    differences += _dict_differences(state["config"], config, FREE_SETTINGS, "")
    if state["data_fingerprint"] != data_fingerprint:
        differences += data_differences(state["data_fingerprint"], data_fingerprint)
        if data_spec is not None and state["data"] != data_spec:
            differences += _dict_differences(state["data"] or {}, data_spec, (), "data ")
    return differences


def _dict_differences(stored, current, ignored, label):
    """Phrases for the keys whose values differ (nested dicts key by key, ``a.b``)."""
    differences = []
    for key in dict.fromkeys([*stored, *current]):
        old, new = stored.get(key), current.get(key)
        if key in ignored or _same(old, new):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            differences += _dict_differences(old, new, (), f"{label}{key}.")
        else:
            differences.append(f"{label}{key} {_show(old)} in the checkpoint, {_show(new)} now")
    return differences


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _show(value):
    return "unset" if value is None else repr(value) if isinstance(value, str) else str(value)


def data_differences(stored, current):
    """What differs between two ``split_fingerprint`` s, as phrases (empty when equal).

    Example::

        data_differences(state["data_fingerprint"], split_fingerprint(split))
        # ['items 25 in the checkpoint, 30 now']
    """
    if stored == current:
        return []
    sizes = [f"{key.replace('_', ' ')} {_show(stored.get(key))} in the checkpoint, "
             f"{_show(current.get(key))} now"
             for key in ("users", "items", "events", "split", "test_targets")
             if stored.get(key) != current.get(key)]
    if not sizes:
        sizes = ["the data has the same sizes but other events (SHA-256 "
                 f"{str(stored.get('sha256'))[:12]} in the checkpoint, "
                 f"{str(current.get('sha256'))[:12]} now)"]
    return sizes
