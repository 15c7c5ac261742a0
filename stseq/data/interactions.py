"""``Interactions``: the one in-memory event format every generator, loader, split and batcher
shares, and ``from_events``: the preprocessing that builds it from raw rows.

Events are stored user-major (CSR): user ``u``'s events are ``[offsets[u], offsets[u + 1])`` of
the flat arrays, sorted by time. Users are ``0..num_users-1`` and items ``0..num_items-1``; the
raw ids they came from are kept in ``user_ids`` / ``item_ids``. Time is int64 seconds (UTC),
coordinates are (latitude, longitude) in degrees.
"""

import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from stseq.data.columns import encode_ids

logger = logging.getLogger("stseq.data")


@dataclass
class PreprocessReport:
    """What preprocessing read, dropped (per reason, never silently) and kept.

    ``dropped`` maps a reason ("malformed row", "bad timestamp", "bad coordinates", "unknown
    behavior", "outside time_range", "duplicate", "k-core", ...) to a row count;
    ``first_lines`` gives the first file line (1-based) of each parse-time reason.

    Example::

        data = stseq.data.load_movielens("ratings.dat")
        print(data.report)   # ratings.dat: 1000209 rows -> 6040 users, 3706 items, ...
    """

    source: str
    rows: int
    dropped: dict = field(default_factory=dict)
    first_lines: dict = field(default_factory=dict)
    users: int = 0
    items: int = 0
    events: int = 0

    def drop(self, reason, count, line=None):
        """Record ``count`` rows dropped for ``reason`` (first seen at file ``line``)."""
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)
            if line is not None:
                self.first_lines.setdefault(reason, line)

    def __str__(self):
        parts = []
        for reason, count in self.dropped.items():
            line = self.first_lines.get(reason)
            parts.append(f"{count} {reason}" + (f" (first at line {line})" if line else ""))
        dropped = "; dropped " + ", ".join(parts) if parts else "; nothing dropped"
        return (f"{self.source}: {self.rows} rows -> {self.users} users, {self.items} items, "
                f"{self.events} events{dropped}")


class Sequence(NamedTuple):
    """One user's events (views into the flat arrays): items [n], timestamps [n],
    coordinates [n, 2] or None, behaviors [n] or None."""

    items: np.ndarray
    timestamps: np.ndarray
    coordinates: np.ndarray | None
    behaviors: np.ndarray | None


