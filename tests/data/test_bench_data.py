"""The data benchmark suite: every loader agrees with stseq 0.1's Python parser (its peer) on
the suite's generated files, and the suite runs end to end on a tiny grid."""

import math
import time

import numpy as np
import pytest
import torch

import stseq.data
import stseq.data.cache
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


def test_a_load_in_a_child_reports_its_own_time_and_peak(files):
    result = bench_data._child("new", "load_table", files["table csv"],
                               columns=bench_data.TABLE_COLUMNS, digest=True)
    assert result["events"] > 2000 and result["seconds"] > 0 and result["digest"]
    assert 100 < result["import_mib"] <= result["peak_mib"]


def test_data_suite_on_a_tiny_grid(monkeypatch, tmp_path):
    """The whole suite, its loads in this process (the child path is tested above)."""
    def in_process(module, function, *args, digest=False, **kwargs):
        owner = {"new": stseq.data, "old": data_python_parser,
                 "cache": stseq.data.cache}[module]
        start = time.perf_counter()
        data = getattr(owner, function)(*args, **kwargs)
        return {"seconds": time.perf_counter() - start, "peak_mib": 1.0, "import_mib": 1.0,
                "events": data.num_events, "digest": str(events(data)) if digest else None}

    tiny = dict(bench_data.QUICK, small=2000, large=3000, batches=10, model_steps=1,
                pipeline_rounds=1, synthetic={"num_users": 60, "num_items": 50})
    monkeypatch.setattr(bench_data, "QUICK", tiny)
    monkeypatch.setattr(bench_data, "_child", in_process)
    rows = bench_data.run_suite(quick=True, repeats=1, device=torch.device("cpu"), workdir=tmp_path)
    names = [f"load {name}" for name in bench_data.FORMATS]
    assert [row["op"] for row in rows] == names + names + [
        "cache load", "training batches (synthetic)", "training batches (cache)"]
    assert all(row["peer"] == bench_data.PEER and row["max_error"] == 0.0
               for row in rows[:len(names)])
    assert rows[len(names) + 1]["peer"] == "table csv (same rows)"
    assert all(math.isfinite(row["speedup"]) and row["speedup"] > 0 for row in rows)
    assert rows[-1]["batches_per_s"] > 0 and rows[-1]["model_steps_per_s"] > 0


def test_cuda_runs_nothing():
    assert bench_data.run_suite(quick=True, repeats=1, device=torch.device("cuda")) == []
    assert list(bench_data.cases(bench_data.QUICK, torch.device("cuda"), torch.float32)) == []
