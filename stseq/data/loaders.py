"""Readers for the formats behaviour data usually comes in, all returning ``Interactions``.

Files are read by pyarrow's multi-threaded CSV and Parquet readers into Arrow columns, in blocks
(memory stays bounded by the block size plus the parsed columns), and every field is checked in
vectorised form (``stseq.data.columns``): rows that cannot be used are counted by reason with
the first line number where each reason occurs (the first reason of a row wins: a wrong number
of fields, then the fields in file order), never dropped silently. The rest goes to
:func:`stseq.data.from_events`, which drops invalid values, duplicates and sparse users/items
(k-core) and remaps ids. Keyword arguments of ``from_events`` (``min_user_events``,
``min_item_events``, ``deduplicate``, ``time_range``) pass through every reader.

Ids are text ("007" and "7" are two users) unless ``integer_ids=True`` (then a non-integer id
is a counted "bad id" row); text must be UTF-8 (other bytes are an error naming the line).
Times are parsed as UTC and never converted through the local time zone; numeric times in
seconds whose median lands after the year 2200 stop with an error that suggests milliseconds.

Text files are read line by line: a quoted comma-separated field may hold the delimiter but not
a line break.
"""

import contextlib
import csv
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from stseq.data import columns as parse
from stseq.data.columns import parse_iso8601, parse_twitter_time  # noqa: F401 (public here)
from stseq.data.interactions import PreprocessReport, from_events

TAOBAO_BEHAVIORS = ("pv", "fav", "cart", "buy")
TIME_FORMATS = ("seconds", "milliseconds", "iso")
COLUMN_ROLES = ("user", "item", "timestamp", "latitude", "longitude", "behavior")
BLOCK_BYTES = 1 << 26  # text read per block (64 MiB)
LATEST_PLAUSIBLE_SECONDS = 7258118400  # 2200-01-01: later medians are milliseconds read as s
RECBOLE_TEXT_TYPES = ("token", "token_seq")
RECBOLE_NUMBER_TYPES = ("float", "float_seq")


# Fields --------------------------------------------------------------------------------------
def _seconds_parser(time_format):
    """The vectorised parser of a ``time_format`` (text -> (seconds, bad))."""
    if time_format not in TIME_FORMATS:
        raise ValueError(f"time_format must be one of {TIME_FORMATS}, got {time_format!r}")
    if time_format == "iso":
        return parse.parse_iso_seconds
    if time_format == "milliseconds":
        return lambda text: parse.parse_seconds(text, per_second=1000)
    return parse.parse_seconds


class _Fields:
    """How one file's fields become columns: ``roles`` maps a role to (column index, kind);
    kinds are "id" (text, or int64 with ``integer_ids``), "text", a time parser, "coordinate"
    and "rating". Parsing a block returns the kept values and the drop masks, in order."""

    def __init__(self, roles, *, integer_ids=False, min_rating=None, empty=()):
        self.roles, self.integer_ids, self.min_rating = roles, integer_ids, min_rating
        self.empty = empty  # columns that must be empty (the gaps of a "::" delimiter)

    def parse(self, block):
        """(values per role, [(reason, bad mask)]) of a block {column index: StringArray}."""
        values, checks = {}, []
        if self.empty:
            bad = np.zeros(len(next(iter(block.values()))), dtype=bool)
            for column in self.empty:
                bad |= parse._numpy(pc.not_equal(block[column], ""), bool, True)
            checks.append(("malformed row", bad))
        for role, (column, kind) in self.roles.items():
            text = block[column]
            if kind == "id" and self.integer_ids:
                values[role], bad = parse.parse_integers(text)
                checks.append(("bad id", bad))
            elif kind in ("id", "text"):
                values[role] = text
            elif kind == "coordinate":
                values[role], bad = parse.parse_floats(text)
                checks.append(("bad coordinates", bad))
            elif kind == "rating":
                rating, bad = parse.parse_floats(text)
                checks.append(("bad rating", bad))
                if self.min_rating is not None:
                    with np.errstate(invalid="ignore"):
                        checks.append(("below min_rating", rating < self.min_rating))
            else:
                values[role], bad = kind(text)
                checks.append(("bad timestamp", bad))
        return values, checks