class Interactions:
    """Per-user, time-sorted event sequences (CSR layout).

    Args:
        offsets: [U + 1] int64, ``offsets[0] == 0``, non-decreasing, ``offsets[-1] == N``.
        items: [N] int64 in ``[0, num_items)``.
        timestamps: [N] int64 seconds (UTC), non-decreasing within each user.
        num_items: size of the item vocabulary (default: ``items.max() + 1``).
        coordinates: [N, 2] float64 (latitude, longitude) in degrees, or None.
        behaviors: [N] int64 indices into ``behavior_names`` (e.g. view/cart/buy), or None.
        behavior_names: names of the behavior codes.
        user_ids: [U] raw user ids (default ``arange(U)``); item_ids: [num_items] raw item ids.
        report: the ``PreprocessReport`` of the loader that built it, if any.

    Arrays are converted (not modified in place); a ValueError names the argument and, for
    data errors, the user and position.

    Example::

        data = Interactions.from_sequences(items=[[3, 1, 2], [0, 2]],
                                           timestamps=[[10, 20, 20], [5, 9]], num_items=4)
        data.num_users, data.num_events        # (2, 5)
        data.sequence(0).items                 # array([3, 1, 2])
    """

    def __init__(self, offsets, items, timestamps, *, num_items=None, coordinates=None,
                 behaviors=None, behavior_names=None, user_ids=None, item_ids=None, report=None):
        self.offsets = _integer_array(offsets, "offsets")
        self.items = _integer_array(items, "items")
        self.timestamps = _integer_array(timestamps, "timestamps")
        self.num_items = int(num_items if num_items is not None
                             else (self.items.max() + 1 if self.items.size else 0))
        self.coordinates = None if coordinates is None else np.asarray(coordinates, np.float64)
        self.behaviors = None if behaviors is None else _integer_array(behaviors, "behaviors")
        self.behavior_names = tuple(behavior_names) if behavior_names is not None else None
        self.user_ids = np.arange(self.num_users) if user_ids is None else np.asarray(user_ids)
        self.item_ids = np.arange(self.num_items) if item_ids is None else np.asarray(item_ids)
        self.report = report
        self._validate()

    @classmethod
    def from_sequences(cls, items, timestamps, *, coordinates=None, behaviors=None, **kwargs):
        """Build from one array per user (lists of lists or arrays); other keyword arguments
        as for the constructor.

        Example::

            Interactions.from_sequences([[0, 1]], [[100, 160]], coordinates=[[[51.5, 0.1],
                                        [51.6, 0.1]]])
        """
        if len(items) != len(timestamps):
            raise ValueError(f"items has {len(items)} users but timestamps has {len(timestamps)}")
        lengths = np.array([len(row) for row in items], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])

        def flat(rows, name, dtype, tail=()):
            if rows is None:
                return None
            if len(rows) != len(items):
                raise ValueError(f"{name} has {len(rows)} users but items has {len(items)}")
            parts = [np.asarray(row, dtype).reshape((-1,) + tail) for row in rows]
            for user, (part, n) in enumerate(zip(parts, lengths)):
                if len(part) != n:
                    raise ValueError(f"{name} of user {user} has {len(part)} events but items "
                                     f"has {n}")
            return np.concatenate(parts) if parts else np.zeros((0,) + tail, dtype)

        return cls(offsets, flat(items, "items", np.int64),
                   flat(timestamps, "timestamps", np.int64),
                   coordinates=flat(coordinates, "coordinates", np.float64, (2,)),
                   behaviors=flat(behaviors, "behaviors", np.int64), **kwargs)

    # Sizes -----------------------------------------------------------------------------------
    @property
    def num_users(self):
        return len(self.offsets) - 1

    @property
    def num_events(self):
        return len(self.items)

    @property
    def lengths(self):
        """[U] int64 events per user."""
        return np.diff(self.offsets)

    def __repr__(self):
        extras = [name for name in ("coordinates", "behaviors") if getattr(self, name) is not None]
        return (f"Interactions({self.num_users} users, {self.num_items} items, "
                f"{self.num_events} events{', with ' + ' and '.join(extras) if extras else ''})")

    # Access ----------------------------------------------------------------------------------
    def sequence(self, user):
        """User ``user``'s events as a ``Sequence`` of views."""
        if not 0 <= user < self.num_users:
            raise ValueError(f"user must be in [0, {self.num_users}), got {user}")
        span = slice(self.offsets[user], self.offsets[user + 1])
        return Sequence(self.items[span], self.timestamps[span],
                        None if self.coordinates is None else self.coordinates[span],
                        None if self.behaviors is None else self.behaviors[span])

    def event_users(self):
        """[N] int64: the user of each event."""
        return np.repeat(np.arange(self.num_users), self.lengths)

    def event_positions(self):
        """[N] int64: the index of each event within its user's sequence."""
        return np.arange(self.num_events) - np.repeat(self.offsets[:-1], self.lengths)

    def item_counts(self):
        """[num_items] int64 events per item."""
        return np.bincount(self.items, minlength=self.num_items)

    def transition_counts(self):
        """(keys, counts): the distinct transitions ``i -> j`` between consecutive events of a
        user as sorted int64 keys ``i * num_items + j``, and how often each occurs.

        Example::

            keys, counts = split.train.transition_counts()
            previous, following = keys // split.train.num_items, keys % split.train.num_items
        """
        follows = np.diff(self.event_users()) == 0  # consecutive events of one user
        pairs = self.items[:-1][follows] * self.num_items + self.items[1:][follows]
        return np.unique(pairs, return_counts=True)

    def item_coordinates(self):
        """[num_items, 2] float64 mean (latitude, longitude) of each item's events (NaN for
        items without events); None without coordinates."""
        if self.coordinates is None:
            return None
        counts = self.item_counts()[:, None].astype(np.float64)
        sums = np.zeros((self.num_items, 2))
        np.add.at(sums, self.items, self.coordinates)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts

    def prefix(self, lengths):
        """A new ``Interactions`` holding the first ``lengths[u]`` events of each user (same
        users, items and ids): the training part of a split.

        Example::

            train = data.prefix(data.lengths - 2)   # all but the last two events per user
        """
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (self.num_users,):
            raise ValueError(f"lengths must have shape [U] = [{self.num_users}], got "
                             f"{lengths.shape}")
        if (lengths < 0).any() or (lengths > self.lengths).any():
            user = int(np.nonzero((lengths < 0) | (lengths > self.lengths))[0][0])
            raise ValueError(f"lengths must be in [0, events of the user]; user {user} has "
                             f"{self.lengths[user]} events, lengths[{user}] = {lengths[user]}")
        keep = self.event_positions() < np.repeat(lengths, self.lengths)
        return Interactions(
            np.concatenate([[0], np.cumsum(lengths)]), self.items[keep], self.timestamps[keep],
            num_items=self.num_items,
            coordinates=None if self.coordinates is None else self.coordinates[keep],
            behaviors=None if self.behaviors is None else self.behaviors[keep],
            behavior_names=self.behavior_names, user_ids=self.user_ids, item_ids=self.item_ids)

    # Checks ----------------------------------------------------------------------------------
    def _where(self, index):
        user = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return f"user {user}, position {index - self.offsets[user]}"

    def _validate(self):
        offsets, n = self.offsets, len(self.items)
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != n:
            raise ValueError(f"offsets must be [U + 1] starting at 0 and ending at the number of "
                             f"events ({n}), got {offsets[:3]}...{offsets[-3:]}")
        if (np.diff(offsets) < 0).any():
            raise ValueError("offsets must be non-decreasing")
        if self.timestamps.shape != (n,):
            raise ValueError(f"timestamps must have shape [N] = [{n}], got {self.timestamps.shape}")
        bad = np.nonzero((self.items < 0) | (self.items >= self.num_items))[0]
        if bad.size:
            raise ValueError(f"items must be in [0, num_items={self.num_items}); "
                             f"{self._where(bad[0])} has {self.items[bad[0]]}")
        starts = np.zeros(n, dtype=bool)
        starts[offsets[:-1][offsets[:-1] < n]] = True
        decreases = np.zeros(n, dtype=bool)  # compared, not subtracted: no int64 overflow
        decreases[1:] = self.timestamps[1:] < self.timestamps[:-1]
        bad = np.nonzero(decreases & ~starts)[0]
        if bad.size:
            raise ValueError("timestamps must be non-decreasing within each user; "
                             f"{self._where(bad[0])} goes {self.timestamps[bad[0] - 1]} -> "
                             f"{self.timestamps[bad[0]]}")
        if self.coordinates is not None:
            if self.coordinates.shape != (n, 2):
                raise ValueError("coordinates must have shape [N, 2] (latitude, longitude), got "
                                 f"{self.coordinates.shape}")
            bad = np.nonzero(~_valid_coordinates(self.coordinates[:, 0], self.coordinates[:, 1]))[0]
            if bad.size:
                raise ValueError("coordinates must be finite, latitude in [-90, 90] and longitude "
                                 f"in [-180, 180]; {self._where(bad[0])} has "
                                 f"{self.coordinates[bad[0]].tolist()}")
        if self.behaviors is not None:
            if self.behaviors.shape != (n,):
                raise ValueError(f"behaviors must have shape [N] = [{n}], got "
                                 f"{self.behaviors.shape}")
            limit = len(self.behavior_names) if self.behavior_names is not None else None
            bad = np.nonzero((self.behaviors < 0)
                             | (self.behaviors >= (np.inf if limit is None else limit)))[0]
            if bad.size:
                raise ValueError(f"behaviors must be in [0, {limit}) (behavior_names); "
                                 f"{self._where(bad[0])} has {self.behaviors[bad[0]]}")
        if len(self.user_ids) != self.num_users or len(self.item_ids) != self.num_items:
            raise ValueError(f"user_ids / item_ids must have {self.num_users} / {self.num_items} "
                             f"entries, got {len(self.user_ids)} / {len(self.item_ids)}")


