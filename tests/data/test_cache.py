"""The binary cache of preprocessed Interactions: reused when source and options are the same,
rebuilt when either changes or the cache is damaged (with a message), memory-mapped, no
pickles, and announced by ``stseq train``."""

import json
import os

import numpy as np
import pytest

from stseq.cli import main
from stseq.data import load_table
from stseq.data.cache import MANIFEST, load_cached, read_cache

COLUMNS = {"user": "u", "item": "i", "timestamp": "t", "latitude": "lat", "longitude": "lon",
           "behavior": "b"}


def write_events(path, extra=""):
    rows = ["u,i,t,lat,lon,b"]
    for n in range(40):
        rows.append(f"user{n % 7},item{n % 5},{1_600_000_000 + 60 * n},{n % 3}.5,{n % 4}.25,"
                    f"{'view' if n % 3 else 'buy'}")
    path.write_text("\n".join(rows) + "\n" + extra)
    return path


def same(a, b):
    for name in ("offsets", "items", "timestamps", "coordinates", "behaviors", "user_ids",
                 "item_ids"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.num_items == b.num_items and a.behavior_names == b.behavior_names
    assert str(a.report) == str(b.report)


def test_hit_is_memory_mapped_and_equal(tmp_path):
    source = write_events(tmp_path / "events.csv", "bad,row\n")
    built, status = load_cached("table", source, tmp_path / "cache", columns=COLUMNS)
    assert status.startswith("built the cache") and "there was none" in status
    again, status = load_cached("table", source, tmp_path / "cache", columns=COLUMNS)
    assert status.startswith("reused the cache")
    same(again, built)
    same(again, load_table(source, COLUMNS))
    assert isinstance(again.items.base, np.memmap) or isinstance(again.items, np.memmap)
    assert again.report.dropped == {"malformed row": 1} and again.report.first_lines == {
        "malformed row": 42}


def test_miss_on_changed_source(tmp_path):
    source = write_events(tmp_path / "events.csv")
    load_cached("table", source, tmp_path / "cache", columns=COLUMNS)
    write_events(source, "user9,item9,1600009999,1.0,1.0,view\n")
    data, status = load_cached("table", source, tmp_path / "cache", columns=COLUMNS)
    assert status.startswith("rebuilt the cache") and "source file changed" in status
    assert "user9" in data.user_ids.tolist()
    # the same size and content but a new modification time is a change too
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert "source file changed" in load_cached("table", source, tmp_path / "cache",
                                                columns=COLUMNS)[1]


def test_miss_on_changed_options(tmp_path):
    source = write_events(tmp_path / "events.csv")
    full, _ = load_cached("table", source, tmp_path / "cache", columns=COLUMNS)
    core, status = load_cached("table", source, tmp_path / "cache", columns=COLUMNS,
                               min_item_events=9)
    assert status.startswith("rebuilt the cache") and "options changed" in status
    assert core.num_items < full.num_items
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 7  # the old build's files are gone


@pytest.mark.parametrize("damage", ["manifest garbage", "array truncated", "array swapped",
                                    "item out of range", "pickled array", "file missing"])
def test_damaged_cache_is_rebuilt_with_a_message(tmp_path, damage, caplog):
    source = write_events(tmp_path / "events.csv")
    cache = tmp_path / "cache"
    built, _ = load_cached("table", source, cache, columns=COLUMNS)
    manifest = json.loads((cache / MANIFEST).read_text())
    items = cache / manifest["arrays"]["items"]["file"]
    if damage == "manifest garbage":
        (cache / MANIFEST).write_text("{not json")
    elif damage == "array truncated":
        items.write_bytes(items.read_bytes()[:100])
    elif damage == "array swapped":
        np.save(items, np.zeros(3, dtype=np.int64))
    elif damage == "item out of range":
        values = np.load(items)
        values[0] = 10**6
        np.save(items, values)
    elif damage == "pickled array":
        np.save(items, np.array([object()] * len(built.items)), allow_pickle=True)
    else:
        items.unlink()
    data, status = load_cached("table", source, cache, columns=COLUMNS)
    assert status.startswith("rebuilt the cache") and "damaged" in status
    assert "damaged, rebuilding" in caplog.text
    same(data, built)
    same(read_cache(cache), built)


def test_stseq_train_says_what_it_did(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = write_events(tmp_path / "events.csv")
    argv = ["train", "--data", str(source), "--format", "table", "--columns",
            "user=u,item=i,timestamp=t", "--model", "markov", "--no-baselines", "--no-progress"]
    assert main(argv) == 0
    assert "data: built the cache in runs/events/cache (there was none)" in capsys.readouterr().out
    assert main(argv) == 0
    assert "data: reused the cache in runs/events/cache" in capsys.readouterr().out
    assert main(argv + ["--time-format", "seconds"]) == 0  # the same options, spelled out
    assert "data: reused the cache" in capsys.readouterr().out
