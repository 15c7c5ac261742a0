"""The data benchmark suite: every loader agrees with stseq 0.1's Python parser (its peer) on
the suite's generated files, and the suite runs end to end on a tiny grid."""

import math

import numpy as np
import pytest
import torch

import stseq.data
from stseq.bench import data as bench_data
from stseq.bench import data_python_parser


def events(data):
    """The events as sorted (user id, time, item id) text: comparable whatever the id order."""
    users = np.repeat(data.user_ids.astype(str), data.lengths)
    items = data.item_ids.astype(str)[data.items]
    order = np.lexsort((items, data.timestamps, users))
    return list(zip(users[order], data.timestamps[order], items[order]))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return bench_data.write_formats(tmp_path_factory.mktemp("formats"), 3000)


@pytest.mark.parametrize("name", list(bench_data.FORMATS))
def test_loaders_agree_with_the_old_parser(files, name):
    _, function, kwargs = bench_data.FORMATS[name]
    new = getattr(stseq.data, function)(files[name], **kwargs)
    old = getattr(data_python_parser, function)(files[name], **kwargs)
    assert new.num_events > 2000 and events(new) == events(old)
    assert new.report.dropped == old.report.dropped


def test_data_suite_on_a_tiny_grid(monkeypatch, tmp_path):
    tiny = dict(bench_data.QUICK, small=2000, large=3000, batches=10, model_steps=2,
                synthetic={"num_users": 100, "num_items": 100})
    monkeypatch.setattr(bench_data, "QUICK", tiny)
    monkeypatch.setattr(bench_data, "FORMATS", {"table csv": bench_data.FORMATS["table csv"]})
    rows = bench_data.run(quick=True, repeats=1, device=torch.device("cpu"), workdir=tmp_path)
    assert [row["op"] for row in rows] == [
        "load table csv", "load table csv", "cache load", "training batches (synthetic)",
        "training batches (cache)"]
    assert rows[0]["peer"] == bench_data.PEER and rows[0]["max_error"] == 0.0
    assert rows[1]["peer"].startswith("target")
    assert all(math.isfinite(row["speedup"]) and row["speedup"] > 0 for row in rows)
    assert rows[-1]["batches_per_s"] > 0 and rows[-1]["model_steps_per_s"] > 0


def test_cuda_runs_nothing():
    assert bench_data.run(quick=True, repeats=1, device=torch.device("cuda")) == []
    assert list(bench_data.cases(bench_data.QUICK, torch.device("cuda"), torch.float32)) == []
