"""Batches against direct indexing: windows cover each transition once (overlapping ones too),
padding, per-event time gaps and distances, evaluation rows without targets, jagged layout, and
that batches feed the time-gap op as they are."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stseq import ops
from stseq.data import (Interactions, Targets, evaluation_batches, make_batch, synthetic,
                        training_batches)
from stseq.reference import haversine_km


@pytest.fixture(scope="module")
def data():
    return synthetic(60, 50, num_categories=5, num_regions=4, min_length=2, max_length=30,
                     seed=3).interactions


def test_training_windows_cover_every_transition_once(data):
    seen = []
    for batch in training_batches(data, batch_size=16, max_length=7, seed=0):
        assert batch.items.shape[1] <= 7 and batch.next_items.shape == batch.items.shape
        for row in range(len(batch.users)):
            user, n = int(batch.users[row]), int(batch.lengths[row])
            start = int(batch.positions[row]) - n
            sequence = data.sequence(user)
            assert batch.items[row, :n].tolist() == sequence.items[start:start + n].tolist()
            following = sequence.items[start + 1:start + n + 1]
            assert batch.next_items[row, :n].tolist() == following.tolist()
            assert (batch.items[row, n:] == data.num_items).all()
            assert (batch.next_items[row, n:] == batch.pad_item).all()
            seen += [(user, start + p + 1) for p in range(n)]
    expected = [(u, p) for u in range(data.num_users) for p in range(1, data.lengths[u])]
    assert sorted(seen) == expected


def test_shuffling_is_seeded_and_changes_each_pass(data):
    def orders(batches):
        return [torch.cat([b.users * 1000 + b.positions for b in batches]).tolist()
                for _ in range(2)]

    first, second = orders(training_batches(data, batch_size=8, max_length=5, seed=1))
    again, _ = orders(training_batches(data, batch_size=8, max_length=5, seed=1))
    assert first == again and first != second and sorted(first) == sorted(second)
    fixed = training_batches(data, batch_size=8, max_length=5, pad_to_max_length=True)
    assert all(b.items.shape[1] == 5 for b in fixed)
    assert len(training_batches(data, batch_size=8, max_length=5, drop_last=True)) == \
        len(fixed.users) // 8


def test_time_gaps_distances_and_padding_by_hand():
    data = Interactions.from_sequences(
        [[0, 1, 2, 1]], [[100, 160, 400, 400]],
        coordinates=[[[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0]]], behaviors=[[0, 1, 2, 0]],
        behavior_names=("view", "cart", "buy"))
    # windows [1, 3) and [1, 2): their first event's gap and distance are to event 0, outside
    batch = make_batch(data, [0, 0], [1, 1], [3, 2], [400, 400], with_next_items=True)
    assert batch.items.tolist() == [[1, 2], [1, 3]]  # 3 = num_items pads
    assert batch.timestamps.tolist() == [[160, 400], [160, 160]]
    assert batch.time_gaps.tolist() == [[60, 240], [60, 0]]
    assert batch.next_timestamps.tolist() == [[400, 400], [400, 400]]
    assert batch.next_items.tolist() == [[2, 1], [2, 3]]
    assert batch.behaviors.tolist() == [[1, 2], [1, 0]]
    degree = float(haversine_km(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0),
                                torch.tensor(1.0)))
    assert batch.distances[0].tolist() == pytest.approx([degree, degree], rel=1e-6)
    assert batch.distances[1].tolist() == pytest.approx([degree, 0.0], rel=1e-6)
    assert batch.coordinates[1].tolist() == [[0.0, 1.0], [0.0, 1.0]]  # padding repeats the last
    assert batch.last_items.tolist() == [2, 1] and batch.query_times.tolist() == [400, 400]
    with pytest.raises(ValueError, match="row 1 has start 2, end 1"):
        make_batch(data, [0, 0], [0, 2], [1, 1], [0, 0])
    with pytest.raises(ValueError, match="next item must exist"):
        make_batch(data, [0], [0], [4], [0], with_next_items=True)
    with pytest.raises(ValueError, match="users must be in"):
        make_batch(data, [1], [0], [1], [0])


def test_evaluation_batches_hold_histories_only(data):
    users = np.arange(data.num_users)
    targets = Targets.next_item(data, users, data.lengths - 1)
    rows = 0
    for batch in evaluation_batches(data, targets, batch_size=16, max_length=6):
        assert batch.next_items is None
        for row in range(len(batch.users)):
            user, n = int(batch.users[row]), int(batch.lengths[row])
            end = data.lengths[user] - 1
            assert n == min(6, end) and int(batch.positions[row]) == end
            assert batch.items[row, :n].tolist() == data.sequence(user).items[end - n:end].tolist()
            assert int(batch.query_times[row]) == data.sequence(user).timestamps[end]
        rows += len(batch.users)
    assert rows == data.num_users


def test_jagged_layout_round_trip(data):
    batch = next(iter(training_batches(data, batch_size=5, max_length=8, shuffle=False)))
    jagged = batch.to_jagged()
    assert jagged.offsets.tolist() == [0] + torch.cumsum(batch.lengths, 0).tolist()
    for row in range(5):
        span = slice(int(jagged.offsets[row]), int(jagged.offsets[row + 1]))
        n = int(batch.lengths[row])
        assert torch.equal(jagged.items[span], batch.items[row, :n])
        assert torch.equal(jagged.time_gaps[span], batch.time_gaps[row, :n])
        assert torch.equal(jagged.coordinates[span], batch.coordinates[row, :n])
        assert torch.equal(jagged.next_items[span], batch.next_items[row, :n])
    assert jagged.max_length == batch.items.shape[1]
    assert batch.to("cpu").items.data_ptr() == batch.items.data_ptr()


def test_batches_feed_the_time_gap_op(data):
    batch = next(iter(training_batches(data, batch_size=8, max_length=10)))
    table = torch.randn(3, 8, 4, dtype=torch.float64)
    out = ops.time_gap_embedding(batch.timestamps, table, lengths=batch.lengths,
                                 coordinates=batch.coordinates.double(),
                                 distance_weight=torch.randn(3, 8, 4, dtype=torch.float64),
                                 backend="reference")
    assert out.shape == (8, batch.items.shape[1], 4)
    assert torch.isfinite(out).all()


# The streaming pipeline --------------------------------------------------------------------
def _fields(batch):
    return {name: value for name, value in vars(batch).items()}


def _assert_same_batches(left, right):
    left, right = list(left), list(right)
    assert len(left) == len(right) > 1
    for a, b in zip(left, right):
        for name, value in _fields(a).items():
            other = _fields(b)[name]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), name
            else:
                assert value == other, name


def test_prefetched_batches_are_the_batches_in_the_same_order():
    from stseq.data import Prefetched, synthetic, training_batches

    data = synthetic(num_users=60, num_items=40, seed=3).interactions
    plain = training_batches(data, batch_size=16, max_length=7, seed=5)
    ahead = Prefetched(training_batches(data, batch_size=16, max_length=7, seed=5), depth=3)
    assert len(ahead) == len(plain)
    for _ in range(2):  # a new order each epoch, the same in both
        _assert_same_batches(plain, ahead)
    assert plain._rng.bit_generator.state == ahead.batches._rng.bit_generator.state


def test_batches_from_the_memory_mapped_cache_are_the_same(tmp_path):
    from stseq.data import synthetic, training_batches
    from stseq.data.cache import read_cache, write_cache

    data = synthetic(num_users=40, num_items=30, seed=1).interactions
    write_cache(tmp_path, data, {"version": 1})
    mapped = read_cache(tmp_path)
    _assert_same_batches(training_batches(data, batch_size=8, seed=2),
                         training_batches(mapped, batch_size=8, seed=2))


def test_prefetched_stops_its_thread_and_raises_its_errors():
    import threading

    from stseq.data import Prefetched, synthetic, training_batches

    data = synthetic(num_users=40, num_items=30, seed=1).interactions
    for batch in Prefetched(training_batches(data, batch_size=4), depth=1):
        break
    assert not any(thread.name == "stseq-batches" for thread in threading.enumerate())

    class Failing:
        def __len__(self):
            return 1

        def __iter__(self):
            raise OSError("disk gone")
            yield

    with pytest.raises(OSError, match="disk gone"):
        list(Prefetched(Failing()))
    with pytest.raises(ValueError, match="depth"):
        Prefetched(Failing(), depth=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pin_memory"):
            Prefetched(Failing(), pin_memory=True)


@pytest.mark.cuda
def test_prefetched_pins_memory_for_the_gpu():
    from stseq.data import Prefetched, synthetic, training_batches

    data = synthetic(num_users=40, num_items=30, seed=1).interactions
    batch = next(iter(Prefetched(training_batches(data, batch_size=4), pin_memory=True)))
    assert batch.items.is_pinned() and batch.to("cuda", non_blocking=True).items.is_cuda


def _trained(batches, data):
    """{(user, target event index): history length} over the targets of ``batches``, checking
    every target and input against the user's sequence and that no target comes twice."""
    trained = {}
    for batch in batches:
        for row in range(len(batch.users)):
            user, n = int(batch.users[row]), int(batch.lengths[row])
            start = int(batch.positions[row]) - n
            sequence = data.sequence(user)
            assert batch.items[row, :n].tolist() == sequence.items[start:start + n].tolist()
            for p in torch.nonzero(batch.next_items[row] != batch.pad_item)[:, 0].tolist():
                assert p < n and int(batch.next_items[row, p]) == sequence.items[start + p + 1]
                assert (user, start + p + 1) not in trained
                trained[(user, start + p + 1)] = p + 1
    return trained