class _Drops:
    """Rows dropped while reading: per reason the count and the first row (a row's first
    reason wins), plus malformed rows the CSV reader skipped (whose lines are found later)."""

    def __init__(self):
        self.counts, self.first_rows, self.skipped_malformed = {}, {}, 0

    def apply(self, checks, offset, rows):
        keep = np.ones(rows, dtype=bool)
        for reason, bad in checks:
            fresh = bad & keep
            if fresh.any():
                self.counts[reason] = self.counts.get(reason, 0) + int(fresh.sum())
                first = offset + int(np.argmax(fresh))  # a reason may come from two fields
                self.first_rows[reason] = min(self.first_rows.get(reason, first), first)
                keep &= ~bad
        return keep

    def skip_row(self, row):
        """pyarrow's invalid_row_handler: blank lines pass silently, others are malformed."""
        if row.text.strip():
            self.skipped_malformed += 1
        return "skip"


# Text files ----------------------------------------------------------------------------------
def _blocks(path, *, delimiter, width, skip, quoted, wanted, drops):
    """Yield (first row, {column: StringArray}) per block of rows with ``width`` fields."""
    names = [f"f{index}" for index in range(width)]
    options = dict(
        read_options=pcsv.ReadOptions(column_names=names, skip_rows=skip,
                                      block_size=BLOCK_BYTES),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, quote_char='"' if quoted else False,
                                        invalid_row_handler=drops.skip_row),
        convert_options=pcsv.ConvertOptions(
            column_types={name: pa.string() for name in names},
            include_columns=[names[index] for index in wanted]))
    with _undecodable_rows_raise_later():
        try:
            reader = pcsv.open_csv(path, **options)
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error):
                return
            _raise_read_error(path, error)
        row = 0
        with reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as error:
                    _raise_read_error(path, error)
                yield row, {index: batch.column(names[index]) for index in wanted}
                row += batch.num_rows


