"""Vectorised parsing of text columns (Arrow string arrays, one value per row) into numbers,
and id columns into codes: what the loaders run on every row, with no Python per row.

Each parser returns ``(values, bad)``: ``values`` a numpy array (int64 seconds or float64) and
``bad`` [R] bool, True where the text is not a valid value (the loader counts those rows under
its reason). The rules follow Python's ``int()`` / ``float()``: surrounding whitespace is
allowed, decimals are floored to whole seconds, and a value that does not fit int64 seconds is
bad (never an overflow error).
"""

import calendar
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

INTEGER = r"^[+-]?[0-9]{1,18}$"  # at most 18 digits: always fits int64
DECIMAL = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
INT64_LIMIT = 2.0 ** 63
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
TWITTER_FORMAT = "%a %b %d %H:%M:%S %z %Y"
ISO_FORMATS = ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S",
               "%Y-%m-%d %H:%M:%S")


# One value in Python: the definitions the vectorised parsers agree with ---------------------
def parse_iso8601(text):
    """Seconds since the epoch from ISO-8601 text; a trailing ``Z`` or an offset is honoured,
    a time without a zone is taken as UTC (never as local time). ValueError when it is not a
    time.

    Example::

        parse_iso8601("2010-10-19T23:55:27Z")        # 1287532527
        parse_iso8601("2010-10-20T01:55:27+02:00")   # 1287532527
    """
    text = text.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return (moment - EPOCH) // timedelta(seconds=1)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range") from None


def parse_twitter_time(text):
    """Seconds since the epoch from the Foursquare/Twitter form ``Tue Apr 03 18:00:09 +0000
    2012`` (English names regardless of the locale; the offset is honoured). ValueError when it
    is not such a time.

    Example::

        parse_twitter_time("Tue Apr 03 18:00:09 +0000 2012")   # 1333476009
    """
    try:
        _, month, day, clock, offset, year = text.split()
        hour, minute, second = (int(part) for part in clock.split(":"))
        sign = -1 if offset[0] == "-" else 1
        offset_seconds = sign * (int(offset[1:3]) * 3600 + int(offset[3:5]) * 60)
        utc = calendar.timegm((int(year), MONTHS[month], int(day), hour, minute, second))
    except (ValueError, KeyError, IndexError, OverflowError):
        raise ValueError(f"{text!r} is not a time like 'Tue Apr 03 18:00:09 +0000 2012'") from None
    return utc - offset_seconds


# Vectorised ----------------------------------------------------------------------------------
def _numpy(array, dtype, fill):
    """An Arrow array with nulls -> numpy ``dtype`` with ``fill`` at the nulls."""
    return np.asarray(pc.fill_null(array, fill).to_numpy(zero_copy_only=False), dtype=dtype)


def _unsigned_plus(text):
    """Text trimmed of whitespace and of a leading "+" (which Arrow's casts refuse)."""
    return pc.replace_substring_regex(pc.utf8_trim_whitespace(text), r"^\+([0-9.])", r"\1")


def parse_floats(text):
    """[R] float64 and bad mask from decimal text ("1.5", " -2e3 "); anything else (including
    "nan" and "inf") is bad and NaN."""
    try:  # the common case: every value is a plain number
        values = _numpy(pc.cast(text, pa.float64()), np.float64, np.nan)
        return values, ~np.isfinite(values)
    except pa.ArrowInvalid:
        pass
    text = _unsigned_plus(text)
    good = pc.match_substring_regex(text, DECIMAL)
    values = _numpy(pc.cast(pc.if_else(good, text, None), pa.float64()), np.float64, np.nan)
    return values, ~(_numpy(good, bool, False) & np.isfinite(values))


def parse_integers(text):
    """[R] int64 and bad mask from integer text of at most 18 digits (" 42", "-7")."""
    text = _unsigned_plus(text)
    good = pc.match_substring_regex(text, INTEGER)
    values = _numpy(pc.cast(pc.if_else(good, text, None), pa.int64()), np.int64, 0)
    return values, ~_numpy(good, bool, False)