@pytest.mark.parametrize("max_length, stride", [(7, 7), (7, 3), (7, 1), (5, 4)])
def test_overlapping_windows_train_every_transition_once_with_long_histories(data, max_length,
                                                                              stride):
    batches = training_batches(data, batch_size=16, max_length=max_length, stride=stride, seed=0)
    trained = _trained(batches, data)
    expected = [(u, p) for u in range(data.num_users) for p in range(1, data.lengths[u])]
    assert sorted(trained) == expected
    # each target sees max_length - stride + 1 events or more (all it has when fewer)
    assert all(history >= min(target, max_length - stride + 1)
               for (_, target), history in trained.items())
    assert all(b.items.shape[1] <= max_length for b in batches)
    windows = sum(-(-(int(n) - 1) // stride) for n in data.lengths if n > 1)
    assert len(batches.users) == windows


def test_stride_of_max_length_is_the_default_windows(data):
    _assert_same_batches(training_batches(data, batch_size=8, max_length=6, seed=4),
                         training_batches(data, batch_size=8, max_length=6, stride=6, seed=4))


def test_overlapping_windows_by_hand():
    data = Interactions.from_sequences([[0, 1, 2, 3, 4, 5, 6]], [[1, 2, 3, 4, 5, 6, 7]])
    batches = training_batches(data, batch_size=8, max_length=4, stride=2, shuffle=False)
    batch = next(iter(batches))
    pad = batch.pad_item
    # 6 transitions, ends 6, 4, 2: windows [2, 6), [0, 4), [0, 2)
    assert batch.items.tolist() == [[2, 3, 4, 5], [0, 1, 2, 3], [0, 1, pad, pad]]
    assert batch.next_items.tolist() == [[pad, pad, 5, 6], [pad, pad, 3, 4], [1, 2, pad, pad]]


@pytest.mark.parametrize("stride", [0, 8, 2.5, True, "3"])
def test_bad_stride_is_named(data, stride):
    with pytest.raises(ValueError, match="stride must be an integer in"):
        training_batches(data, max_length=7, stride=stride)


def _windows(batches):
    """[(user, first event, end)] of one pass over ``batches``, sorted."""
    return sorted((int(b.users[r]), int(b.positions[r] - b.lengths[r]), int(b.positions[r]))
                  for b in batches for r in range(len(b.users)))


@pytest.mark.parametrize("max_length, stride", [(7, 7), (7, 3)])
def test_random_window_phase_cuts_other_windows_every_pass(data, max_length, stride):
    expected = [(u, p) for u in range(data.num_users) for p in range(1, data.lengths[u])]
    batches = training_batches(data, batch_size=16, max_length=max_length, stride=stride,
                               window_phase="random", seed=2)
    cuts = []
    for index in range(3):
        count = len(batches)  # the batch count of the pass about to run
        assert batches.passes == index
        trained = _trained(batches, data)  # every transition once in every pass
        assert sorted(trained) == expected
        assert all(history >= min(target, max_length - stride + 1)
                   for (_, target), history in trained.items())
        assert -(-len(batches.users) // 16) == count
        batches.passes = index  # the same pass again (as a resumed run): the same windows
        cuts.append(_windows(batches))
    assert cuts[0] != cuts[1] and cuts[1] != cuts[2]  # other cuts each pass
    fixed = training_batches(data, batch_size=16, max_length=max_length, stride=stride, seed=2)
    assert _windows(fixed) == _windows(fixed)  # "end": the same windows every pass


def test_random_window_phase_by_hand():
    data = Interactions.from_sequences([[0, 1, 2, 3, 4, 5, 6]], [[1, 2, 3, 4, 5, 6, 7]])
    for index in range(20):
        batches = training_batches(data, batch_size=8, max_length=4, window_phase="random",
                                   shuffle=False, seed=0)
        batches.passes = index
        batch = next(iter(batches))
        pad = batch.pad_item
        # 6 transitions, shift q in 0..3: windows ending at 6 - q, 2 - q (if > 0), and, for
        # q > 0, [2, 6) training only its last q positions
        q = 6 - int(batch.positions[0])
        assert 0 <= q <= 3
        rows = list(zip(batch.items.tolist(), batch.next_items.tolist()))
        if q == 0:
            assert rows == [([2, 3, 4, 5], [3, 4, 5, 6]), ([0, 1, pad, pad], [1, 2, pad, pad])]
            continue
        last = rows[-1]
        assert last[0] == [2, 3, 4, 5]
        assert last[1] == [pad] * (4 - q) + [3, 4, 5, 6][4 - q:]
        assert sorted(t for _, nxt in rows for t in nxt if t != pad) == [1, 2, 3, 4, 5, 6]


def test_bad_window_phase_is_named(data):
    with pytest.raises(ValueError, match="window_phase must be one of"):
        training_batches(data, window_phase="start")


@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=6),
       max_length=st.integers(1, 12), data=st.data())
def test_any_stride_trains_every_transition_once(lengths, max_length, data):
    stride = data.draw(st.integers(1, max_length))
    events = Interactions.from_sequences([[i % 5 for i in range(n)] for n in lengths],
                                         [list(range(n)) for n in lengths])
    if sum(lengths) == len(lengths):  # no transitions at all
        assert len(training_batches(events, max_length=max_length, stride=stride)) == 0
        return
    trained = _trained(training_batches(events, batch_size=4, max_length=max_length,
                                        stride=stride, seed=0), events)
    assert sorted(trained) == [(u, p) for u, n in enumerate(lengths) for p in range(1, n)]
    assert all(history >= min(target, max_length - stride + 1)
               for (_, target), history in trained.items())
