"""Splits leak nothing: leave-one-out never puts a user's test (or validation) event before one
of its training events; the global split never trains on or targets across its cut times."""

import numpy as np
import pytest

from stseq.data import Interactions, Targets, global_split, leave_one_out, synthetic


@pytest.fixture(scope="module")
def data():
    return synthetic(120, 80, num_categories=8, num_regions=6, min_length=3, max_length=40,
                     seed=5).interactions


def last_training_times(split):
    train = split.train
    last = np.full(train.num_users, np.iinfo(np.int64).min)
    np.maximum.at(last, train.event_users(), train.timestamps)
    return last


def test_leave_one_out_holds_out_the_last_two_events(data):
    split = leave_one_out(data)
    n = data.lengths
    assert np.array_equal(split.test.users, np.arange(data.num_users))
    assert np.array_equal(split.test.positions, n - 1)
    assert np.array_equal(split.valid.positions, n[split.valid.users] - 2)
    assert np.array_equal(split.train.lengths, n - 2)
    last = last_training_times(split)
    for targets in (split.valid, split.test):
        assert (targets.query_times >= last[targets.users]).all()
        assert np.array_equal(targets.items, data.items[data.offsets[targets.users]
                                                        + targets.positions])
        assert (targets.positions >= split.train.lengths[targets.users]).all()


def test_leave_one_out_short_users():
    data = Interactions.from_sequences([[0], [1, 2], [0, 1, 2]], [[1], [1, 2], [1, 2, 3]])
    split = leave_one_out(data)
    assert split.train.lengths.tolist() == [1, 1, 1]
    assert split.test.users.tolist() == [1, 2] and split.test.positions.tolist() == [1, 2]
    assert split.valid.users.tolist() == [2] and split.valid.positions.tolist() == [1]
    assert leave_one_out(data, min_history=2).test.users.tolist() == [2]


@pytest.mark.parametrize("mode", ["first", "all", "future"])
def test_global_split_respects_the_cuts(data, mode):
    split = global_split(data, test_fraction=0.2, valid_fraction=0.1, targets=mode)
    test_time = split.test.query_times.min()
    valid_time = split.valid.query_times.min()
    assert (split.train.timestamps < valid_time).all()
    assert valid_time <= test_time
    assert (split.valid.query_times < test_time).all()
    for targets in (split.valid, split.test):
        assert len(targets) > 0 and (targets.positions >= 1).all()
        # every history event happened before the query
        before = data.timestamps[data.offsets[targets.users] + targets.positions - 1]
        assert (before <= targets.query_times).all()
    # the cut leaves about the requested share of events at or after test_time
    assert abs(np.mean(data.timestamps >= test_time) - 0.2) < 0.02


def test_global_split_targets_by_hand():
    data = Interactions.from_sequences(
        items=[[0, 1, 2, 1, 3], [4, 0], [2]], timestamps=[[1, 2, 5, 6, 7], [3, 8], [9]])
    split = global_split(data, valid_time=5, test_time=6, targets="all")
    assert split.train.lengths.tolist() == [2, 1, 0]
    assert (split.valid.users.tolist(), split.valid.positions.tolist()) == ([0], [2])
    # test: user 0 positions 3, 4; user 1 position 1; user 2 has no history (dropped)
    assert (split.test.users.tolist(), split.test.positions.tolist()) == ([0, 0, 1], [3, 4, 1])
    first = global_split(data, valid_time=5, test_time=6, targets="first").test
    assert (first.users.tolist(), first.positions.tolist()) == ([0, 1], [3, 1])
    future = global_split(data, valid_time=5, test_time=6, targets="future").test
    assert future.relevant(0).tolist() == [1, 3] and future.relevant(1).tolist() == [0]
    assert future.query_times.tolist() == [6, 8]
    with pytest.raises(ValueError, match="valid_time"):
        global_split(data, valid_time=7, test_time=6)
    with pytest.raises(ValueError, match="targets"):
        global_split(data, targets="last")


def test_targets_select_and_checks(data):
    targets = Targets.next_item(data, [0, 1, 2], [1, 2, 1])
    picked = targets.select(np.array([2, 0]))
    assert picked.users.tolist() == [2, 0] and picked.items.tolist() == [targets.items[2],
                                                                         targets.items[0]]
    with pytest.raises(ValueError, match="not an event of user"):
        Targets.next_item(data, [0], [data.lengths[0]])