def parse_seconds(text, *, per_second=1):
    """[R] int64 seconds from integer or decimal text (decimals floored), divided by
    ``per_second`` (1000 for milliseconds, floored); values outside int64 are bad (0)."""
    try:  # the common case: every value is a decimal integer that fits int64 (no "0x")
        if pc.any(pc.match_substring(text, "x", ignore_case=True)).as_py():
            raise pa.ArrowInvalid("hexadecimal")
        values = _numpy(pc.cast(text, pa.int64()), np.int64, 0)
        bad = np.zeros(len(values), dtype=bool)
        return np.floor_divide(values, per_second) if per_second != 1 else values, bad
    except pa.ArrowInvalid:
        pass
    text = _unsigned_plus(text)
    integer = pc.match_substring_regex(text, INTEGER)
    whole = _numpy(pc.cast(pc.if_else(integer, text, None), pa.int64()), np.int64, 0)
    decimal, bad = parse_floats(pc.if_else(integer, "0", text))
    integer = _numpy(integer, bool, False)
    with np.errstate(invalid="ignore"):
        fits = ~bad & (decimal > -INT64_LIMIT) & (decimal < INT64_LIMIT)  # strict: rounding
    floored = np.floor(np.where(fits, decimal, 0.0)).astype(np.int64)
    values = np.where(integer, whole, floored)
    if per_second != 1:
        values = np.floor_divide(values, per_second)
    return values, ~(integer | fits)


def _parse_dates(text, formats, fallback):
    """Seconds from date text: Arrow's strptime for the common ``formats``, the Python
    ``fallback`` parser for what they miss (so the result is the fallback's on every row)."""
    seconds = pa.nulls(len(text), pa.int64())
    for format in formats:
        parsed = pc.strptime(text, format=format, unit="s", error_is_null=True)
        seconds = pc.coalesce(seconds, pc.cast(parsed, pa.int64()))
    values = _numpy(seconds, np.int64, 0)
    bad = ~_numpy(pc.is_valid(seconds), bool, False)
    for row in np.nonzero(bad)[0]:
        try:
            values[row] = fallback(text[int(row)].as_py())
            bad[row] = False
        except (ValueError, TypeError):
            pass
    return values, bad


def parse_iso_seconds(text):
    """[R] int64 seconds from ISO-8601 text (no zone means UTC), as ``parse_iso8601``."""
    return _parse_dates(pc.utf8_trim_whitespace(text), ISO_FORMATS, parse_iso8601)


def parse_twitter_seconds(text):
    """[R] int64 seconds from ``Tue Apr 03 18:00:09 +0000 2012`` text, as
    ``parse_twitter_time``."""
    return _parse_dates(text, (TWITTER_FORMAT,), parse_twitter_time)


def encode_ids(chunks):
    """Codes of ids: ``chunks`` (Arrow arrays of text or integers, plain or dictionary-encoded,
    one per block of rows) -> ([R] int64 codes into ``values``, [V] sorted distinct values as
    a numpy str or int64 array). Distinct texts stay distinct ("007" and "7"); text sorts by
    code point, as ``sorted``. Hashing, not sorting, of the R rows: O(R + V log V).

    Example::

        encode_ids([pa.array(["b", "a"]), pa.array(["b", "007", "7"])])
        # (array([3, 2, 3, 0, 1]), array(["007", "7", "a", "b"]))
    """
    encoded = [chunk if pa.types.is_dictionary(chunk.type) else pc.dictionary_encode(chunk)
               for chunk in chunks] or [pc.dictionary_encode(pa.array([], pa.string()))]
    dictionaries = pa.concat_arrays([chunk.dictionary for chunk in encoded])
    merged = pc.dictionary_encode(dictionaries)  # [sum of per-chunk distinct] -> global
    values = merged.dictionary
    order = np.asarray(pc.sort_indices(values))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    global_code = rank[merged.indices.to_numpy()]
    codes, start = [], 0
    for chunk in encoded:
        codes.append(global_code[start + chunk.indices.to_numpy().astype(np.int64)])
        start += len(chunk.dictionary)
    values = values.take(pa.array(order, pa.int64()))
    if pa.types.is_integer(values.type):
        return np.concatenate(codes), values.to_numpy().astype(np.int64)
    return np.concatenate(codes), np.array(values.to_pylist(), dtype=str)