def _integer_array(values, name):
    array = np.asarray(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _valid_coordinates(latitude, longitude):
    with np.errstate(invalid="ignore"):
        return (np.isfinite(latitude) & np.isfinite(longitude) & (np.abs(latitude) <= 90)
                & (np.abs(longitude) <= 180))


def _encode(ids):
    """([R] int64 codes, [V] sorted distinct raw ids) of an id column: numbers stay numbers,
    text stays text (numpy str/object arrays, lists of str, or Arrow arrays)."""
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return encode_ids(ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids])
    ids = np.asarray(ids)
    if ids.dtype.kind in "iu" and ids.ndim == 1:
        return encode_ids([pa.array(ids.astype(np.int64, copy=False))])
    if ids.dtype.kind in "SU" or (ids.dtype.kind == "O" and all(
            isinstance(value, str) for value in ids.tolist())):
        return encode_ids([pa.array(ids.astype(str), pa.string())])
    values, codes = np.unique(ids, return_inverse=True)  # other values: as numpy sorts them
    return codes.reshape(-1).astype(np.int64), values


def _user_time_order(users, times):
    """[R] stable order of rows by (user, time): one int64 key when both fit in 63 bits."""
    if not len(users):
        return np.zeros(0, dtype=np.int64)
    low, span = times.min(), int(times.max()) - int(times.min()) + 1
    if int(users.max()) + 1 <= (2**63 - 1) // span:
        return np.argsort(users * span + (times - low), kind="stable")
    return np.lexsort((times, users))


