"""Batches of event windows for sequential recommenders: padded ``[B, L]`` tensors (``Batch``)
or jagged values + offsets (``JaggedBatch``), with per-event time gaps and distances.

A row is a window of one user's events ``[start, end)``; the event after it (at ``end``) is
what the row predicts. Training rows also carry the next item at every position (teacher
forcing); evaluation rows do not carry the target item at all.
"""

import queue
import threading
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from stseq.data.splits import Targets, ranges
from stseq.reference.time_gap import haversine_km


@dataclass(frozen=True)
class Batch:
    """Padded windows (B rows, L positions; position p of row b is an event iff
    p < lengths[b]).

    Fields:
        users: [B] int64 user indices.
        items: [B, L] int64 item ids, ``pad_item`` (= num_items) at padding, so an
            ``nn.Embedding(num_items + 1, D, padding_idx=num_items)`` reads it directly.
        timestamps: [B, L] int64 seconds; padding repeats the row's last event time (the
            query time in a row without events).
        lengths: [B] int64 events per row (>= 1 except for users with no history).
        time_gaps: [B, L] int64 seconds since the user's previous event (0 for the user's
            first event and at padding).
        next_timestamps: [B, L] int64 time of the event after each position; at the last
            event (and padding) it is the query time, the moment the prediction is asked for.
        positions: [B] int64 index, in the user's whole sequence, of the event the row
            predicts (the one after its last event).
        coordinates: [B, L, 2] float32 (latitude, longitude) degrees, padding repeats the last;
            or None.
        distances: [B, L] float32 km from the user's previous event (0 for the first and at
            padding); or None.
        behaviors: [B, L] int64 behavior codes (0 at padding); or None.
        next_items: [B, L] int64 item of the next event at each position, ``pad_item`` at
            padding and at the positions an overlapping window leaves to the window before it
            (``training_batches(stride=...)``): the targets are where it is not ``pad_item``
            (training batches only; None in evaluation batches).
        pad_item: the padding item id.

    Example::

        for batch in training_batches(split.train, batch_size=128, max_length=50):
            hidden = model(batch.items, batch.timestamps, batch.lengths)     # [B, L, D]
            logits = hidden @ item_embeddings.T                            # [B, L, num_items]
            mask = batch.next_items != batch.pad_item
            loss = F.cross_entropy(logits[mask], batch.next_items[mask])
    """

    users: torch.Tensor
    items: torch.Tensor
    timestamps: torch.Tensor
    lengths: torch.Tensor
    time_gaps: torch.Tensor
    next_timestamps: torch.Tensor
    positions: torch.Tensor
    coordinates: torch.Tensor | None
    distances: torch.Tensor | None
    behaviors: torch.Tensor | None
    next_items: torch.Tensor | None
    pad_item: int

    def to(self, device, non_blocking=False):
        """The batch with every tensor on ``device`` (``non_blocking``: asynchronous copies
        from pinned memory)."""
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    def pin_memory(self):
        """The batch with every tensor in page-locked memory (fast, asynchronous copies to a
        GPU)."""
        return replace(self, **{f.name: getattr(self, f.name).pin_memory() for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    @property
    def last_items(self):
        """[B] item of each row's last event (``pad_item`` for an empty row)."""
        return self.items.gather(1, (self.lengths - 1).clamp(min=0)[:, None])[:, 0]

    @property
    def query_times(self):
        """[B] int64 time at which each row's prediction is asked for."""
        return self.next_timestamps.gather(1, (self.lengths - 1).clamp(min=0)[:, None])[:, 0]

    def to_jagged(self):
        """The same events as a ``JaggedBatch`` (values of all rows concatenated)."""
        mask = torch.arange(self.items.shape[1], device=self.items.device) < self.lengths[:, None]
        offsets = torch.zeros(len(self.lengths) + 1, dtype=torch.int64, device=self.items.device)
        offsets[1:] = torch.cumsum(self.lengths, 0)

        def flat(value):
            return None if value is None else value[mask]

        return JaggedBatch(
            users=self.users, offsets=offsets, items=flat(self.items),
            timestamps=flat(self.timestamps), time_gaps=flat(self.time_gaps),
            next_timestamps=flat(self.next_timestamps), positions=self.positions,
            query_times=self.query_times, coordinates=flat(self.coordinates),
            distances=flat(self.distances), behaviors=flat(self.behaviors),
            next_items=flat(self.next_items), max_length=int(self.items.shape[1]),
            pad_item=self.pad_item)


@dataclass(frozen=True)
class JaggedBatch:
    """A batch as jagged values (the layout of the jagged attention op): row b's events are
    ``[offsets[b], offsets[b + 1])`` of every [T] / [T, 2] field, T = sum of lengths.

    Fields as in ``Batch`` without padding, plus ``offsets`` [B + 1] int64, ``query_times``
    [B] and ``max_length`` (L of the padded batch it came from).

    Example::

        jagged = batch.to_jagged()
        jagged.items[jagged.offsets[1]:jagged.offsets[2]]   # row 1's items
    """

    users: torch.Tensor
    offsets: torch.Tensor
    items: torch.Tensor
    timestamps: torch.Tensor
    time_gaps: torch.Tensor
    next_timestamps: torch.Tensor
    positions: torch.Tensor
    query_times: torch.Tensor
    coordinates: torch.Tensor | None
    distances: torch.Tensor | None
    behaviors: torch.Tensor | None
    next_items: torch.Tensor | None
    max_length: int
    pad_item: int


def make_batch(interactions, users, starts, ends, query_times, *, with_next_items=False,
               length=None):
    """Build a ``Batch`` of the windows ``[starts[b], ends[b])`` of ``users[b]``'s events
    (indices within each user's sequence), predicting the event at ``ends[b]`` asked for at
    ``query_times[b]``; padded to ``length`` (default: the longest row).

    Example::

        batch = make_batch(data, users=[0], starts=[0], ends=[3], query_times=[1_700_000_000])
    """
    users, starts, ends, query_times = _check_windows(interactions, users, starts, ends,
                                                      query_times, with_next_items)
    return _gather(interactions, users, starts, ends, query_times,
                   with_next_items=with_next_items, length=length)


def _check_windows(interactions, users, starts, ends, query_times, with_next_items):
    """The window arrays as int64 [B], checked against ``interactions``."""
    users, starts, ends, query_times = (np.asarray(a, dtype=np.int64).reshape(-1)
                                        for a in (users, starts, ends, query_times))
    if interactions.num_events == 0:
        raise ValueError("interactions has no events to batch")
    if not len(users) == len(starts) == len(ends) == len(query_times):
        raise ValueError("users, starts, ends and query_times must have one entry per row")
    if ((users < 0) | (users >= interactions.num_users)).any():
        row = int(np.nonzero((users < 0) | (users >= interactions.num_users))[0][0])
        raise ValueError(f"users must be in [0, {interactions.num_users}); row {row} has "
                         f"{users[row]}")
    limit = interactions.lengths[users] - (1 if with_next_items else 0)
    bad = (starts < 0) | (starts > ends) | (ends > limit)
    if bad.any():
        row = int(np.nonzero(bad)[0][0])
        bound = "events - 1 (the next item must exist)" if with_next_items else "events"
        raise ValueError(f"windows need 0 <= start <= end <= {bound}; row {row} has start "
                         f"{starts[row]}, end {ends[row]} for a user with "
                         f"{interactions.lengths[users[row]]} events")
    return users, starts, ends, query_times


def _gather(interactions, users, starts, ends, query_times, *, with_next_items, length):
    """``make_batch`` without the checks: one vectorised gather of the padded windows."""
    lengths = ends - starts
    width = max(int(lengths.max(initial=0)), 1) if length is None else length
    if lengths.max(initial=0) > width:
        raise ValueError(f"length={width} is shorter than the longest window ({lengths.max()})")
    step = np.arange(width)
    valid = step < lengths[:, None]  # [B, L]
    nonempty = lengths[:, None] > 0  # [B, 1]
    within = starts[:, None] + np.minimum(step, np.maximum(lengths - 1, 0)[:, None])  # [B, L]
    index = np.minimum(interactions.offsets[users][:, None] + within, interactions.num_events - 1)
    has_previous = valid & (within > 0)
    previous = np.maximum(index - 1, 0)
    after = np.minimum(index + 1, interactions.num_events - 1)
    pad = interactions.num_items
    stamps = interactions.timestamps

    items = np.where(valid, interactions.items[index], pad)
    times = np.where(nonempty, stamps[index], query_times[:, None])
    gaps = np.where(has_previous, times - stamps[previous], 0)
    following = np.where(step < lengths[:, None] - 1, stamps[after], query_times[:, None])
    coordinates = distances = behaviors = next_items = None
    if interactions.coordinates is not None:
        here = np.where(nonempty[..., None], interactions.coordinates[index], 0.0)  # [B, L, 2]
        there = interactions.coordinates[previous]
        km = haversine_km(*(torch.from_numpy(x) for x in (there[..., 0], there[..., 1],
                                                            here[..., 0], here[..., 1])))
        distances = torch.where(torch.from_numpy(has_previous), km, 0.0).float()
        coordinates = torch.from_numpy(here).float()
    if interactions.behaviors is not None:
        behaviors = torch.from_numpy(np.where(valid, interactions.behaviors[index], 0))
    if with_next_items:
        next_items = torch.from_numpy(np.where(valid, interactions.items[after], pad))
    return Batch(users=torch.from_numpy(users), items=torch.from_numpy(items),
                 timestamps=torch.from_numpy(times), lengths=torch.from_numpy(lengths),
                 time_gaps=torch.from_numpy(gaps), next_timestamps=torch.from_numpy(following),
                 positions=torch.from_numpy(ends), coordinates=coordinates, distances=distances,
                 behaviors=behaviors, next_items=next_items, pad_item=pad)


class ItemScores:
    """Scores of ``num_rows`` rows over ``num_items`` items, by item chunks.

    Args:
        chunk: ``(start, end) -> [B, end - start]`` float scores of items start..end-1.
        at: ``items [B, R] (int64, in range) -> [B, R]`` scores of those items, as ``chunk``
            computes them.
        num_rows, num_items: B and N.
        device: where the scores live.

    Example::

        scores = torch.randn(4, 1000)
        item_scores = ItemScores(lambda s, e: scores[:, s:e],
                                 lambda items: scores.gather(1, items), 4, 1000)
        values, items = stseq.eval.ranking.chunked_topk(item_scores, 10, chunk_size=128)
    """

    def __init__(self, chunk, at, num_rows, num_items, device=torch.device("cpu")):
        self.chunk, self.at = chunk, at
        self.num_rows, self.num_items, self.device = num_rows, num_items, torch.device(device)


class DenseItemScores(ItemScores):
    """``ItemScores`` over a materialised [B, N] score tensor (e.g. a baseline's scores)."""

    def __init__(self, scores):
        super().__init__(lambda start, end: scores[:, start:end],
                         lambda items: scores.gather(1, items), *scores.shape, scores.device)


def score_batch(score, batch, num_items):
    """Call a scoring function (``Batch -> [B, num_items]``) under ``torch.no_grad`` and check
    its answer: a [B, num_items] tensor without NaN (integer scores become float64).

    Example::

        scores = score_batch(stseq.eval.MostPopular(train), batch, train.num_items)
    """
    with torch.no_grad():
        scores = score(batch)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(batch.users), num_items):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"the score function must return a [B, num_items] = "
                         f"[{len(batch.users)}, {num_items}] tensor, got {shape}")
    if not scores.is_floating_point():
        return scores.double()
    if torch.isnan(scores).any():
        row = int(torch.nonzero(torch.isnan(scores))[0, 0])
        raise ValueError(f"the score function returned NaN for row {row} (user "
                         f"{int(batch.users[row])})")
    return scores


