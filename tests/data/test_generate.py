"""The Taobao-shaped log generator: sizes, determinism, shape (power law, sessions), both file
formats and the loaders reading them back."""

import numpy as np
import pyarrow.parquet as pq
import pytest

import stseq.data
from stseq.data.generate import BEHAVIORS, generate_log, main


def test_csv_is_taobao_layout_and_loads(tmp_path):
    path = generate_log(tmp_path / "log.csv", events=5000, users=200, items=1000, seed=1,
                        chunk_events=700)
    lines = path.read_text().splitlines()
    assert len(lines) == 5000
    user, item, category, behavior, stamp = lines[0].split(",")
    assert behavior in BEHAVIORS and int(user) >= 1 and int(item) >= 1 and int(category) >= 1
    data = stseq.data.load_taobao(path, deduplicate=False)
    assert data.report.rows == 5000 and data.num_events == 5000 and data.num_users == 200
    start, end = 1511539200, 1511539200 + 9 * 86400
    assert data.timestamps.min() >= start and data.timestamps.max() < end
    # rows come grouped by user, time-sorted within a user (the file order is the CSR order)
    users = np.array([int(line.split(",")[0]) for line in lines])
    assert (np.diff(users) >= 0).all()


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    a = generate_log(tmp_path / "a.csv", events=3000, users=100, items=500, seed=3)
    b = generate_log(tmp_path / "b.csv", events=3000, users=100, items=500, seed=3,
                     chunk_events=400)
    c = generate_log(tmp_path / "c.csv", events=3000, users=100, items=500, seed=4)
    again = generate_log(tmp_path / "again.csv", events=3000, users=100, items=500, seed=3)
    assert a.read_bytes() == again.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    # chunking changes the random stream but not the per-user counts
    assert a.read_text().count("\n") == b.read_text().count("\n") == 3000


def test_power_law_items_and_session_bursts(tmp_path):
    path = generate_log(tmp_path / "log.parquet", events=50_000, users=500, items=20_000,
                        coordinates=True, seed=0)
    table = pq.read_table(path)
    assert table.column_names == ["user", "item", "category", "behavior", "timestamp",
                                  "latitude", "longitude"]
    counts = np.sort(np.bincount(table.column("item").to_numpy()))[::-1]
    assert counts[0] > 50 * np.median(counts[counts > 0])  # a heavy head
    data = stseq.data.load_table(path, {"user": "user", "item": "item", "timestamp": "timestamp",
                                        "latitude": "latitude", "longitude": "longitude"},
                                 deduplicate=False)
    gaps = np.diff(data.timestamps)[np.diff(data.event_users()) == 0]
    assert np.median(gaps) < 600 and np.percentile(gaps, 95) > 3600  # bursts, then long pauses
    assert data.coordinates[:, 0].min() >= 30 and data.coordinates[:, 1].max() <= 120.5


def test_bad_sizes_are_named_errors(tmp_path):
    with pytest.raises(ValueError, match="events"):
        generate_log(tmp_path / "x.csv", events=0, users=1, items=1)
    with pytest.raises(ValueError, match="zipf"):
        generate_log(tmp_path / "x.csv", events=1, users=1, items=1, zipf=0)
    assert not (tmp_path / "x.csv").exists()


def test_command_line(tmp_path, capsys):
    assert main([str(tmp_path / "log.csv"), "--events", "100", "--users", "10", "--items", "50",
                 "--header"]) == 0
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == \
        "user,item,category,behavior,timestamp"
    assert "wrote 100 events" in capsys.readouterr().out
