"""Fuzz the command line (issue 16 items 11 and the CLI/data fuzz): bad data files and bad option
values through ``stseq train / evaluate / recommend`` via ``stseq.cli.main``. Every case either
succeeds (exit 0) or ends with exit status 2 and one line on stderr; no exception escapes and
no traceback is printed. Outcomes go to the fuzz tally (tests/fuzzing.py): "named-error" for
exit 2, "no-crash" for a clean exit 0."""

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
from fuzzing import record
from hypothesis import given
from hypothesis import strategies as st

from stseq.cli import main

TINY = ["--synthetic", "num_users=12", "--synthetic", "num_items=20", "--synthetic",
        "num_categories=4", "--synthetic", "min_length=3", "--synthetic", "max_length=6",
        "--no-progress"]
MARKOV = ["--model", "markov", "--no-baselines"]
HEADERS = ["user_id:token\titem_id:token\ttimestamp:float", "user_id\titem_id\ttimestamp",
           "user_id:token\titem_id:token", "", "\x00\x01", "user_id:token\ttimestamp:float"]
# Values that break parsers: numbers at and past the edges, non-numbers, separators, bytes.
AWKWARD = ["0", "-1", "1", "2", "1.5", "-0.0", "nan", "inf", "-inf", "1e300", "-1e300",
           "9223372036854775807", "9223372036854775808", "-9223372036854775809", "",
           " ", "abc", "007", "7", "\t", ",", ":", "\\", "'", '"', "\u00e9", "\udcff", "1e9",
           "1700000000", "1700000000000", "2024-01-01T00:00:00Z"]
# AWKWARD without the large valid integers, which ask the generator for billions of events.
MODEST = [value for value in AWKWARD if not (value.isdigit() and int(value) > 1000)]
field = st.one_of(st.sampled_from(AWKWARD), st.text(max_size=8),
                  st.integers(-2**70, 2**70).map(str), st.floats().map(repr))


def run(argv):
    """main(argv): must return 0, or 2 with one line on stderr; records the outcome."""
    error = io.StringIO()
    with contextlib.redirect_stderr(error), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    error = error.getvalue()
    if code == 2:
        assert error.count("\n") == 1 and error.startswith("stseq") and "Traceback" not in \
            error, error
        record("cli", "named-error")
    else:
        assert code == 0, (code, error)
        record("cli", "no-crash")
    return code


@st.composite
def inter_files(draw):
    """A RecBole .inter file: a header and rows of awkward fields (sometimes the wrong number,
    sometimes a raw byte line)."""
    header = draw(st.sampled_from(HEADERS))
    valid_row = st.tuples(st.integers(0, 5).map(str), st.integers(0, 7).map(str),
                          st.integers(1_700_000_000, 1_700_100_000).map(str))
    row = st.one_of(valid_row, st.lists(field, min_size=0, max_size=5).map(tuple))
    rows = draw(st.lists(row, max_size=30))
    text = "\n".join([header, *("\t".join(fields) for fields in rows)]) + "\n"
    raw = text.encode("utf-8", errors="surrogateescape")
    if draw(st.booleans()):
        raw += draw(st.binary(max_size=20))
    return raw


@given(content=inter_files())
def test_bad_data_files(content):
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "events.inter"
        data.write_bytes(content)
        if run(["train", "--data", str(data), *MARKOV, "--no-progress", "--out",
                str(Path(folder) / "run")]) == 0:
            checkpoint = str(Path(folder) / "run" / "markov" / "checkpoint.pt")
            run(["evaluate", checkpoint])
            run(["recommend", checkpoint, "--user", "0", "-k", "1"])


@given(columns=st.lists(st.sampled_from(["user", "item", "timestamp", "latitude", "longitude",
                                         "behavior", "when", ""]), max_size=4),
       names=st.lists(st.sampled_from(["u", "i", "t", "x", ""]), min_size=4, max_size=4),
       time_format=st.sampled_from(["seconds", "milliseconds", "iso", "days", None]),
       rows=st.lists(st.lists(field, min_size=3, max_size=3), max_size=12))
def test_bad_tables(columns, names, time_format, rows):
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "events.csv"
        lines = ["u,i,t", *(",".join(row) for row in rows)]
        data.write_bytes(("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape"))
        mapping = ",".join(f"{role}={name}" for role, name in zip(columns, names))
        argv = ["train", "--data", str(data), "--format", "table", *MARKOV, "--no-progress",
                "--out", str(Path(folder) / "run")]
        argv += ["--columns", mapping] if mapping else []
        argv += ["--time-format", time_format] if time_format else []
        run(argv)


TRAIN_OPTIONS = ["--epochs", "--batch-size", "--max-length", "--stride", "--lr", "--weight-decay",
                 "--patience", "--dropout", "--dim", "--num-negatives", "--seed", "--device",
                 "--split", "--loss", "--backend", "--format", "--time-format", "--columns"]
SYNTHETIC_KEYS = ["num_users", "num_items", "num_categories", "num_regions", "min_length",
                  "max_length", "session_strength", "rhythm_strength", "seed", "speed"]


@given(option=st.sampled_from(TRAIN_OPTIONS), value=field)
def test_bad_train_options(option, value):
    with tempfile.TemporaryDirectory() as folder:
        run(["train", *TINY, *MARKOV, "--out", str(Path(folder) / "run"), option, value])


@given(key=st.sampled_from(SYNTHETIC_KEYS), value=st.sampled_from(MODEST))
def test_bad_synthetic_options(key, value):
    with tempfile.TemporaryDirectory() as folder:
        run(["train", *TINY, f"--synthetic={key}={value}", *MARKOV, "--out",
             str(Path(folder) / "run")])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-run")
    assert main(["train", *TINY, *MARKOV, "--out", str(out)]) == 0
    return str(out / "markov" / "checkpoint.pt")


@given(option=st.sampled_from(["-k", "--at-time", "--user", "--targets", "--negatives"]),
       value=field, command=st.sampled_from(["evaluate", "recommend"]))
def test_bad_evaluate_and_recommend_options(checkpoint, option, value, command):
    argv = [command, checkpoint, option, value]
    if command == "recommend" and option != "--user":
        argv += ["--user", "0"]
    run(argv)
