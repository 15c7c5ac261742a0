"""Taobao-shaped behaviour logs of any size, written in chunks to CSV or Parquet: the test sets
of the loaders, the binary cache and the batch pipeline at 10^7-10^8 events.

Shape (after Taobao's UserBehavior.csv): item popularity follows a power law (a truncated Zipf
law of exponent ``zipf``, ranks scattered over the item ids); user activity is heavy-tailed
(log-normal weights); each user's events come in sessions (bursts of events about a minute
apart, sessions hours to days apart) within ``days`` days from ``start``; inside a session a
user often returns to the session's first item; behaviors are pv, fav, cart, buy with Taobao's
rough mix. Timestamps are integer seconds. Rows are grouped by user and time-sorted within a
user, as in Taobao's file.

Columns: ``user, item, category, behavior, timestamp`` (Taobao's layout, readable by
``load_taobao`` when written without a header), plus ``latitude, longitude`` (degrees, each
item at a fixed place) with ``coordinates=True``. Memory stays bounded by ``chunk_events``: the
file is written chunk by chunk, to a temporary name first, then renamed into place.

Command line::

    python -m stseq.data.generate events.csv --events 10000000 --users 500000 --items 2000000
"""

import argparse
import os
from pathlib import Path

import numpy as np

BEHAVIORS = ("pv", "fav", "cart", "buy")
BEHAVIOR_MIX = (0.895, 0.03, 0.05, 0.025)  # Taobao's rough pv / fav / cart / buy shares
COLUMNS = ("user", "item", "category", "behavior", "timestamp")
TAOBAO_START = 1511539200  # 2017-11-25 00:00 China time (UTC+8), Taobao's first day
SESSION_START_PROBABILITY = 0.1  # a new session every ~10 events
SESSION_GAP_MEAN = 60.0  # seconds between events within a session
REVISIT_PROBABILITY = 0.3  # within a session, back to the session's first item
ITEMS_PER_CATEGORY = 300


