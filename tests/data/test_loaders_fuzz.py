"""Fuzz the loaders (issue 16 item 7): files of every format, written here from known rows, with
some rows mutated (bad fields, huge numbers, wrong field counts) and some files broken whole
(bytes that are not UTF-8, empty, missing columns). Each outcome is either the load the known
rows call for (the events of the untouched rows, every mutated row counted under its reason
with the first line) -- "match" -- or a ValueError naming the file -- "named-error". Nothing
else may escape.
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzzing import record
from hypothesis import given
from hypothesis import strategies as st

from stseq.data import from_events, load_recbole, load_movielens, load_table, load_taobao

OP = "loaders"
BAD_TIMESTAMPS = ["1e300", "-1e300", "9223372036854775808", "-9223372036854775809",
                  "99999999999999999999999", "nan", "inf", "-inf", "", "abc", "1.5.5", "0x10",
                  "+-1", "1e", "\u0661\u0662"]
BAD_COORDINATES = ["", "abc", "nan", "inf", "1e400", "--1"]
OUT_OF_RANGE_COORDINATES = ["95", "-91", "1e300"]
# Ids are any text without the delimiters, quotes or line breaks; "007" and "7" are two ids.
ID = st.one_of(st.sampled_from(["007", "7", "07", "A", "a", "é", " x", "1.0", "NA", "null"]),
               st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                                     blacklist_characters=',:\t"\r\n\x0b\x0c\x1c\x1d\x1e'
                                                          '\x85\u2028\u2029'),
                       min_size=1, max_size=6))
TIME = st.one_of(st.integers(0, 4_000_000_000).map(str),
                 st.tuples(st.integers(0, 4_000_000_000), st.integers(0, 9)).map(
                     lambda pair: f"{pair[0]}.{pair[1]}"))


@st.composite
def rows(draw, coordinates=False):
    """Known rows ([user, item, time(, lat, lon)] text) and per row None or a mutation
    (reason, field index, new text)."""
    count = draw(st.integers(1, 12))
    out, mutations = [], []
    for _ in range(count):
        row = [draw(ID), draw(ID), draw(TIME)]
        if coordinates:
            row += [repr(draw(st.floats(-90, 90))), repr(draw(st.floats(-180, 180)))]
        out.append(row)
        kind = draw(st.sampled_from(["none"] * 3 + ["timestamp", "short", "long"] +
                                    (["coordinate", "range"] if coordinates else [])))
        if kind == "timestamp":
            mutations.append(("bad timestamp", 2, draw(st.sampled_from(BAD_TIMESTAMPS))))
        elif kind == "coordinate":
            mutations.append(("bad coordinates", draw(st.sampled_from([3, 4])),
                              draw(st.sampled_from(BAD_COORDINATES))))
        elif kind == "range":
            mutations.append(("range", 3, draw(st.sampled_from(OUT_OF_RANGE_COORDINATES))))
        elif kind in ("short", "long"):
            mutations.append(("malformed row", kind, None))
        else:
            mutations.append(None)
    return out, mutations


def expected(rows, mutations, first_line, coordinates=False, integer_floor=True):
    """(Interactions of the untouched rows, {reason: count}, {reason: first line})."""
    keep = [row for row, mutation in zip(rows, mutations) if mutation is None]
    counts, lines = {}, {}
    for number, (row, mutation) in enumerate(zip(rows, mutations), first_line):
        if mutation is None:
            continue
        reason = "bad coordinates" if mutation[0] == "range" else mutation[0]
        counts[reason] = counts.get(reason, 0) + 1
        if mutation[0] != "range":
            lines.setdefault(reason, number)
    columns = list(zip(*keep)) if keep else [(), (), ()] + ([(), ()] if coordinates else [])
    stamps = [int(float(t)) if "." in t else int(t) for t in columns[2]]
    data = from_events(pa.array(list(columns[0]), pa.string()),
                       pa.array(list(columns[1]), pa.string()), stamps,
                       latitude=[float(x) for x in columns[3]] if coordinates else None,
                       longitude=[float(x) for x in columns[4]] if coordinates else None,
                       deduplicate=False)
    return data, counts, lines


def mutate(row, mutation, layout=None):
    """The file's fields of a known row: ``layout`` lists, per file field, the index of the
    known field it holds or a constant text (default: the known fields as they are)."""
    fields = list(row)
    if mutation is not None and isinstance(mutation[1], int):
        fields[mutation[1]] = mutation[2]
    if layout is not None:
        fields = [fields[part] if isinstance(part, int) else part for part in layout]
    if mutation is not None and mutation[1] == "short":
        return fields[:-1]
    if mutation is not None and mutation[1] == "long":
        return fields + ["extra"]
    return fields


def check(path, load, rows_, mutations, first_line, coordinates=False):
    try:
        data = load()
    except ValueError as error:
        assert path.name in str(error), error
        record(OP, "named-error")
        return
    want, counts, lines = expected(rows_, mutations, first_line, coordinates)
    assert data.report.rows == len(rows_)
    assert {r: c for r, c in data.report.dropped.items() if r != "duplicate"} == counts
    assert data.report.first_lines == lines
    assert data.user_ids.tolist() == want.user_ids.tolist()
    assert data.item_ids.tolist() == want.item_ids.tolist()
    assert data.items.tolist() == want.items.tolist()
    assert data.timestamps.tolist() == want.timestamps.tolist()
    assert data.offsets.tolist() == want.offsets.tolist()
    if coordinates:
        assert data.coordinates.tolist() == want.coordinates.tolist()
    record(OP, "match")


@given(data=rows(coordinates=True), delimiter=st.sampled_from([",", "\t"]))
def test_table_rows(tmp_path_factory, data, delimiter):
    rows_, mutations = data
    path = tmp_path_factory.mktemp("table") / ("events.csv" if delimiter == "," else "e.tsv")
    lines = ["u" + delimiter + "i" + delimiter + "t" + delimiter + "lat" + delimiter + "lon"]
    lines += [delimiter.join(mutate(row, m)) for row, m in zip(rows_, mutations)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    columns = {"user": "u", "item": "i", "timestamp": "t", "latitude": "lat", "longitude": "lon"}
    check(path, lambda: load_table(path, columns, deduplicate=False), rows_, mutations, 2,
          coordinates=True)


@given(data=rows())
def test_recbole_rows(tmp_path_factory, data):
    rows_, mutations = data
    path = tmp_path_factory.mktemp("recbole") / "x.inter"
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += ["\t".join(mutate(row, m)) for row, m in zip(rows_, mutations)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    check(path, lambda: load_recbole(path, deduplicate=False), rows_, mutations, 2)


@given(data=rows())
def test_movielens_dat_rows(tmp_path_factory, data):
    rows_, mutations = data
    path = tmp_path_factory.mktemp("movielens") / "ratings.dat"
    text = []
    for row, mutation in zip(rows_, mutations):
        text.append("::".join(mutate(row, mutation, [0, 1, "4", 2])))
    path.write_text("\n".join(["1::1::1::1"] + text) + "\n", encoding="utf-8")
    rows_, mutations = [["1", "1", "1"]] + rows_, [None] + mutations
    check(path, lambda: load_movielens(path, deduplicate=False), rows_, mutations, 1)


@given(data=rows())
def test_taobao_rows(tmp_path_factory, data):
    rows_, mutations = data
    path = tmp_path_factory.mktemp("taobao") / "UserBehavior.csv"
    text = []
    for row, mutation in zip(rows_, mutations):
        text.append(",".join(mutate(row, mutation, [0, 1, "9", "pv", 2])))
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    check(path, lambda: load_taobao(path, deduplicate=False), rows_, mutations, 1)


BROKEN = {
    "undecodable": b"u,i,t\na,b,1\n\xff\xfe,b,2\n",
    "undecodable timestamp": b"u,i,t\na,b,1\nc,d,2\xc3\n",
    "empty": b"",
    "header only": b"u,i,t\n",
    "missing column": b"u,i,when\na,b,1\n",
    "blank lines": b"u,i,t\n\n  \na,b,1\n\n",
    "milliseconds": b"u,i,t\na,b,1700000000000\nc,d,1700000000500\n",
    "nul bytes": b"u,i,t\na\x00,b,1\n",
    "crlf": b"u,i,t\r\na,b,1\r\nc,d,2\r\n",
    "quoted delimiter": b'u,i,t\n"a,1",b,1\n',
    "one column": b"u\na\n",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files(tmp_path, case):
    path = tmp_path / "events.csv"
    path.write_bytes(BROKEN[case])
    try:
        data = load_table(path, {"user": "u", "item": "i", "timestamp": "t"})
    except ValueError as error:
        assert path.name in str(error) or "not in the header" in str(error), error
        record(OP, "named-error")
        return
    assert data.report.rows == data.num_events + sum(data.report.dropped.values())
    record(OP, "match")


@given(values=st.lists(st.one_of(st.none(), st.sampled_from(BAD_TIMESTAMPS + ["5", "12"])),
                       min_size=1, max_size=8),
       kind=st.sampled_from(["string", "int64", "float64", "timestamp"]))
def test_parquet_columns(tmp_path_factory, values, kind):
    """Parquet timestamp columns of every type, with nulls and junk: counted, never raised."""
    path = tmp_path_factory.mktemp("parquet") / "events.parquet"
    if kind == "string":
        column = pa.array(values, pa.string())
    else:
        numbers = []
        for value in values:
            try:
                number = None if value is None else int(value)
            except ValueError:
                number = None
            numbers.append(number if number is None or abs(number) < 2**63 else None)
        column = pa.array(numbers, pa.int64())
        if kind == "float64":
            column = column.cast(pa.float64())
        elif kind == "timestamp":
            column = column.cast(pa.timestamp("s"))
    users = pa.array([str(n % 3) for n in range(len(values))])
    pq.write_table(pa.table({"u": users, "i": users, "t": column}), path)
    data = load_table(path, {"user": "u", "item": "i", "timestamp": "t"}, deduplicate=False)
    good = [v for v in values if v in ("5", "12")
            or (kind != "string" and v is not None and v.lstrip("-").isdigit()
                and abs(int(v)) < 2**63)]
    assert data.num_events == len(good)
    assert data.report.dropped.get("bad timestamp", 0) == len(values) - len(good)
    record(OP, "match")