def _repeats(users, times, items, codes):
    """[R] True at rows that repeat an earlier row's (user, item, time, behavior); rows come
    sorted by (user, time, row), so copies share a run of equal (user, time)."""
    repeat = np.zeros(len(users), dtype=bool)
    tie = (users[1:] == users[:-1]) & (times[1:] == times[:-1])  # [R - 1]
    rows = np.flatnonzero(np.concatenate([[False], tie]) | np.concatenate([tie, [False]]))
    if not len(rows):
        return repeat
    group = np.cumsum(np.concatenate([[True], ~tie]))[rows]  # run of equal (user, time)
    behavior = codes[rows] if codes is not None else np.zeros(len(rows), np.int64)
    order = np.lexsort((rows, behavior, items[rows], group))
    same = np.zeros(len(rows), dtype=bool)
    keys = (group[order], items[rows][order], behavior[order])
    same[1:] = np.logical_and.reduce([key[1:] == key[:-1] for key in keys])
    repeat[rows[order][same]] = True
    return repeat


def _compact(codes, size):
    """(the codes in use, sorted; ``codes`` renumbered 0..used-1 in that order), in O(R)."""
    used = np.flatnonzero(np.bincount(codes, minlength=size))
    renumber = np.zeros(size, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    return used, renumber[codes]


def from_events(users, items, timestamps, *, latitude=None, longitude=None, behaviors=None,
                behavior_names=None, min_user_events=1, min_item_events=1, deduplicate=True,
                time_range=None, report=None, source="events"):
    """Preprocess raw event rows into ``Interactions``.

    Steps, each counted in the returned ``report`` (and logged): drop rows with a non-finite
    timestamp ("bad timestamp"), invalid coordinates ("bad coordinates") or a behavior not in
    ``behavior_names`` ("unknown behavior"); drop rows outside ``time_range = (start, end)``
    seconds, end exclusive; drop exact duplicates of (user, item, timestamp, behavior), keeping
    the first ("duplicate"); k-core filtering, repeated until every user has
    ``min_user_events`` and every item ``min_item_events`` ("k-core"); remap ids to
    ``0..n-1`` in sorted raw-id order (kept in ``user_ids`` / ``item_ids``; text ids stay
    text, so "007" and "7" are two ids); sort each user's events by time (stable: equal times
    keep row order). Every step is vectorised (numpy, Arrow for text ids).

    Args:
        users, items: [R] raw ids: integers, or text (numpy/Arrow strings).
        timestamps: [R] seconds since the epoch (UTC), integer or float (floored).
        latitude, longitude: [R] degrees, or None.
        behaviors: [R] behavior names or codes, with ``behavior_names`` listing the valid ones
            in code order (default: the sorted distinct values).
        report: a ``PreprocessReport`` with parse-time drops to extend (loaders pass theirs).

    Example::

        data = from_events(["a", "a", "b"], [7, 9, 7], [30, 10, 20], min_user_events=1)
        data.user_ids, data.item_ids, data.sequence(0).items   # (['a' 'b'], [7 9], [1 0])
    """
    user_index, user_ids = _encode(users)
    item_index, item_ids = _encode(items)
    timestamps = np.asarray(timestamps)
    rows = len(user_index)
    for name, column in (("items", item_index), ("timestamps", timestamps)):
        if len(column) != rows:
            raise ValueError(f"{name} has {len(column)} rows but users has {rows}")
    if report is None:
        report = PreprocessReport(source=source, rows=rows)
    keep = np.ones(rows, dtype=bool)
    if np.issubdtype(timestamps.dtype, np.floating):
        finite = np.isfinite(timestamps)
        report.drop("bad timestamp", np.count_nonzero(~finite))
        keep &= finite
        timestamps = np.floor(np.where(finite, timestamps, 0)).astype(np.int64)
    else:
        timestamps = _integer_array(timestamps, "timestamps")
    coordinates = None
    if (latitude is None) != (longitude is None):
        raise ValueError("give both latitude and longitude, or neither")
    if latitude is not None:
        coordinates = np.stack([np.asarray(latitude, np.float64),
                                np.asarray(longitude, np.float64)], axis=1)
        valid = _valid_coordinates(coordinates[:, 0], coordinates[:, 1])
        report.drop("bad coordinates", np.count_nonzero(~valid & keep))
        keep &= valid
    codes = None
    if behaviors is not None:
        value_index, values = _encode(behaviors)
        if len(value_index) != rows:
            raise ValueError(f"behaviors has {len(value_index)} rows but users has {rows}")
        if behavior_names is None:
            behavior_names = tuple(values[np.unique(value_index[keep])].tolist())
        lookup = {name: code for code, name in enumerate(behavior_names)}
        value_code = np.array([lookup.get(value, -1) for value in values.tolist()], np.int64)
        codes = value_code[value_index] if len(values) else np.zeros(rows, np.int64)
        report.drop("unknown behavior", np.count_nonzero((codes < 0) & keep))
        keep &= codes >= 0
    if time_range is not None:
        start, end = time_range
        inside = (timestamps >= start) & (timestamps < end)
        report.drop("outside time_range", np.count_nonzero(~inside & keep))
        keep &= inside

    index = np.nonzero(keep)[0]
    order = _user_time_order(user_index[index], timestamps[index])
    index = index[order]  # by user, then time, ties in row order
    user_index, item_index = user_index[index], item_index[index]
    if deduplicate:
        repeat = _repeats(user_index, timestamps[index], item_index,
                          codes[index] if codes is not None else None)
        report.drop("duplicate", np.count_nonzero(repeat))
        index, user_index, item_index = index[~repeat], user_index[~repeat], item_index[~repeat]

    while True:
        user_counts = np.bincount(user_index, minlength=len(user_ids))
        item_counts = np.bincount(item_index, minlength=len(item_ids))
        core = (user_counts[user_index] >= min_user_events) & (
            item_counts[item_index] >= min_item_events)
        if core.all():
            break
        report.drop("k-core", np.count_nonzero(~core))
        index, user_index, item_index = index[core], user_index[core], item_index[core]
    used_users, user_index = _compact(user_index, len(user_ids))  # keeps the order
    used_items, item_index = _compact(item_index, len(item_ids))
    lengths = np.bincount(user_index, minlength=len(used_users))
    report.users, report.items, report.events = len(used_users), len(used_items), len(index)
    (logger.warning if report.dropped else logger.info)("%s", report)
    return Interactions(
        np.concatenate([[0], np.cumsum(lengths)]), item_index, timestamps[index],
        num_items=len(used_items),
        coordinates=None if coordinates is None else coordinates[index],
        behaviors=None if codes is None else codes[index], behavior_names=behavior_names,
        user_ids=user_ids[used_users], item_ids=item_ids[used_items], report=report)
