"""Leakage-free splits: ``Targets`` (what to predict, from which history) and ``Split``
(training prefixes plus validation and test targets).

A target of user ``u`` at ``position`` p sees the history ``events [0, p)`` of ``u`` and asks,
at ``query_time`` (the time of the event at p: when the recommendation is requested), for its
relevant items (the item at p, or a set of future items).
"""

from dataclasses import dataclass

import numpy as np

from stseq.data.interactions import Interactions

GLOBAL_TARGETS = ("first", "all", "future")


@dataclass(frozen=True)
class Targets:
    """Evaluation queries over one ``Interactions``.

    Fields (T queries, R relevant items in all):
        users: [T] int64 user indices.
        positions: [T] int64; the history is the user's events ``[0, position)``.
        query_times: [T] int64 seconds at which the recommendation is asked for.
        item_offsets: [T + 1] int64; query t's relevant items are
            ``items[item_offsets[t]:item_offsets[t + 1]]`` (none for pure recommendation).
        items: [R] int64 relevant item ids.

    Example::

        targets = Targets.next_item(data, users=[0, 1], positions=[5, 3])
        len(targets), targets.relevant(0)   # (2, array([item at user 0's position 5]))
    """

    users: np.ndarray
    positions: np.ndarray
    query_times: np.ndarray
    item_offsets: np.ndarray
    items: np.ndarray

    @classmethod
    def next_item(cls, interactions, users, positions):
        """Targets predicting the event at ``positions`` of ``users``: relevant = its item,
        query time = its timestamp."""
        users = np.asarray(users, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        lengths = interactions.lengths[users]
        if ((positions < 0) | (positions >= lengths)).any():
            bad = int(np.nonzero((positions < 0) | (positions >= lengths))[0][0])
            raise ValueError(f"positions[{bad}] = {positions[bad]} is not an event of user "
                             f"{users[bad]} ({lengths[bad]} events)")
        index = interactions.offsets[users] + positions
        return cls(users, positions, interactions.timestamps[index],
                   np.arange(len(users) + 1, dtype=np.int64), interactions.items[index])

    def __len__(self):
        return len(self.users)

    def relevant(self, target):
        """[r] relevant items of query ``target``."""
        return self.items[self.item_offsets[target]:self.item_offsets[target + 1]]

    @property
    def num_relevant(self):
        """[T] int64 relevant items per query."""
        return np.diff(self.item_offsets)

    def select(self, index):
        """The queries at ``index`` (a slice, bool mask or integer array), in that order."""
        chosen = np.arange(len(self))[index]
        counts = self.num_relevant[chosen]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = ranges(self.item_offsets[chosen], counts)
        return Targets(self.users[chosen], self.positions[chosen], self.query_times[chosen],
                       offsets, self.items[flat])


@dataclass(frozen=True)
class Split:
    """A split of ``interactions``: ``train`` (per-user prefixes, same users and items) to fit
    on, and ``valid`` / ``test`` targets whose histories come from ``interactions``."""

    interactions: Interactions
    train: Interactions
    valid: Targets
    test: Targets
    name: str

    def __repr__(self):
        return (f"Split({self.name}: {self.train.num_events} training events, "
                f"{len(self.valid)} validation and {len(self.test)} test targets)")


def ranges(starts, counts):
    """[sum(counts)] int64: ``starts[i], ..., starts[i] + counts[i] - 1`` for each i, concatenated.

    Example::

        ranges(np.array([10, 0]), np.array([2, 3]))   # array([10, 11, 0, 1, 2])
    """
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts - starts, counts)