def generate_log(path, *, events, users, items, seed=0, coordinates=False, header=False,
                 start=TAOBAO_START, days=9, zipf=1.0, chunk_events=2_000_000):
    """Write a Taobao-shaped log of ``events`` rows over ``users`` users and ``items`` items
    to ``path`` (``.parquet`` / ``.pq``: Parquet, anything else: CSV). Returns ``path``.

    Args:
        events, users, items: sizes (every user has at least one event when events >= users;
            items are drawn from ``items`` ids, the rarest may not appear).
        seed: the same seed and sizes give the same file.
        coordinates: add ``latitude``, ``longitude`` columns.
        header: write a header line to a CSV (Parquet always names its columns).
        start, days: events fall in ``[start, start + days * 86400)`` seconds.
        zipf: exponent of the item popularity power law (> 0).
        chunk_events: rows generated and written at a time (memory ~ 100 bytes per row).

    Example::

        generate_log("events.csv", events=10**6, users=50_000, items=200_000)
        data = stseq.data.load_taobao("events.csv")
    """
    for name, value in (("events", events), ("users", users), ("items", items),
                        ("days", days), ("chunk_events", chunk_events)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not zipf > 0:
        raise ValueError(f"zipf must be > 0, got {zipf!r}")
    import pyarrow as pa

    path = Path(path)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    rng = np.random.default_rng(seed)
    counts = _events_per_user(rng, events, users)  # [users]
    temporary = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    try:
        for first, last in _user_chunks(counts, chunk_events):
            table = pa.table(_chunk(rng, counts, first, last, items=items, start=start,
                                    days=days, zipf=zipf, coordinates=coordinates))
            if writer is None:
                writer = _writer(temporary, table.schema, parquet, header)
            writer.write_table(table)
        writer.close()
        os.replace(temporary, path)
    except BaseException:
        if writer is not None:
            writer.close()
        temporary.unlink(missing_ok=True)
        raise
    return path


def _writer(path, schema, parquet, header):
    if parquet:
        import pyarrow.parquet as pq

        return pq.ParquetWriter(path, schema, compression="snappy")
    import pyarrow as pa
    import pyarrow.csv as pcsv

    sink = pa.OSFile(str(path), "wb")
    if header:  # written by hand: pyarrow quotes header names
        sink.write((",".join(schema.names) + "\n").encode())
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    return _ClosingWriter(pcsv.CSVWriter(sink, schema, write_options=options), sink)


class _ClosingWriter:
    """A CSV writer that closes its file with it."""

    def __init__(self, writer, sink):
        self.writer, self.sink = writer, sink

    def write_table(self, table):
        self.writer.write_table(table)

    def close(self):
        self.writer.close()
        self.sink.close()


def _events_per_user(rng, events, users):
    """[users] int64 events of each user summing to ``events``: one each (when there are enough
    events), the rest spread in proportion to heavy-tailed activity weights."""
    base = 1 if events >= users else 0
    weights = rng.lognormal(mean=0.0, sigma=1.2, size=users)
    counts = rng.multinomial(events - base * users, weights / weights.sum()).astype(np.int64)
    return counts + base


def _user_chunks(counts, chunk_events):
    """(first user, end user) ranges of about ``chunk_events`` events each."""
    ends = np.cumsum(counts)
    first = 0
    while first < len(counts):
        last = int(np.searchsorted(ends, ends[first] - counts[first] + chunk_events, "right"))
        last = max(last, first + 1)
        yield first, last
        first = last


def _chunk(rng, counts, first, last, *, items, start, days, zipf, coordinates):
    """The columns of users ``[first, last)``: [R] arrays, rows grouped by user, time-sorted."""
    lengths = counts[first:last]
    n = int(lengths.sum())
    user = np.repeat(np.arange(first, last, dtype=np.int64), lengths)
    user_start = np.zeros(n, dtype=bool)
    user_start[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    session_start = user_start | (rng.random(n) < SESSION_START_PROBABILITY)
    session = np.cumsum(session_start) - 1  # [R] session index within the chunk
    sessions = int(session_start.sum())
    opening = rng.integers(start, start + days * 86400, size=sessions)  # [S] seconds
    gaps = np.where(session_start, 0.0, rng.exponential(SESSION_GAP_MEAN, size=n))
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[np.nonzero(session_start)[0]][session]  # seconds since session start
    time = np.minimum(opening[session] + elapsed.astype(np.int64), start + days * 86400 - 1)
    item = _popular_items(rng, n, items, zipf)
    revisit = ~session_start & (rng.random(n) < REVISIT_PROBABILITY)
    item = np.where(revisit, item[np.nonzero(session_start)[0]][session], item)
    behavior = rng.choice(len(BEHAVIORS), size=n, p=BEHAVIOR_MIX)
    order = np.lexsort((time, user))  # time-sorted within each user (sessions may interleave)
    columns = {"user": user + 1, "item": item + 1,
               "category": _scatter(item, max(1, items // ITEMS_PER_CATEGORY)) + 1,
               "behavior": np.asarray(BEHAVIORS)[behavior], "timestamp": time}
    if coordinates:  # each item at a fixed place in a 0.5 x 0.5 degree box (Hangzhou)
        columns["latitude"] = 30.0 + 0.5 * _fraction(item, 0.6180339887498949)
        columns["longitude"] = 120.0 + 0.5 * _fraction(item, 0.7548776662466927)
    return {name: values[order] for name, values in columns.items()}


def _popular_items(rng, n, items, zipf):
    """[n] item indices in [0, items) with P(rank r) ~ (r + 1)^-zipf (continuous inverse CDF),
    ranks scattered over the ids so that popular items are not the low ids."""
    u = rng.random(n)
    if abs(zipf - 1.0) < 1e-9:
        rank = np.exp(u * np.log(items + 1.0)) - 1.0
    else:
        power = 1.0 - zipf
        rank = (u * ((items + 1.0) ** power - 1.0) + 1.0) ** (1.0 / power) - 1.0
    return _scatter(np.minimum(rank.astype(np.int64), items - 1), items)


def _scatter(values, size):
    """A fixed bijection of [0, size) (multiplication by a unit modulo size)."""
    multiplier = 2654435761 % size or 1
    while np.gcd(multiplier, size) != 1:
        multiplier += 1
    return (values * multiplier) % size


def _fraction(values, step):
    return np.modf(values * step)[0]


def main(argv=None):
    """``python -m stseq.data.generate PATH --events N --users U --items I [--seed S]
    [--coordinates] [--header]``."""
    parser = argparse.ArgumentParser(prog="python -m stseq.data.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="output file: .csv (or any other name) or .parquet")
    parser.add_argument("--events", type=int, required=True, help="rows to write")
    parser.add_argument("--users", type=int, required=True, help="number of users")
    parser.add_argument("--items", type=int, required=True, help="number of items")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--coordinates", action="store_true", help="add latitude, longitude")
    parser.add_argument("--header", action="store_true", help="write a CSV header line")
    parser.add_argument("--days", type=int, default=9, help="days covered (default 9)")
    parser.add_argument("--zipf", type=float, default=1.0, help="item popularity exponent")
    args = parser.parse_args(argv)
    try:
        path = generate_log(args.path, events=args.events, users=args.users, items=args.items,
                            seed=args.seed, coordinates=args.coordinates, header=args.header,
                            days=args.days, zipf=args.zipf)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {args.events} events to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
