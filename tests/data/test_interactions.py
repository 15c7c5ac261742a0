"""Interactions checks and from_events preprocessing: counted drops, de-duplication, k-core,
id remapping, stable chronological sort, no mutation of inputs."""

import logging

import numpy as np
import pytest

from stseq.data import Interactions, from_events


def test_from_events_drops_invalid_rows_and_counts_them(caplog):
    users = np.array(["u1", "u1", "u1", "u2", "u2", "u2"])
    items = np.array([10, 11, 12, 10, 11, 12])
    times = np.array([100.0, np.nan, 300.0, 50.0, 60.0, 70.0])
    latitude = np.array([51.0, 51.0, 95.0, 51.0, 51.0, 51.0])  # row 2: latitude out of range
    longitude = np.zeros(6)
    with caplog.at_level(logging.WARNING, logger="stseq.data"):
        data = from_events(users, items, times, latitude=latitude, longitude=longitude)
    assert data.report.dropped == {"bad timestamp": 1, "bad coordinates": 1}
    assert "1 bad timestamp" in caplog.text
    assert data.num_events == 4
    assert data.user_ids.tolist() == ["u1", "u2"]
    assert data.item_ids.tolist() == [10, 11, 12]
    assert data.sequence(0).items.tolist() == [0]
    assert data.sequence(1).items.tolist() == [0, 1, 2]
    assert data.coordinates.shape == (4, 2)


def test_deduplication_keeps_the_first_and_sort_is_stable():
    users = [7, 7, 7, 7, 7]
    items = ["b", "a", "b", "c", "a"]
    times = [20, 20, 20, 10, 20]  # (7, b, 20) and (7, a, 20) repeat
    data = from_events(users, items, times)
    assert data.report.dropped == {"duplicate": 2}
    # chronological; the two events at t=20 keep their row order (b before a)
    assert data.item_ids[data.sequence(0).items].tolist() == ["c", "b", "a"]
    assert data.sequence(0).timestamps.tolist() == [10, 20, 20]
    kept = from_events(users, items, times, deduplicate=False)
    assert kept.num_events == 5 and "duplicate" not in kept.report.dropped


def test_k_core_is_iterated_until_stable():
    # Item z is rare; removing it leaves user B with one event, which then goes too, which
    # makes item y rare in turn. Only A and C with items x survive a 2-core.
    users = ["A", "A", "B", "B", "C", "C", "A"]
    items = ["x", "x", "y", "z", "x", "x", "y"]
    data = from_events(users, items, np.arange(7), min_user_events=2, min_item_events=2)
    assert data.user_ids.tolist() == ["A", "C"]
    assert data.item_ids.tolist() == ["x"]
    assert data.report.dropped == {"k-core": 3}
    assert (data.report.users, data.report.items, data.report.events) == (2, 1, 4)


def test_time_range_and_behaviors():
    data = from_events([1, 1, 1, 1], [5, 6, 7, 8], [10, 20, 30, 40],
                       behaviors=["pv", "buy", "click", "pv"], behavior_names=("pv", "buy"),
                       time_range=(15, 40))
    assert data.report.dropped == {"unknown behavior": 1, "outside time_range": 2}  # t=10, t=40
    assert data.behavior_names == ("pv", "buy")
    assert data.behaviors.tolist() == [1]
    assert data.item_ids.tolist() == [6]


def test_inputs_are_not_modified():
    users, items = np.array([3, 1, 3]), np.array([9, 8, 9])
    times = np.array([30.0, 10.0, 30.0])
    copies = [a.copy() for a in (users, items, times)]
    from_events(users, items, times)
    for original, copy in zip((users, items, times), copies):
        assert np.array_equal(original, copy)


def test_interactions_checks_name_the_user_and_position():
    with pytest.raises(ValueError, match="user 1, position 2 goes 9 -> 8"):
        Interactions.from_sequences([[0], [1, 2, 3]], [[5], [7, 9, 8]])
    with pytest.raises(ValueError, match="items must be in"):
        Interactions.from_sequences([[0, 4]], [[1, 2]], num_items=4)
    with pytest.raises(ValueError, match="latitude in"):
        Interactions.from_sequences([[0, 1]], [[1, 2]], coordinates=[[[0, 0], [91, 0]]])
    with pytest.raises(ValueError, match="timestamps must hold integers"):
        Interactions(np.array([0, 1]), np.array([0]), np.array([1.5]))
    with pytest.raises(ValueError, match="offsets"):
        Interactions(np.array([0, 2]), np.array([0]), np.array([1]))


def test_prefix_and_accessors():
    data = Interactions.from_sequences([[2, 1, 0], [1, 1]], [[1, 2, 3], [4, 5]], num_items=3,
                                       coordinates=[[[1, 1], [2, 2], [3, 3]], [[2, 4], [2, 4]]])
    assert data.lengths.tolist() == [3, 2]
    assert data.event_users().tolist() == [0, 0, 0, 1, 1]
    assert data.event_positions().tolist() == [0, 1, 2, 0, 1]
    assert data.item_counts().tolist() == [1, 3, 1]
    assert data.item_coordinates()[1].tolist() == pytest.approx([2, 10 / 3])
    head = data.prefix([1, 0])
    assert head.lengths.tolist() == [1, 0] and head.items.tolist() == [2]
    assert head.num_items == 3 and head.coordinates.tolist() == [[1, 1]]
    with pytest.raises(ValueError, match="user 1 has 2 events"):
        data.prefix([1, 3])