def leave_one_out(interactions, *, min_history=1):
    """Leave-one-out by time: each user's last event is the test target, the one before it the
    validation target, and training holds the events before both (users with two events train
    on the first and have no validation target; a single event only trains). Targets with
    fewer than ``min_history`` events before them are dropped. Every training event of a user
    precedes (by time, ties allowed) its validation and test events.

    Example::

        split = leave_one_out(data)
        split.train, split.valid, split.test
    """
    n = interactions.lengths
    users = np.arange(interactions.num_users)
    has_test = n - 1 >= max(min_history, 1)
    has_valid = (n >= 3) & (n - 2 >= max(min_history, 1))
    train = interactions.prefix(np.where(n >= 3, n - 2, np.minimum(n, 1)))
    return Split(interactions, train,
                 Targets.next_item(interactions, users[has_valid], n[has_valid] - 2),
                 Targets.next_item(interactions, users[has_test], n[has_test] - 1),
                 "leave-one-out")


def _cut(timestamps, fraction, name):
    if not 0 < fraction < 1:
        raise ValueError(f"{name} must be in (0, 1), got {fraction}")
    ordered = np.sort(timestamps)
    return int(ordered[min(int(np.ceil(len(ordered) * (1 - fraction))), len(ordered) - 1)])


def global_split(interactions, *, test_time=None, valid_time=None, test_fraction=0.1,
                 valid_fraction=0.1, targets="first", min_history=1):
    """Global-timeline split: one cut time for every user, so nothing after a cut is trained
    on. Training holds the events before ``valid_time``; events in ``[valid_time, test_time)``
    are validation and those at or after ``test_time`` test. Cut times default to the
    timestamp quantiles leaving ``test_fraction`` / ``valid_fraction`` of the events after them.

    ``targets``: ``"first"`` (default) one query per user, its first event in the period;
    ``"all"`` every event in the period, each with all earlier events as history; ``"future"``
    one query per user at its first event in the period whose relevant items are all distinct
    items of the user in the period. Queries with fewer than ``min_history`` events before them
    are dropped (cold-start users).

    Example::

        split = global_split(data, test_fraction=0.1, valid_fraction=0.1)
    """
    if targets not in GLOBAL_TARGETS:
        raise ValueError(f"targets must be one of {GLOBAL_TARGETS}, got {targets!r}")
    times = interactions.timestamps
    if interactions.num_events == 0:
        raise ValueError("interactions has no events to split")
    if test_time is None:
        test_time = _cut(times, test_fraction, "test_fraction")
    if valid_time is None:
        valid_time = _cut(times, test_fraction + valid_fraction, "test_fraction + valid_fraction")
    if valid_time > test_time:
        raise ValueError(f"valid_time ({valid_time}) must not be after test_time ({test_time})")
    users = interactions.event_users()
    before_valid = np.bincount(users[times < valid_time], minlength=interactions.num_users)
    before_test = np.bincount(users[times < test_time], minlength=interactions.num_users)
    train = interactions.prefix(before_valid)
    valid = _period_targets(interactions, before_valid, before_test, targets, min_history)
    test = _period_targets(interactions, before_test, interactions.lengths, targets, min_history)
    return Split(interactions, train, valid, test,
                 f"global timeline (valid from {valid_time}, test from {test_time}, {targets})")


def _period_targets(interactions, first, end, mode, min_history):
    """Targets over each user's events [first[u], end[u])."""
    count = end - first
    user = np.arange(interactions.num_users)
    if mode == "all":
        users = np.repeat(user, count)
        positions = ranges(first, count)
    else:
        users, positions = user[count > 0], first[count > 0]
    keep = positions >= max(min_history, 1)
    if mode != "future":
        return Targets.next_item(interactions, users[keep], positions[keep])
    users, positions = users[keep], positions[keep]
    relevant = []
    for u, p in zip(users, positions):
        span = interactions.items[interactions.offsets[u] + p: interactions.offsets[u] + end[u]]
        relevant.append(span[np.sort(np.unique(span, return_index=True)[1])])
    counts = np.array([len(r) for r in relevant], dtype=np.int64)
    query_times = interactions.timestamps[interactions.offsets[users] + positions]
    return Targets(users, positions, query_times,
                   np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   np.concatenate(relevant).astype(np.int64) if relevant else np.zeros(0, np.int64))
