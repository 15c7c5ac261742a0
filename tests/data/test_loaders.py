"""Every loader on small files written here in its exact format, malformed rows included, UTC
time parsing whatever the local zone, and MovieLens-100K from the recbole wheel."""

import subprocess
import sys
import time

import numpy as np
import pytest

from stseq.data import (load_foursquare, load_movielens, load_recbole, load_snap_checkins,
                        load_table, load_taobao, movielens_100k_path, parse_iso8601)
from stseq.data.loaders import parse_twitter_time


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def new_york_time(monkeypatch):
    """Run with a non-UTC local zone: a local-time conversion would shift every time."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is not available")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_time_parsers_are_utc(new_york_time):
    assert parse_iso8601("2010-10-19T23:55:27Z") == 1287532527
    assert parse_iso8601("2010-10-19T23:55:27") == 1287532527  # no zone: UTC
    assert parse_iso8601("2010-10-20T01:55:27+02:00") == 1287532527
    assert parse_twitter_time("Tue Apr 03 18:00:09 +0000 2012") == 1333476009
    assert parse_twitter_time("Tue Apr 03 20:00:09 +0200 2012") == 1333476009


def test_recbole_inter(tmp_path):
    path = write(tmp_path, "toy.inter",
                 "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                 "196\t242\t3\t881250949\n"
                 "196\t302\t3\t881250940.7\n"   # fractional seconds are floored
                 "22\t377\t1\n"                  # malformed: 3 fields
                 "22\t51\t2\tyesterday\n"        # bad timestamp
                 "196\t242\t3\t881250949\n"      # duplicate
                 "22\t377\t1\t878887116\n")
    data = load_recbole(path)
    assert data.report.rows == 6
    assert data.report.dropped == {"malformed row": 1, "bad timestamp": 1, "duplicate": 1}
    assert data.report.first_lines == {"malformed row": 4, "bad timestamp": 5}
    assert data.user_ids.tolist() == ["196", "22"]  # :token ids are text, sorted as text
    assert data.item_ids[data.sequence(0).items].tolist() == ["302", "242"]  # time-sorted
    assert data.sequence(0).timestamps.tolist() == [881250940, 881250949]
    with pytest.raises(ValueError, match="not in the header"):
        load_recbole(path, time_field="time")


@pytest.mark.parametrize("name, text", [
    ("ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::x\n"
                    "2::3068::4::978299000\n2::1357::2::978298800\n"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,1193,5.0,978300760\n1,661,3.0,978302109\n"
                    "2,1193,x\n2,3068,4.0,978299000\n2,1357,2.0,978298800\n"),
])
def test_movielens(tmp_path, name, text):
    path = write(tmp_path, name, text)
    data = load_movielens(path)
    assert data.report.dropped == {"malformed row": 1}
    assert (data.num_users, data.num_items, data.num_events) == (2, 4, 4)
    assert data.item_ids[data.sequence(1).items].tolist() == ["1357", "3068"]
    liked = load_movielens(path, min_rating=4, integer_ids=True)
    assert liked.report.dropped == {"malformed row": 1, "below min_rating": 2}
    assert sorted(liked.item_ids.tolist()) == [1193, 3068]


def test_snap_checkins(tmp_path, new_york_time):
    path = write(tmp_path, "loc-gowalla_totalCheckins.txt",
                 "0\t2010-10-19T23:55:27Z\t30.2359091167\t-97.7951395833\t22847\n"
                 "0\t2010-10-18T22:17:43Z\t30.2691029532\t-97.7493953705\t420315\n"
                 "0\t2010-10-17T23:42:03Z\t95.0\t-97.7\t316637\n"          # latitude out of range
                 "1\tnot-a-time\t30.0\t-97.0\t22847\n"                      # bad timestamp
                 "1\t2010-10-12T00:21:28Z\t30.2557309927\n"                # malformed
                 "1\t2010-10-12T00:21:28Z\t30.2557309927\t-97.7633857727\t22847\n")
    data = load_snap_checkins(path)
    assert data.report.dropped == {"bad timestamp": 1, "malformed row": 1, "bad coordinates": 1}
    assert data.sequence(0).timestamps.tolist() == [1287440263, 1287532527]
    assert data.item_ids[data.sequence(0).items].tolist() == ["420315", "22847"]
    assert data.sequence(0).coordinates[1].tolist() == pytest.approx([30.2359091167,
                                                                      -97.7951395833])


def test_foursquare_tsmc2014_text_and_csv(tmp_path):
    rows = [("470", "49bbd6c0f964a520f4531fe3", "4bf58dd8d48988d127951735",
             "Arts & Crafts Store", "40.71981037", "-74.00258103", "-240",
             "Tue Apr 03 18:00:09 +0000 2012"),
            ("979", "4a43c0aef964a520c6a61fe3", "4bf58dd8d48988d1df941735", "Bridge",
             "40.60679958", "-74.04416981", "-240", "Tue Apr 03 18:00:25 +0000 2012"),
            ("470", "4c5cc7b485a1e21e00d35711", "4bf58dd8d48988d103941735", "Home (private)",
             "40.71616168", "-73.88307006", "-240", "Tue Apr 03 17:59:00 +0000 2012")]
    text = "\n".join("\t".join(row) for row in rows) + "\n470\tvenue\tcat\tname\t40.7\n" \
        "470\tv2\tcat\tname\t40.7\t-74.0\t-240\tApril 3rd 2012\n"
    data = load_foursquare(write(tmp_path, "dataset_TSMC2014_NYC.txt", text))
    assert data.report.dropped == {"malformed row": 1, "bad timestamp": 1}
    assert data.sequence(0).timestamps.tolist() == [1333475940, 1333476009]
    assert data.item_ids[data.sequence(0).items].tolist() == ["4c5cc7b485a1e21e00d35711",
                                                              "49bbd6c0f964a520f4531fe3"]
    header = "userId,venueId,venueCategoryId,venueCategory,latitude,longitude,timezoneOffset," \
             "utcTimestamp\n"
    csv_text = header + "\n".join(",".join(f'"{v}"' if "," in v or " " in v else v for v in row)
                                  for row in rows) + "\n"
    csv_text = csv_text.replace("Arts & Crafts Store", "Arts, Crafts Store")  # a quoted comma
    from_csv = load_foursquare(write(tmp_path, "dataset_TSMC2014_NYC.csv", csv_text))
    assert from_csv.report.dropped == {}
    assert from_csv.timestamps.tolist() == [1333475940, 1333476009, 1333476025]


def test_taobao_user_behavior(tmp_path):
    path = write(tmp_path, "UserBehavior.csv",
                 "1,2268318,2520377,pv,1511544070\n"
                 "1,2333346,2520771,cart,1511561733\n"
                 "1,2576651,149192,click,1511572885\n"   # unknown behavior
                 "1,3830808,4181361,buy,1511593493\n"
                 "2,2268318,2520377,pv\n"                # malformed
                 "2,2268318,2520377,fav,1511600000\n")
    data = load_taobao(path)
    assert data.report.dropped == {"malformed row": 1, "unknown behavior": 1}
    assert data.behavior_names == ("pv", "fav", "cart", "buy")
    assert data.behaviors.tolist() == [0, 2, 3, 1]
    windowed = load_taobao(path, time_range=(1511550000, 1511600000))
    assert windowed.report.dropped["outside time_range"] == 2


def test_generic_csv_with_column_mapping(tmp_path, new_york_time):
    path = write(tmp_path, "events.csv",
                 "ts,uid,sku,lat,lon,kind\n"
                 "2021-03-01T10:00:00Z,a,x,1.0,2.0,view\n"
                 "2021-03-01T09:00:00,a,y,1.5,2.5,buy\n"
                 "garbage,a,z,1.0,2.0,view\n"
                 "2021-03-01T11:00:00+01:00,b,x,1.0\n")
    columns = {"user": "uid", "item": "sku", "timestamp": "ts", "latitude": "lat",
               "longitude": "lon", "behavior": "kind"}
    data = load_table(path, columns, time_format="iso")
    assert data.report.dropped == {"bad timestamp": 1, "malformed row": 1}
    assert data.timestamps.tolist() == [1614589200, 1614592800]
    assert data.behavior_names == ("buy", "view") and data.behaviors.tolist() == [0, 1]
    assert data.coordinates.tolist() == [[1.5, 2.5], [1.0, 2.0]]
    with pytest.raises(ValueError, match="not in the header"):
        load_table(path, {"user": "user", "item": "sku", "timestamp": "ts"})
    with pytest.raises(ValueError, match="missing"):
        load_table(path, {"user": "uid", "item": "sku"})

    plain = write(tmp_path, "events.tsv", "1614589200123\tu\ti\n1614589100999\tu\tj\n")
    data = load_table(plain, {"user": 1, "item": 2, "timestamp": 0}, header=False,
                      time_format="milliseconds")
    assert data.timestamps.tolist() == [1614589100, 1614589200]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({
        "uid": pa.array([1, 1, 2, None], pa.int64()),
        "sku": pa.array(["x", "y", "x", "x"]),
        "when": pa.array([1_600_000_000_000, 1_599_999_999_500, 1_600_000_100_000, 0],
                         pa.timestamp("ms", tz="UTC")),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    data = load_table(path, {"user": "uid", "item": "sku", "timestamp": "when"})
    assert data.report.rows == 4 and data.report.dropped == {"missing value": 1}
    assert data.user_ids.tolist() == [1, 2]
    assert data.sequence(0).timestamps.tolist() == [1599999999, 1600000000]


def test_without_pyarrow_the_import_says_what_to_install():
    code = "import sys; sys.modules['pyarrow'] = None; import stseq"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and "pip install pyarrow" in result.stderr


def test_movielens_100k_from_the_recbole_wheel():
    try:
        path = movielens_100k_path()
    except FileNotFoundError as missing:  # recbole 1.2.1 not installed
        pytest.skip(str(missing))
    data = load_recbole(path)
    assert (data.num_users, data.num_items, data.num_events) == (943, 1682, 100000)
    assert data.report.dropped == {}
    assert data.timestamps.min() >= 874724710 and data.timestamps.max() <= 893286638
    assert (np.diff(data.timestamps)[np.diff(data.event_users()) == 0] >= 0).all()
    assert data.lengths.min() == 20  # every ML-100K user rated at least 20 movies


# Issue 16 item 7 ---------------------------------------------------------------------------
def test_timestamps_outside_int64_are_counted_bad_rows(tmp_path):
    path = write(tmp_path, "events.csv", "u,i,t\na,x,100\na,y,1e300\nb,x,9223372036854775808\n"
                                         "b,y,-1e300\nb,z,200\n")
    data = load_table(path, {"user": "u", "item": "i", "timestamp": "t"})
    assert data.report.dropped == {"bad timestamp": 3}
    assert data.report.first_lines == {"bad timestamp": 3}
    assert data.timestamps.tolist() == [100, 200]


def test_ids_are_text_unless_said_otherwise(tmp_path):
    path = write(tmp_path, "events.csv", "u,i,t\n007,x,1\n7,x,2\n07,y,3\n")
    data = load_table(path, {"user": "u", "item": "i", "timestamp": "t"})
    assert data.user_ids.tolist() == ["007", "07", "7"]  # three users
    as_numbers = load_table(path, {"user": "u", "item": "i", "timestamp": "t"},
                            min_user_events=1, integer_ids=True)
    assert as_numbers.report.dropped == {"bad id": 3}  # "x", "y" are no integers
    numeric = write(tmp_path, "numeric.csv", "u,i,t\n007,1,1\n7,2,2\n")
    merged = load_table(numeric, {"user": "u", "item": "i", "timestamp": "t"}, integer_ids=True)
    assert merged.user_ids.tolist() == [7] and merged.lengths.tolist() == [2]


def test_undecodable_bytes_are_an_error_naming_the_line(tmp_path):
    path = tmp_path / "events.csv"
    path.write_bytes(b"u,i,t\na,x,1\nb\xff,y,2\n")
    with pytest.raises(ValueError, match=r"events.csv: line 3 is not valid UTF-8"):
        load_table(path, {"user": "u", "item": "i", "timestamp": "t"})
    inter = tmp_path / "x.inter"
    inter.write_bytes(b"user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t\xe9\t4\n")
    with pytest.raises(ValueError, match=r"x.inter: line 3 is not valid UTF-8"):
        load_recbole(inter)


def test_milliseconds_read_as_seconds_stop_with_advice(tmp_path):
    path = write(tmp_path, "events.csv", "u,i,t\na,x,1614589200123\na,y,1614589300999\n")
    columns = {"user": "u", "item": "i", "timestamp": "t"}
    with pytest.raises(ValueError, match="--time-format milliseconds"):
        load_table(path, columns)
    assert load_table(path, columns, time_format="milliseconds").timestamps.tolist() == [
        1614589200, 1614589300]
    taobao = write(tmp_path, "UserBehavior.csv", "1,2,3,pv,1511544070000\n")
    with pytest.raises(ValueError, match="look like milliseconds"):
        load_taobao(taobao)


def test_recbole_header_types_are_honoured(tmp_path):
    text = ("user_id:float\titem_id:float\ttimestamp:float\n"
            "007\t5\t10\n7\t5\t20\n")
    data = load_recbole(write(tmp_path, "numbers.inter", text))
    assert data.user_ids.tolist() == [7] and data.item_ids.tolist() == [5]  # :float ids
    tokens = load_recbole(write(tmp_path, "tokens.inter", text.replace(":float", ":token", 2)))
    assert tokens.user_ids.tolist() == ["007", "7"]
    with pytest.raises(ValueError, match="timestamp:token cannot be the timestamp"):
        load_recbole(write(tmp_path, "bad.inter", text.replace("timestamp:float",
                                                               "timestamp:token")))
    with pytest.raises(ValueError, match="both be token or both be float"):
        load_recbole(write(tmp_path, "mixed.inter", text.replace("user_id:float",
                                                                 "user_id:token")))


def test_first_line_of_a_reason_found_in_two_fields(tmp_path):
    """Found by the fuzz suite: a bad longitude on line 3 and a bad latitude on line 4 are
    both "bad coordinates", first at line 3 (the latitude was checked first)."""
    path = write(tmp_path, "events.csv", "u,i,t,lat,lon\na,x,1,1.0,2.0\na,y,2,1.0,\n"
                                         "a,z,3,,2.0\n")
    columns = {"user": "u", "item": "i", "timestamp": "t", "latitude": "lat", "longitude": "lon"}
    data = load_table(path, columns)
    assert data.report.dropped == {"bad coordinates": 2}
    assert data.report.first_lines == {"bad coordinates": 3}