def _untrain_before(batch, first):
    """``batch`` with ``next_items = pad_item`` at the positions before ``first[b]`` of each
    row (positions trained by an earlier, overlapping window)."""
    step = torch.arange(batch.items.shape[1])
    earlier = step < torch.from_numpy(first)[:, None]
    return replace(batch, next_items=batch.next_items.masked_fill(earlier, batch.pad_item))


class Batches:
    """An iterable of ``Batch`` es over windows, with ``len()`` = batches of the next pass.

    With ``shuffle``, every pass draws a new order from a generator seeded once with
    ``seed`` (so epoch e's order is reproducible). ``trained_from`` ([rows] int64 or None):
    the first event index of each row that carries a target (earlier positions get
    ``next_items = pad_item``). ``redraw`` (or None: the same windows every pass): a function
    of the pass index (0, 1, ...) giving that pass's ``(users, starts, ends, query_times,
    trained_from)``; ``passes`` counts the passes started (set it to resume a run). Built by
    ``training_batches`` and ``evaluation_batches``.
    """

    def __init__(self, interactions, users, starts, ends, query_times, *, batch_size,
                 with_next_items, shuffle=False, seed=0, drop_last=False, length=None,
                 trained_from=None, redraw=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.interactions = interactions
        self.batch_size, self.with_next_items = batch_size, with_next_items
        self.shuffle, self.drop_last, self.length = shuffle, drop_last, length
        self._set_windows(users, starts, ends, query_times, trained_from)
        self.redraw, self.passes, self._drawn = redraw, 0, 0
        self._rng = np.random.default_rng(seed)

    def _set_windows(self, users, starts, ends, query_times, trained_from):
        self.users, self.starts, self.ends, self.query_times = _check_windows(
            self.interactions, users, starts, ends, query_times, self.with_next_items) \
            if len(users) else (users, starts, ends, query_times)
        self.trained_from = trained_from

    def _windows_of_next_pass(self):
        if self.redraw is not None and self._drawn != self.passes:
            self._set_windows(*self.redraw(self.passes))
            self._drawn = self.passes

    def _batch_count(self, rows):
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __len__(self):
        self._windows_of_next_pass()
        return self._batch_count(len(self.users))

    def __iter__(self):
        self._windows_of_next_pass()
        self.passes += 1
        users, starts, ends = self.users, self.starts, self.ends
        query_times, trained_from = self.query_times, self.trained_from
        count = len(users)
        order = self._rng.permutation(count) if self.shuffle else np.arange(count)
        for batch in range(self._batch_count(count)):
            rows = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            batch = _gather(self.interactions, users[rows], starts[rows], ends[rows],
                            query_times[rows], with_next_items=self.with_next_items,
                            length=self.length)
            if trained_from is not None:
                batch = _untrain_before(batch, trained_from[rows] - starts[rows])
            yield batch


WINDOW_PHASES = ("end", "random")


def _training_windows(interactions, max_length, stride, phase):
    """(users, starts, ends, query_times, trained_from) of ``training_batches`` whose window
    ends are ``phase`` [U] events before each user's last transition (see there)."""
    transitions = np.maximum(interactions.lengths - 1, 0)  # [U]
    phase = np.minimum(phase, transitions)
    body = transitions - phase  # transitions [0, body) go to windows ending stride apart
    windows = -(-body // stride)  # [U]
    users = np.repeat(np.arange(interactions.num_users), windows)
    back = ranges(np.zeros_like(windows), windows)  # window index from the end
    ends = body[users] - back * stride
    trained_from = np.maximum(ends - stride, 0) if stride < max_length else None
    tail = np.flatnonzero(phase > 0)  # the last phase_u transitions: one window, full history
    if len(tail):
        users = np.concatenate([users, tail])
        trained_from = np.concatenate([np.maximum(ends - max_length, 0) if trained_from is None
                                       else trained_from, body[tail]])
        ends = np.concatenate([ends, transitions[tail]])
    starts = np.maximum(ends - max_length, 0)
    query = interactions.timestamps[interactions.offsets[users] + ends]
    return users, starts, ends, query, trained_from


def training_batches(interactions, *, batch_size=128, max_length=50, stride=None,
                     window_phase="end", shuffle=True, seed=0, drop_last=False,
                     pad_to_max_length=False):
    """Teacher-forcing batches covering every transition of ``interactions`` exactly once per
    pass.

    Each user's sequence is cut, from its end backwards, into windows of at most
    ``max_length`` input events whose ends are ``stride`` events apart (default
    ``stride = max_length``: windows that do not overlap); a window of events ``[s, e)`` has
    ``next_items`` = the items of events ``[s + 1, e + 1)``. With ``stride < max_length`` the
    windows overlap and only the last ``stride`` positions of a window carry a target (the
    others, trained by the window before it, have ``next_items = pad_item``), except in the
    user's first window, which trains all its positions: every transition is still trained
    once, from a history of at least ``max_length - stride + 1`` events (or all the user's
    earlier events, when there are fewer), closer to the evaluation targets, which see
    ``max_length``; an epoch then costs about ``max_length / stride`` times as much. Users with
    fewer than two events give no window. Pads to the longest row of each batch, or to
    ``max_length`` with ``pad_to_max_length`` (static shapes).

    ``window_phase``: ``"end"`` (the default) ends the windows at each user's last transition,
    the same windows every pass; ``"random"`` draws, for every pass and user, a shift of
    0..stride-1 events (from ``seed`` and the pass index: reproducible, the same on every DDP
    rank), ends the windows that much earlier, and trains the user's last, shifted-out
    transitions in one more window with its full history. Every transition is still trained
    once per pass, but the model sees other cuts of each sequence every epoch instead of
    memorising one (an attention model fits fixed windows: on MovieLens-100K it lifted
    SASRec's test NDCG@10 by about a tenth, benchmarks/results/models/sasrec-ablations.md);
    the extra window per user costs about one more batch per ``batch_size`` users. ``len()``
    is the next pass's batch count, which varies by a few batches from pass to pass.

    Example::

        batches = training_batches(split.train, batch_size=128, max_length=50, seed=0)
        for epoch in range(3):
            for batch in batches:      # a new shuffled order each epoch
                ...
        overlapping = training_batches(split.train, max_length=50, stride=10)  # >= 41 events
        shifting = training_batches(split.train, window_phase="random")  # new cuts each pass
    """
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
            or max_length < 1:
        raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
    if stride is None:
        stride = max_length
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) \
            or not 1 <= stride <= max_length:
        raise ValueError(f"stride must be an integer in [1, max_length={max_length}] or None, "
                         f"got {stride!r}")
    if window_phase not in WINDOW_PHASES:
        raise ValueError(f"window_phase must be one of {WINDOW_PHASES}, got {window_phase!r}")
    users = interactions.num_users

    def redraw(index):
        phase = np.random.default_rng([seed, index]).integers(0, stride, users)
        return _training_windows(interactions, max_length, stride, phase)

    windows = _training_windows(interactions, max_length, stride, np.zeros(users, np.int64)) \
        if window_phase == "end" else redraw(0)
    return Batches(interactions, *windows[:4], batch_size=batch_size, with_next_items=True,
                   shuffle=shuffle, seed=seed, drop_last=drop_last,
                   length=max_length if pad_to_max_length else None, trained_from=windows[4],
                   redraw=redraw if window_phase == "random" else None)


def evaluation_batches(interactions, targets, *, batch_size=256, max_length=50,
                       pad_to_max_length=False):
    """Batches of the histories of ``targets`` (in order): row t holds the last
    ``max_length`` events before ``targets.positions[t]`` and its query time; the relevant
    items are not in the batch.

    Example::

        for batch in evaluation_batches(split.interactions, split.test, max_length=50):
            scores = model.score(batch)   # [B, num_items]
    """
    if not isinstance(targets, Targets):
        raise ValueError(f"targets must be stseq.data.Targets, got {type(targets).__name__}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    starts = np.maximum(targets.positions - max_length, 0)
    return Batches(interactions, targets.users, starts, targets.positions, targets.query_times,
                   batch_size=batch_size, with_next_items=False,
                   length=max_length if pad_to_max_length else None)


class Prefetched:
    """``batches`` (any iterable of ``Batch`` with ``len``) built ``depth`` batches ahead in a
    background thread, so that the model does not wait for them; with ``pin_memory`` each batch
    is put in page-locked memory there too (for ``batch.to("cuda", non_blocking=True)``). The
    order is the order of ``batches``: the same batches, the same random state afterwards.

    Building a batch is a vectorised gather (numpy releases the GIL in it), so the thread
    overlaps it with the model's step. Stopping early (``break``) stops the thread; an error in
    it is raised in the loop.

    Example::

        for batch in Prefetched(training_batches(split.train), pin_memory=True):
            batch = batch.to("cuda", non_blocking=True)
    """

    def __init__(self, batches, *, depth=2, pin_memory=False):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        if pin_memory and not torch.cuda.is_available():
            raise ValueError("pin_memory=True needs CUDA (page-locked memory is for copies to a "
                             "GPU); pass pin_memory=False on a CPU-only machine")
        self.batches, self.depth, self.pin_memory = batches, depth, pin_memory

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        ready, stop = queue.Queue(maxsize=self.depth), threading.Event()
        done = object()

        def put(item):
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for batch in self.batches:
                    if not put(batch.pin_memory() if self.pin_memory else batch):
                        return
                put(done)
            except BaseException as error:  # handed to the loop, raised there
                put(error)

        worker = threading.Thread(target=produce, name="stseq-batches", daemon=True)
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join()