def _raise_read_error(path, error):
    """A read failed: name the first line that is not UTF-8 (the usual cause), or say why."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise ValueError(f"{path}: line {number} is not valid UTF-8 text "
                                 f"({bad.reason} at byte {bad.start}); ids are text, so "
                                 "re-encode the file as UTF-8 (e.g. iconv -t UTF-8)") from None
    raise ValueError(f"{path}: cannot read it as delimited text: {error}") from None


@contextlib.contextmanager
def _undecodable_rows_raise_later():
    """pyarrow decodes a malformed row's text before calling the invalid-row handler; on bytes
    that are not UTF-8 that fails inside pyarrow, which prints it as an unraisable exception and
    stops the read with ArrowInvalid (then reported with its line). Keep the print out."""
    previous = sys.unraisablehook

    def hook(unraisable):
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _read_text(path, fields, *, delimiter, width, skip=0, quoted=False):
    """Read a delimited text file: (columns per role of the kept rows, PreprocessReport)."""
    drops = _Drops()
    wanted = sorted({column for column, _ in fields.roles.values()} | set(fields.empty))
    kept = {role: [] for role in fields.roles}
    rows = 0
    for offset, block in _blocks(path, delimiter=delimiter, width=width, skip=skip,
                                 quoted=quoted, wanted=wanted, drops=drops):
        count = len(block[wanted[0]])
        rows += count
        values, checks = fields.parse(block)
        keep = drops.apply(checks, offset, count)
        for role, value in values.items():
            if isinstance(value, np.ndarray):
                kept[role].append(value[keep])
            else:  # text: kept as a dictionary (codes + distinct values) per block
                kept[role].append(pc.dictionary_encode(value.filter(pa.array(keep))))
    report = PreprocessReport(source=Path(path).name, rows=rows + drops.skipped_malformed)
    lines = _locate(path, set(drops.first_rows.values()), drops.skipped_malformed > 0,
                    delimiter=delimiter, width=width, skip=skip, quoted=quoted)
    firsts = {reason: lines[row] for reason, row in drops.first_rows.items()}
    counts = dict(drops.counts)
    if drops.skipped_malformed:
        counts["malformed row"] = counts.get("malformed row", 0) + drops.skipped_malformed
        firsts["malformed row"] = min(lines["malformed"], firsts.get("malformed row", np.inf))
    for reason in sorted(counts, key=lambda reason: firsts[reason]):
        report.drop(reason, counts[reason], int(firsts[reason]))
    return {role: _join(parts) for role, parts in kept.items()}, report


def _join(parts):
    if parts and isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return pa.chunked_array(parts, pa.dictionary(pa.int32(), pa.string()))


def _locate(path, rows, find_malformed, *, delimiter, width, skip, quoted):
    """File line numbers (1-based) of the given rows (0-based, counting the rows the CSV reader
    returned), and under "malformed" the first line with a wrong number of fields; one pass in
    Python, only when something was dropped, stopping once everything is found."""
    found = {}
    if not rows and not find_malformed:
        return found
    row, last = -1, max(rows, default=-1)
    with open(path, encoding="utf-8", newline="" if quoted else None) as handle:
        if quoted:
            reader = csv.reader(handle, delimiter=delimiter)
            numbered = ((reader.line_num, fields) for fields in reader)
        else:
            numbered = ((number, line.rstrip("\r\n").split(delimiter))
                        for number, line in enumerate(handle, 1))
        for number, fields in numbered:
            if number <= skip or fields in ([], [""]):
                continue
            if len(fields) != width:
                if find_malformed and "malformed" not in found and "".join(fields).strip():
                    found["malformed"] = number
            else:
                row += 1
                if row in rows:
                    found[row] = number
            if row >= last and ("malformed" in found or not find_malformed):
                break
    return found


def _header(path, delimiter):
    """The fields of the first line."""
    with open(path, "rb") as handle:
        raw = handle.readline()
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as bad:
        raise ValueError(f"{path}: line 1 is not valid UTF-8 text ({bad.reason} at byte "
                         f"{bad.start}); re-encode the file as UTF-8") from None
    return next(csv.reader([line])) if delimiter == "," else line.split(delimiter)


def _finish(found, report, preprocess, *, time_format="seconds", **extra):
    if time_format != "iso":
        _check_seconds(found["timestamp"], time_format, report.source)
    return from_events(found["user"], found["item"], found["timestamp"],
                       latitude=found.get("latitude"), longitude=found.get("longitude"),
                       behaviors=found.get("behavior"), report=report, **extra, **preprocess)


def _check_seconds(seconds, time_format, source):
    """Stop when the times read as seconds land centuries in the future (milliseconds)."""
    if time_format == "seconds" and len(seconds):
        median = int(np.median(seconds))
        if median > LATEST_PLAUSIBLE_SECONDS:
            raise ValueError(
                f"{source}: the timestamps read as seconds land centuries in the future (median "
                f"{median}, after the year 2200): they look like milliseconds; pass "
                "time_format=\"milliseconds\" (on the command line --time-format milliseconds)")


def _check_roles(roles, time_format):
    unknown = sorted(set(roles) - set(COLUMN_ROLES))
    missing = [role for role in ("user", "item", "timestamp") if role not in roles]
    if unknown or missing:
        raise ValueError(f"columns must map the roles {COLUMN_ROLES} (user, item, timestamp "
                         f"required); unknown {unknown}, missing {missing}")
    _seconds_parser(time_format)


# Formats -------------------------------------------------------------------------------------
def load_recbole(path, *, user_field="user_id", item_field="item_id", time_field="timestamp",
                 latitude_field=None, longitude_field=None, behavior_field=None,
                 time_format="seconds", **preprocess):
    """RecBole atomic ``.inter`` file: tab-separated, header of ``name:type`` fields. The
    header types are honoured: ``token`` fields are text ids (a user or item field of type
    ``float`` holds integer ids), the time field must be ``float`` and coordinates ``float``.

    Example::

        data = load_recbole(movielens_100k_path(), min_user_events=5)
    """
    header = _header(path, "\t")
    names = [field.split(":")[0] for field in header]
    types = {field.split(":")[0]: field.partition(":")[2] or "token" for field in header}
    wanted = {"user": user_field, "item": item_field, "timestamp": time_field,
              "latitude": latitude_field, "longitude": longitude_field,
              "behavior": behavior_field}
    wanted = {role: name for role, name in wanted.items() if name is not None}
    missing = [name for name in wanted.values() if name not in names]
    if missing:
        raise ValueError(f"{path}: fields {missing} not in the header {names}; pass "
                         "user_field=, item_field=, time_field= to name them")
    for role, name in wanted.items():
        kind = types[name]
        allowed = RECBOLE_TEXT_TYPES + RECBOLE_NUMBER_TYPES if role in ("user", "item",
                                                                         "behavior") \
            else RECBOLE_NUMBER_TYPES
        if kind not in allowed:
            raise ValueError(f"{path}: field {name}:{kind} cannot be the {role} (types "
                             f"{', '.join(allowed)}); pass {role}_field= to name another")
    integer_ids = {types[wanted[role]] in RECBOLE_NUMBER_TYPES for role in ("user", "item")}
    if len(integer_ids) != 1:
        raise ValueError(f"{path}: the user and item fields must both be token or both be "
                         f"float, got {types[user_field]} and {types[item_field]}")
    kinds = {"timestamp": _seconds_parser(time_format), "latitude": "coordinate",
             "longitude": "coordinate", "behavior": "text"}
    roles = {role: (names.index(name), kinds.get(role, "id")) for role, name in wanted.items()}
    fields = _Fields(dict(sorted(roles.items(), key=lambda item: item[1][0])),
                     integer_ids=integer_ids.pop())
    found, report = _read_text(path, fields, delimiter="\t", width=len(names), skip=1)
    return _finish(found, report, preprocess, time_format=time_format)


def load_movielens(path, *, min_rating=None, integer_ids=False, **preprocess):
    """MovieLens ``ratings.dat`` (``user::movie::rating::timestamp``, ML-1M/10M) or
    ``ratings.csv`` (``userId,movieId,rating,timestamp`` with a header, ML-20M/25M/latest).
    With ``min_rating``, lower ratings are dropped ("below min_rating").

    Example::

        data = load_movielens("ml-1m/ratings.dat", min_rating=4)
    """
    if Path(path).suffix.lower() == ".csv":
        first = _header(path, ",")
        skip = 0 if first and first[0].strip().isdigit() else 1
        roles = {"user": (0, "id"), "item": (1, "id"), "rating": (2, "rating"),
                 "timestamp": (3, parse.parse_seconds)}
        fields = _Fields(roles, integer_ids=integer_ids, min_rating=min_rating)
        found, report = _read_text(path, fields, delimiter=",", width=4, skip=skip,
                                   quoted=True)
    else:  # "::" is read as ":" with empty fields between
        first = _header(path, ":")
        skip = 0 if first and first[0].strip().isdigit() else 1
        roles = {"user": (0, "id"), "item": (2, "id"), "rating": (4, "rating"),
                 "timestamp": (6, parse.parse_seconds)}
        fields = _Fields(roles, integer_ids=integer_ids, min_rating=min_rating,
                         empty=(1, 3, 5))
        found, report = _read_text(path, fields, delimiter=":", width=7, skip=skip)
    found.pop("rating", None)
    return _finish(found, report, preprocess)


def load_snap_checkins(path, *, integer_ids=False, **preprocess):
    """SNAP check-ins (Gowalla, Brightkite ``loc-*_totalCheckins.txt``): tab-separated
    ``user, ISO-8601 UTC time, latitude, longitude, location id``; items are locations.

    Example::

        data = load_snap_checkins("loc-gowalla_totalCheckins.txt", min_item_events=10)
    """
    roles = {"user": (0, "id"), "timestamp": (1, parse.parse_iso_seconds),
             "latitude": (2, "coordinate"), "longitude": (3, "coordinate"), "item": (4, "id")}
    found, report = _read_text(path, _Fields(roles, integer_ids=integer_ids), delimiter="\t",
                               width=5)
    return _finish(found, report, preprocess, time_format="iso")


def load_foursquare(path, *, integer_ids=False, **preprocess):
    """Foursquare TSMC2014 (``dataset_TSMC2014_NYC.txt`` / ``_TKY``): tab-separated ``user,
    venue, category id, category name, latitude, longitude, timezone offset (min), UTC time``
    with the time as ``Tue Apr 03 18:00:09 +0000 2012``; the CSV export with a header is read
    too. Items are venues; times stay UTC (the offset column is not applied).

    Example::

        data = load_foursquare("dataset_TSMC2014_NYC.txt")
    """
    quoted = Path(path).suffix.lower() == ".csv"
    delimiter = "," if quoted else "\t"
    first = _header(path, delimiter)
    skip = 1 if first and first[0].strip().lower().startswith("user") else 0
    roles = {"user": (0, "id"), "item": (1, "id"), "latitude": (4, "coordinate"),
             "longitude": (5, "coordinate"), "timestamp": (7, parse.parse_twitter_seconds)}
    found, report = _read_text(path, _Fields(roles, integer_ids=integer_ids),
                               delimiter=delimiter, width=8, skip=skip, quoted=quoted)
    return _finish(found, report, preprocess, time_format="iso")


def load_taobao(path, *, integer_ids=False, time_format="seconds", **preprocess):
    """Taobao ``UserBehavior.csv``: ``user, item, category, behavior, timestamp``, no header;
    behaviors are pv, fav, cart, buy (codes 0..3). The published set covers 2017-11-25 to
    2017-12-03 (China time); pass ``time_range=(1511539200, 1512316800)`` to drop the stray rows.
    Its ids are integers: ``integer_ids=True`` reads them as such (less memory).

    Example::

        data = load_taobao("UserBehavior.csv", min_user_events=5, min_item_events=5)
    """
    roles = {"user": (0, "id"), "item": (1, "id"), "behavior": (3, "text"),
             "timestamp": (4, _seconds_parser(time_format))}
    found, report = _read_text(path, _Fields(roles, integer_ids=integer_ids), delimiter=",",
                               width=5, quoted=True)
    return _finish(found, report, preprocess, time_format=time_format,
                   behavior_names=TAOBAO_BEHAVIORS)


def load_table(path, columns, *, delimiter=None, header=True, time_format="seconds",
               behavior_names=None, integer_ids=False, **preprocess):
    """A generic CSV/TSV or Parquet file with a column mapping.

    Args:
        columns: role -> column, roles ``user``, ``item``, ``timestamp`` (required),
            ``latitude``, ``longitude``, ``behavior`` (optional); columns are header names,
            or 0-based indices when ``header=False``.
        delimiter: field separator of text files (default: tab for ``.tsv``, else comma).
        time_format: ``"seconds"`` / ``"milliseconds"`` since the epoch, or ``"iso"``
            (ISO-8601; no zone means UTC). Parquet timestamp columns are converted directly.
        behavior_names: valid behavior values in code order (default: sorted distinct values).
        integer_ids: read text user and item ids as integers (Parquet integer columns are
            integers already).

    Every row must have as many fields as the header (or, without a header, as the first
    line); others are counted as "malformed row".

    Example::

        data = load_table("events.csv", {"user": "uid", "item": "sku", "timestamp": "ts"},
                          time_format="milliseconds")
    """
    _check_roles(columns, time_format)
    if Path(path).suffix.lower() in (".parquet", ".pq"):
        found, report = _read_parquet(path, columns, time_format, integer_ids)
    else:
        delimiter = delimiter or ("\t" if Path(path).suffix.lower() == ".tsv" else ",")
        if len(delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {delimiter!r}")
        names = _header(path, delimiter)
        index = {role: _column_index(column, names if header else None, path)
                 for role, column in columns.items()}
        kinds = {"timestamp": _seconds_parser(time_format), "latitude": "coordinate",
                 "longitude": "coordinate", "behavior": "text"}
        roles = {role: (column, kinds.get(role, "id")) for role, column in index.items()}
        fields = _Fields(dict(sorted(roles.items(), key=lambda item: item[1][0])),
                         integer_ids=integer_ids)
        width = len(names)
        if max(index.values()) >= width:
            raise ValueError(f"{path}: column {max(index.values())} is past the {width} "
                             "fields of the first line")
        found, report = _read_text(path, fields, delimiter=delimiter, width=width,
                                   skip=int(header), quoted=delimiter == ",")
    return _finish(found, report, preprocess, time_format=time_format,
                   behavior_names=behavior_names)


def _column_index(column, names, path):
    if names is None:
        if not isinstance(column, int) or isinstance(column, bool) or column < 0:
            raise ValueError(f"with header=False, columns must be 0-based indices, got {column!r}")
        return column
    if column not in names:
        raise ValueError(f"{path}: column {column!r} not in the header {names}")
    return names.index(column)


# Parquet -------------------------------------------------------------------------------------
def _read_parquet(path, columns, time_format, integer_ids):
    import pyarrow.parquet as parquet

    try:
        file = parquet.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    present = set(file.schema_arrow.names)
    missing = [column for column in columns.values() if column not in present]
    if missing:
        raise ValueError(f"{path}: columns {missing} not in the file's columns {sorted(present)}")
    drops, kept, rows = _Drops(), {role: [] for role in columns}, 0
    for batch in file.iter_batches(batch_size=1 << 20,
                                   columns=list(dict.fromkeys(columns.values()))):
        values, checks = {}, []
        missing_value = np.zeros(batch.num_rows, dtype=bool)
        for role in ("user", "item", "behavior"):
            if role in columns:
                missing_value |= parse._numpy(batch.column(columns[role]).is_null(), bool, True)
        checks.append(("missing value", missing_value))
        for role, column in columns.items():
            data = batch.column(column)
            if role == "timestamp":
                values[role], bad = _parquet_seconds(data, time_format)
                checks.append(("bad timestamp", bad))
            elif role in ("latitude", "longitude"):
                values[role], bad = _parquet_floats(data)
                checks.append(("bad coordinates", bad))
            elif pa.types.is_integer(data.type):
                values[role] = parse._numpy(data, np.int64, 0)
            elif role != "behavior" and integer_ids:
                values[role], bad = parse.parse_integers(pc.fill_null(data.cast(pa.string()),
                                                                      ""))
                checks.append(("bad id", bad))
            else:
                values[role] = pc.fill_null(data.cast(pa.string()), "")
        keep = drops.apply(checks, rows, batch.num_rows)
        rows += batch.num_rows
        for role, value in values.items():
            kept[role].append(value[keep] if isinstance(value, np.ndarray) else
                              pc.dictionary_encode(value.filter(pa.array(keep))))
    report = PreprocessReport(source=Path(path).name, rows=rows)
    for reason, count in drops.counts.items():
        report.drop(reason, count)
    return {role: _join(parts) for role, parts in kept.items()}, report


def _parquet_floats(data):
    if pa.types.is_string(data.type) or pa.types.is_large_string(data.type):
        return parse.parse_floats(data)
    values = parse._numpy(data.cast(pa.float64()), np.float64, np.nan)
    return values, ~np.isfinite(values)


def _parquet_seconds(data, time_format):
    """[R] seconds and bad mask from an Arrow column: timestamp types by their unit (UTC-based
    storage), integers and floats as ``time_format`` numbers, text through its parser."""
    if pa.types.is_timestamp(data.type):
        per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[data.type.unit]
        raw = data.cast(pa.int64())
        return (np.floor_divide(parse._numpy(raw, np.int64, 0), per_second),
                ~parse._numpy(raw.is_valid(), bool, False))
    if pa.types.is_integer(data.type):
        per_second = 1000 if time_format == "milliseconds" else 1
        return (np.floor_divide(parse._numpy(data.cast(pa.int64()), np.int64, 0), per_second),
                ~parse._numpy(data.is_valid(), bool, False))
    if pa.types.is_floating(data.type) or pa.types.is_decimal(data.type):
        data = data.cast(pa.string())
    if not (pa.types.is_string(data.type) or pa.types.is_large_string(data.type)):
        raise ValueError(f"the timestamp column has type {data.type}: it must hold times, "
                         "numbers or text")
    return _seconds_parser(time_format)(pc.fill_null(data, ""))


def movielens_100k_path():
    """Path of MovieLens-100K as shipped by the recbole 1.2.1 wheel
    (``recbole/dataset_example/ml-100k/ml-100k.inter``), found without importing recbole.
    Install it with ``pip install --no-deps recbole==1.2.1`` (its licence forbids copying the
    file into other projects, so stseq does not ship it).

    Example::

        data = load_recbole(movielens_100k_path())   # 943 users, 1682 items, 100000 events
    """
    try:
        distribution = importlib.metadata.distribution("recbole")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("MovieLens-100K comes with recbole: pip install --no-deps "
                                "recbole==1.2.1") from None
    for file in distribution.files or ():
        if str(file).replace("\\", "/").endswith("dataset_example/ml-100k/ml-100k.inter"):
            path = Path(distribution.locate_file(file))
            if path.exists():
                return path
    raise FileNotFoundError(f"recbole {distribution.version} is installed but does not ship "
                            "dataset_example/ml-100k/ml-100k.inter; install recbole==1.2.1")


# Format name -> reader, for command lines and configuration files.
LOADERS = {"recbole": load_recbole, "movielens": load_movielens, "snap": load_snap_checkins,
           "foursquare": load_foursquare, "taobao": load_taobao, "table": load_table}
