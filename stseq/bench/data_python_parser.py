"""The Python parser of stseq 0.1 (``csv.reader`` and one ``int()`` per field, ids through
``np.unique`` of text): the peer of ``stseq bench --ops data``, kept here only, not in the
package's loaders. Copied unchanged from stseq 0.1 (commit c443612) but for the imports.
"""

import calendar
import csv
import logging
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from stseq.data.interactions import Interactions, PreprocessReport

logger = logging.getLogger("stseq.bench")


def _integer_array(values, name):
    array = np.asarray(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _valid_coordinates(latitude, longitude):
    with np.errstate(invalid="ignore"):
        return (np.isfinite(latitude) & np.isfinite(longitude) & (np.abs(latitude) <= 90)
                & (np.abs(longitude) <= 180))


def _ids(tokens):
    """Raw ids as int64 when every one is an integer, else as they came (e.g. str)."""
    if tokens.dtype.kind not in "OSU":
        return tokens
    try:
        return tokens.astype(np.int64)
    except (ValueError, TypeError, OverflowError):
        return tokens


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
    ``0..n-1`` in sorted raw-id order (kept in ``user_ids`` / ``item_ids``; text ids that are
    all integers become int64 and sort numerically); sort each user's
    events by time (stable: equal times keep row order).

    Args:
        users, items: [R] raw ids (any sortable dtype).
        timestamps: [R] seconds since the epoch (UTC), integer or float (floored).
        latitude, longitude: [R] degrees, or None.
        behaviors: [R] behavior names or codes, with ``behavior_names`` listing the valid ones
            in code order (default: the sorted distinct values).
        report: a ``PreprocessReport`` with parse-time drops to extend (loaders pass theirs).

    Example::

        data = from_events(["a", "a", "b"], [7, 9, 7], [30, 10, 20], min_user_events=1)
        data.user_ids, data.item_ids, data.sequence(0).items   # (['a' 'b'], [7 9], [1 0])
    """
    users, items = _ids(np.asarray(users)), _ids(np.asarray(items))
    timestamps = np.asarray(timestamps)
    rows = len(users)
    for name, column in (("items", items), ("timestamps", timestamps)):
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
        behaviors = np.asarray(behaviors)
        if behavior_names is None:
            behavior_names = tuple(np.unique(behaviors[keep]).tolist())
        lookup = {name: code for code, name in enumerate(behavior_names)}
        codes = np.array([lookup.get(value, -1) for value in behaviors.tolist()], dtype=np.int64)
        report.drop("unknown behavior", np.count_nonzero((codes < 0) & keep))
        keep &= codes >= 0
    if time_range is not None:
        start, end = time_range
        inside = (timestamps >= start) & (timestamps < end)
        report.drop("outside time_range", np.count_nonzero(~inside & keep))
        keep &= inside

    index = np.nonzero(keep)[0]
    user_ids, user_index = np.unique(users[index], return_inverse=True)
    item_ids, item_index = np.unique(items[index], return_inverse=True)
    time, code = timestamps[index], codes[index] if codes is not None else np.zeros(len(index), int)
    if deduplicate:
        order = np.lexsort((index, code, time, item_index, user_index))
        keys = np.stack([user_index, item_index, time, code])[:, order]
        repeat = np.zeros(len(order), dtype=bool)
        repeat[1:] = (keys[:, 1:] == keys[:, :-1]).all(axis=0)
        report.drop("duplicate", np.count_nonzero(repeat))
        unique = np.sort(order[~repeat])
        index, user_index, item_index = index[unique], user_index[unique], item_index[unique]

    while True:
        user_counts = np.bincount(user_index, minlength=len(user_ids))
        item_counts = np.bincount(item_index, minlength=len(item_ids))
        core = (user_counts[user_index] >= min_user_events) & (
            item_counts[item_index] >= min_item_events)
        if core.all():
            break
        report.drop("k-core", np.count_nonzero(~core))
        index, user_index, item_index = index[core], user_index[core], item_index[core]
    used_users, user_index = np.unique(user_index, return_inverse=True)
    used_items, item_index = np.unique(item_index, return_inverse=True)

    order = np.lexsort((timestamps[index], user_index))  # stable: ties keep row order
    index, user_index, item_index = index[order], user_index[order], item_index[order]
    lengths = np.bincount(user_index, minlength=len(used_users))
    report.users, report.items, report.events = len(used_users), len(used_items), len(index)
    (logger.warning if report.dropped else logger.info)("%s", report)
    return Interactions(
        np.concatenate([[0], np.cumsum(lengths)]), item_index, timestamps[index],
        num_items=len(used_items),
        coordinates=None if coordinates is None else coordinates[index],
        behaviors=None if codes is None else codes[index], behavior_names=behavior_names,
        user_ids=user_ids[used_users], item_ids=item_ids[used_items], report=report)


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
TAOBAO_BEHAVIORS = ("pv", "fav", "cart", "buy")
TIME_FORMATS = ("seconds", "milliseconds", "iso")
COLUMN_ROLES = ("user", "item", "timestamp", "latitude", "longitude", "behavior")


class _BadRow(Exception):
    """A row that cannot be parsed; ``args[0]`` is the reason counted in the report."""


# Field parsers ---------------------------------------------------------------------------------
def parse_seconds(text):
    """Seconds since the epoch from an integer or decimal string (fractions floored).

    Example::

        parse_seconds("881250949"), parse_seconds("1.5e9")   # (881250949, 1500000000)
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise _BadRow("bad timestamp") from None
    if not math.isfinite(value):
        raise _BadRow("bad timestamp")
    return math.floor(value)


def parse_iso8601(text):
    """Seconds since the epoch from ISO-8601 text; a trailing ``Z`` or an offset is honoured,
    a time without a zone is taken as UTC (never as local time).

    Example::

        parse_iso8601("2010-10-19T23:55:27Z")        # 1287532527
        parse_iso8601("2010-10-20T01:55:27+02:00")   # 1287532527
    """
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _BadRow("bad timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // timedelta(seconds=1)


def parse_twitter_time(text):
    """Seconds since the epoch from the Foursquare/Twitter form ``Tue Apr 03 18:00:09 +0000
    2012`` (English names regardless of the locale; the offset is honoured).

    Example::

        parse_twitter_time("Tue Apr 03 18:00:09 +0000 2012")   # 1333476009
    """
    try:
        _, month, day, clock, offset, year = text.split()
        hour, minute, second = (int(part) for part in clock.split(":"))
        sign = -1 if offset[0] == "-" else 1
        offset_seconds = sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60)
        utc = calendar.timegm((int(year), MONTHS[month], int(day), hour, minute, second))
    except (ValueError, KeyError, IndexError):
        raise _BadRow("bad timestamp") from None
    return utc - offset_seconds


def _float(text, reason):
    try:
        return float(text)
    except ValueError:
        raise _BadRow(reason) from None


def _time_parser(time_format):
    if time_format not in TIME_FORMATS:
        raise ValueError(f"time_format must be one of {TIME_FORMATS}, got {time_format!r}")
    if time_format == "iso":
        return parse_iso8601
    if time_format == "milliseconds":
        return lambda text: parse_seconds(text) // 1000
    return parse_seconds


# Row reading -----------------------------------------------------------------------------------
def _lines(path, delimiter, skip):
    """(line number, fields) of each non-blank line after the first ``skip`` lines."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if delimiter == ",":
            reader = csv.reader(handle)
            for fields in reader:
                if reader.line_num > skip and any(field.strip() for field in fields):
                    yield reader.line_num, fields
            return
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if number > skip and line.strip():
                yield number, line.split(delimiter)


def _read(path, parse, roles, *, delimiter, skip=0, width=None):
    """Parse every row with ``parse(fields) -> tuple`` (one value per role); rows with the wrong
    number of fields are "malformed row". Returns (columns dict, report)."""
    report = PreprocessReport(source=Path(path).name, rows=0)
    values = []
    for number, fields in _lines(path, delimiter, skip):
        report.rows += 1
        try:
            if width is not None and len(fields) != width:
                raise _BadRow("malformed row")
            values.append(parse(fields))
        except _BadRow as bad:
            report.drop(bad.args[0], 1, number)
    columns = list(zip(*values)) if values else [()] * len(roles)
    kinds = {"timestamp": np.int64, "latitude": np.float64, "longitude": np.float64}
    return {role: np.array(column, dtype=kinds.get(role, str))
            for role, column in zip(roles, columns)}, report


def _finish(columns, report, preprocess, **extra):
    return from_events(columns["user"], columns["item"], columns["timestamp"],
                       latitude=columns.get("latitude"), longitude=columns.get("longitude"),
                       behaviors=columns.get("behavior"), report=report, **extra, **preprocess)


def _header(path, delimiter):
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        line = handle.readline().rstrip("\r\n")
    return next(csv.reader([line])) if delimiter == "," else line.split(delimiter)


# Formats ---------------------------------------------------------------------------------------
def load_recbole(path, *, user_field="user_id", item_field="item_id", time_field="timestamp",
                 latitude_field=None, longitude_field=None, behavior_field=None, **preprocess):
    """RecBole atomic ``.inter`` file: tab-separated, header of ``name:type`` fields.

    Example::

        data = load_recbole(movielens_100k_path(), min_user_events=5)
    """
    header = [field.split(":")[0] for field in _header(path, "\t")]
    wanted = {"user": user_field, "item": item_field, "timestamp": time_field,
              "latitude": latitude_field, "longitude": longitude_field,
              "behavior": behavior_field}
    wanted = {role: name for role, name in wanted.items() if name is not None}
    missing = [name for name in wanted.values() if name not in header]
    if missing:
        raise ValueError(f"{path}: fields {missing} not in the header {header}; pass "
                         "user_field=, item_field=, time_field= to name them")
    index = {role: header.index(name) for role, name in wanted.items()}
    roles = tuple(index)

    def parse(fields):
        row = []
        for role in roles:
            text = fields[index[role]]
            if role == "timestamp":
                row.append(parse_seconds(text))
            elif role in ("latitude", "longitude"):
                row.append(_float(text, "bad coordinates"))
            else:
                row.append(text)
        return tuple(row)

    columns, report = _read(path, parse, roles, delimiter="\t", skip=1, width=len(header))
    return _finish(columns, report, preprocess)


def load_movielens(path, *, min_rating=None, **preprocess):
    """MovieLens ``ratings.dat`` (``user::movie::rating::timestamp``, ML-1M/10M) or
    ``ratings.csv`` (``userId,movieId,rating,timestamp`` with a header, ML-20M/25M/latest).
    With ``min_rating``, lower ratings are dropped ("below min_rating").

    Example::

        data = load_movielens("ml-1m/ratings.dat", min_rating=4)
    """
    delimiter = "," if Path(path).suffix.lower() == ".csv" else "::"
    first = _header(path, delimiter)
    skip = 0 if first and first[0].strip().isdigit() else 1

    def parse(fields):
        user, item, rating, stamp = fields
        if min_rating is not None and _float(rating, "bad rating") < min_rating:
            raise _BadRow("below min_rating")
        return user, item, parse_seconds(stamp)

    columns, report = _read(path, parse, ("user", "item", "timestamp"), delimiter=delimiter,
                            skip=skip, width=4)
    return _finish(columns, report, preprocess)


def load_snap_checkins(path, **preprocess):
    """SNAP check-ins (Gowalla, Brightkite ``loc-*_totalCheckins.txt``): tab-separated
    ``user, ISO-8601 UTC time, latitude, longitude, location id``; items are locations.

    Example::

        data = load_snap_checkins("loc-gowalla_totalCheckins.txt", min_item_events=10)
    """
    def parse(fields):
        user, stamp, latitude, longitude, location = fields
        return (user, location, parse_iso8601(stamp), _float(latitude, "bad coordinates"),
                _float(longitude, "bad coordinates"))

    roles = ("user", "item", "timestamp", "latitude", "longitude")
    columns, report = _read(path, parse, roles, delimiter="\t", width=5)
    return _finish(columns, report, preprocess)


def load_foursquare(path, **preprocess):
    """Foursquare TSMC2014 (``dataset_TSMC2014_NYC.txt`` / ``_TKY``): tab-separated ``user,
    venue, category id, category name, latitude, longitude, timezone offset (min), UTC time``
    with the time as ``Tue Apr 03 18:00:09 +0000 2012``; the CSV export with a header is read
    too. Items are venues; times stay UTC (the offset column is not applied).

    Example::

        data = load_foursquare("dataset_TSMC2014_NYC.txt")
    """
    delimiter = "," if Path(path).suffix.lower() == ".csv" else "\t"
    first = _header(path, delimiter)
    skip = 1 if first and first[0].strip().lower().startswith("user") else 0

    def parse(fields):
        user, venue, _, _, latitude, longitude, _, stamp = fields
        return (user, venue, parse_twitter_time(stamp), _float(latitude, "bad coordinates"),
                _float(longitude, "bad coordinates"))

    roles = ("user", "item", "timestamp", "latitude", "longitude")
    columns, report = _read(path, parse, roles, delimiter=delimiter, skip=skip, width=8)
    return _finish(columns, report, preprocess)


def load_taobao(path, **preprocess):
    """Taobao ``UserBehavior.csv``: ``user, item, category, behavior, timestamp``, no header;
    behaviors are pv, fav, cart, buy (codes 0..3). The published set covers 2017-11-25 to
    2017-12-03 (China time); pass ``time_range=(1511539200, 1512316800)`` to drop the stray rows.

    Example::

        data = load_taobao("UserBehavior.csv", min_user_events=5, min_item_events=5)
    """
    def parse(fields):
        user, item, _, behavior, stamp = fields
        return user, item, behavior, parse_seconds(stamp)

    columns, report = _read(path, parse, ("user", "item", "behavior", "timestamp"),
                            delimiter=",", width=5)
    return _finish(columns, report, preprocess, behavior_names=TAOBAO_BEHAVIORS)


def load_table(path, columns, *, delimiter=None, header=True, time_format="seconds",
               behavior_names=None, **preprocess):
    """A generic CSV/TSV or Parquet file with a column mapping.

    Args:
        columns: role -> column, roles ``user``, ``item``, ``timestamp`` (required),
            ``latitude``, ``longitude``, ``behavior`` (optional); columns are header names,
            or 0-based indices when ``header=False``.
        delimiter: field separator of text files (default: tab for ``.tsv``, else comma).
        time_format: ``"seconds"`` / ``"milliseconds"`` since the epoch, or ``"iso"``
            (ISO-8601; no zone means UTC). Parquet timestamp columns are converted directly.
        behavior_names: valid behavior values in code order (default: sorted distinct values).

    Parquet needs pyarrow (``pip install stseq[data]``).

    Example::

        data = load_table("events.csv", {"user": "uid", "item": "sku", "timestamp": "ts"},
                          time_format="milliseconds")
    """
    unknown = sorted(set(columns) - set(COLUMN_ROLES))
    missing = [role for role in ("user", "item", "timestamp") if role not in columns]
    if unknown or missing:
        raise ValueError(f"columns must map the roles {COLUMN_ROLES} (user, item, timestamp "
                         f"required); unknown {unknown}, missing {missing}")
    parse_time = _time_parser(time_format)
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        found, report = _read_parquet(path, columns, parse_time)
    else:
        delimiter = delimiter or ("\t" if Path(path).suffix.lower() == ".tsv" else ",")
        names = _header(path, delimiter) if header else None
        index = {role: _column_index(column, names, path) for role, column in columns.items()}
        roles, width = tuple(index), len(names) if names else None

        def parse(fields):
            if max(index.values()) >= len(fields):
                raise _BadRow("malformed row")
            row = []
            for role in roles:
                text = fields[index[role]]
                if role == "timestamp":
                    row.append(parse_time(text))
                elif role in ("latitude", "longitude"):
                    row.append(_float(text, "bad coordinates"))
                else:
                    row.append(text)
            return tuple(row)

        found, report = _read(path, parse, roles, delimiter=delimiter, skip=int(header),
                              width=width)
    return _finish(found, report, preprocess, behavior_names=behavior_names)


def _column_index(column, names, path):
    if names is None:
        if not isinstance(column, int):
            raise ValueError(f"with header=False, columns must be 0-based indices, got {column!r}")
        return column
    if column not in names:
        raise ValueError(f"{path}: column {column!r} not in the header {names}")
    return names.index(column)


def _read_parquet(path, columns, parse_time):
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise ImportError("reading Parquet needs pyarrow: pip install stseq[data]") from None
    table = parquet.read_table(path, columns=list(dict.fromkeys(columns.values())))
    report = PreprocessReport(source=Path(path).name, rows=table.num_rows)
    present = np.ones(table.num_rows, dtype=bool)
    for role in ("user", "item", "behavior"):
        if role in columns:
            present &= ~table.column(columns[role]).is_null().to_numpy(zero_copy_only=False)
    report.drop("missing value", np.count_nonzero(~present))
    found = {}
    for role, column in columns.items():
        data = table.column(column)
        if role == "timestamp":
            values = _parquet_seconds(data, parse_time)
        elif role in ("latitude", "longitude"):
            values = data.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            values = data.to_numpy(zero_copy_only=False)
        found[role] = values[present]
    return found, report


def _parquet_seconds(data, parse_time):
    """[R] seconds from an Arrow column: timestamp types by their unit (UTC-based storage), numbers
    and strings through ``parse_time``; nulls and unparsable values become NaN (dropped)."""
    import pyarrow as pa

    if pa.types.is_timestamp(data.type):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[data.type.unit]
        raw = data.cast(pa.int64()).to_numpy(zero_copy_only=False)
        return np.where(np.isnan(raw), np.nan, np.floor_divide(raw, per_second))
    seconds = []
    for value in data.to_pylist():
        try:
            seconds.append(np.nan if value is None else parse_time(str(value)))
        except _BadRow:
            seconds.append(np.nan)
    return np.array(seconds, dtype=np.float64)


LOADERS = {"recbole": load_recbole, "movielens": load_movielens, "snap": load_snap_checkins,
           "foursquare": load_foursquare, "taobao": load_taobao, "table": load_table}
