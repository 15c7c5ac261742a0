"""Fuzz suite of time_gap_embedding (tests/fuzzing.py): random valid shapes and options, every
None/non-None combination of the optional inputs, native against the reference twin forward and
backward; one mutated argument at a time (dtype, device, rank, stride-0/non-contiguous, NaN/inf,
decreasing or overflowing timestamps, bad lengths, coordinates and options) gives the right
answer or a ValueError/TypeError naming the argument on both backends; direct calls of the
native op with such values run in a child interpreter (a crash fails the test)."""

import math

import hypothesis
import pytest
import torch
from hypothesis import given, strategies as st

from stseq import ops

from case_edits import with_value
from fuzzing import bad_lengths, expect_named_error, record, run_isolated
from test_time_gap import TOLERANCE, assert_close_to_scale

OP = "time_gap_embedding"
# A few base cases per mutation (the profile's example count / 8: 3 in ci).
PER_MUTATION = hypothesis.settings(
    max_examples=max(1, hypothesis.settings().max_examples // 8))
START_TIMES = (0, 1_700_000_000, -10**12, 2**40)


@st.composite
def valid_cases(draw, min_batch=0, min_len=0):
    """Keyword arguments of ops.time_gap_embedding: random shapes (empty ones included), gaps of
    0 to ~1e9 s, each optional input present or not."""
    batch, seq_len = draw(st.integers(min_batch, 4)), draw(st.integers(min_len, 10))
    window, num_buckets, dim = draw(st.integers(1, 5)), draw(st.integers(1, 8)), draw(
        st.integers(1, 6))
    lag_specific, distance = draw(st.booleans()), draw(st.booleans())
    bucketing = draw(st.sampled_from(("log", "linear")))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    gaps = torch.exp(torch.rand(batch, seq_len, generator=g) * 21) - 1  # 0 .. ~1.3e9 s
    gaps[torch.rand(batch, seq_len, generator=g) < 0.25] = 0
    timestamps = draw(st.sampled_from(START_TIMES)) + gaps.round().long().cumsum(1)
    if draw(st.booleans()):
        timestamps = timestamps.double()
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))

    def table(rows):
        shape = (window, rows, dim) if lag_specific else (rows, dim)
        return torch.randn(shape, generator=g, dtype=dtype).requires_grad_()

    case = dict(timestamps=timestamps, time_weight=table(num_buckets), bucketing=bucketing,
                time_unit=draw(st.sampled_from((1.0, 0.5, 60.0, 86400.0))),
                time_scale=draw(st.floats(0.05, 8.0)), interpolate=draw(st.booleans()))
    if not lag_specific or draw(st.booleans()):
        case["window"] = window  # else taken from the lag-specific table
    if draw(st.booleans()):
        case["lengths"] = torch.tensor(draw(st.lists(st.integers(0, seq_len), min_size=batch,
                                                     max_size=batch)), dtype=torch.long)
    if distance:
        case["coordinates"] = torch.stack([torch.rand(batch, seq_len, generator=g) * 180 - 90,
                                           torch.rand(batch, seq_len, generator=g) * 360 - 180],
                                          -1)
        case["distance_weight"] = table(draw(st.integers(1, 8)))
        case["distance_scale"] = draw(st.floats(0.05, 8.0))
    return case


def tables(case):
    return [case[name] for name in ("time_weight", "distance_weight") if name in case]


def run(case, backend):
    out = ops.time_gap_embedding(**case, backend=backend)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
    return out, torch.autograd.grad(out, tables(case), grad_out)


def assert_native_matches_reference(case):
    out, grads = run(case, "native")
    expected, expected_grads = run(case, "reference")
    dtype = case["time_weight"].dtype
    torch.testing.assert_close(out, expected, equal_nan=True, **TOLERANCE[dtype])
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert_close_to_scale(grad, expected_grad, dtype)
    record(OP, "match")


@given(valid_cases())
def test_valid_inputs_native_matches_reference(case):
    assert_native_matches_reference(case)


# ---- one mutated argument at a time ----------------------------------------------------------


def _longest_row(case):
    """(row, length) of the longest sequence of a case with at least one row."""
    lengths = case.get("lengths", torch.full((case["timestamps"].shape[0],),
                                             case["timestamps"].shape[1]))
    row = int(torch.argmax(lengths))
    return row, int(lengths[row])


def _edit_row(case, edit, dtype=None):
    """The case with ``edit(row [length] float64/int64 values)`` applied to the longest row
    (hypothesis skips the case if that row has fewer than 2 events)."""
    row, length = _longest_row(case)
    hypothesis.assume(length >= 2)
    timestamps = case["timestamps"].clone() if dtype is None else case["timestamps"].to(dtype)
    timestamps[row, :length] = edit(timestamps[row, :length])
    return dict(case, timestamps=timestamps)


def _decrease(values):
    values[-1] = values[-2] - 1
    return values


def _overflow(values):  # non-decreasing, first to last more than 2^63 - 1 s
    return torch.cat([values.new_tensor([-2**62]), values[1:] - values[1] + 2**62 + 1])


def _timestamps(change):
    """A new case with the timestamps changed by ``change(timestamps)``."""
    return with_value("timestamps", lambda case: change(case["timestamps"]))


def _lengths(make):
    """A new case with lengths ``make(B, L)``."""
    return with_value("lengths", lambda case: make(*case["timestamps"].shape))


def _with_coordinates(case):
    """The case, if it has coordinates at a real event (else hypothesis skips it)."""
    hypothesis.assume("coordinates" in case and _longest_row(case)[1] >= 1)
    return case


# name -> (mutation of a valid case, the argument its error names; None: still valid, the
# answer must match the reference)
MUTATIONS = {
    "timestamps float32": (_timestamps(lambda t: t.float()), "timestamps"),
    "timestamps int32": (_timestamps(lambda t: t.int()), "timestamps"),
    "timestamps rank 1": (_timestamps(lambda t: t.flatten()), "timestamps"),
    "timestamps rank 3": (_timestamps(lambda t: t[..., None]), "timestamps"),
    "timestamps list": (_timestamps(lambda t: t.tolist()), "timestamps"),
    "timestamps meta": (_timestamps(lambda t: t.to("meta")), "timestamps"),
    "timestamps decreasing": (lambda c: _edit_row(c, _decrease), "timestamps"),
    "timestamps nan": (lambda c: _edit_row(c, lambda v: v.index_fill(0, v.new_tensor(
        [1], dtype=torch.long), math.nan), torch.float64), "timestamps"),
    "timestamps inf": (lambda c: _edit_row(c, lambda v: v.index_fill(0, v.new_tensor(
        [len(v) - 1], dtype=torch.long), math.inf), torch.float64), "timestamps"),
    "timestamps span overflow": (lambda c: _edit_row(c, _overflow, torch.int64), "timestamps"),
    "timestamps beyond 2^53": (lambda c: _edit_row(c, lambda v: v - v[0] + 2.0**53 + 2,
                                                    torch.float64), "timestamps"),
    "timestamps stride-0": (_timestamps(lambda t: t[:1].expand_as(t)), None),
    "timestamps non-contiguous": (_timestamps(lambda t: t.t().contiguous().t()), None),
    "table stride-0": (with_value("time_weight", lambda c: c["time_weight"][..., :1, :].expand_as(
        c["time_weight"])), None),
    "table non-contiguous": (with_value("time_weight", lambda c: c["time_weight"].transpose(
        -1, -2).contiguous().transpose(-1, -2)), None),
    "table nan and inf": (with_value("time_weight", lambda c: c["time_weight"].detach().index_fill(
        -1, torch.tensor([0]), math.nan).index_fill(-2, torch.tensor([0]), math.inf
        ).requires_grad_()), None),
    "table integer": (with_value("time_weight", lambda c: c["time_weight"].detach().long()),
                      "time_weight"),
    "table rank 1": (with_value("time_weight", lambda c: c["time_weight"].detach().flatten()),
                     "time_weight"),
    "table meta": (with_value("time_weight", lambda c: c["time_weight"].detach().to("meta")),
                   "time_weight"),
    "table lags": (lambda c: dict(c, window=c["time_weight"].shape[0] + 1)
                   if c["time_weight"].dim() == 3 else hypothesis.reject(), "time_weight"),
    **bad_lengths(_lengths),
    "coordinates alone": (lambda c: {k: v for k, v in _with_coordinates(c).items()
                                     if k != "distance_weight"}, "coordinates"),
    "latitude 91": (lambda c: dict(_with_coordinates(c), coordinates=c["coordinates"].index_fill(
        -1, torch.tensor([0]), 91.0)), "coordinates"),
    "coordinates nan": (lambda c: dict(_with_coordinates(c), coordinates=torch.full_like(
        c["coordinates"], math.nan)), "coordinates"),
    "coordinates integer": (lambda c: dict(_with_coordinates(c), coordinates=c[
        "coordinates"].long()), "coordinates"),
    "distance table dtype": (lambda c: dict(_with_coordinates(c), distance_weight=c[
        "distance_weight"].detach().to(torch.float16)), "distance_weight"),
    "window 0": (with_value("window", 0), "window"),
    "window float": (with_value("window", 2.0), "window"),
    "time_unit 0": (with_value("time_unit", 0.0), "time_unit"),
    "time_unit nan": (with_value("time_unit", math.nan), "time_unit"),
    "time_scale negative": (with_value("time_scale", -1.0), "time_scale"),
    "time_scale string": (with_value("time_scale", "1"), "time_scale"),
    "distance_scale inf": (with_value("distance_scale", math.inf), "distance_scale"),
    "bucketing": (with_value("bucketing", "sqrt"), "bucketing"),
    "backend": (with_value("backend", "bogus"), "backend"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
@PER_MUTATION
@given(data=st.data())
def test_one_mutated_argument(name, data):
    mutate, argument = MUTATIONS[name]
    case = mutate(data.draw(valid_cases(min_batch=1, min_len=2)))
    if argument is None:
        assert_native_matches_reference(case)
        return
    backends = [case.pop("backend")] if "backend" in case else ["native", "reference"]
    for backend in backends:
        expect_named_error(OP, lambda: ops.time_gap_embedding(**case, backend=backend), argument)


# ---- direct calls of the native op, in a child interpreter ----------------------------------


def direct_call(timestamps, time_weight, lengths, window, time_unit, time_scale, backward):
    """Run by the child of run_isolated: the native op (or its backward) without the Python
    checks -> "finite" or "non-finite"."""
    options = (window, time_unit, time_scale, 1.0, "log", True)
    if backward:
        grad = torch.ones(*timestamps.shape, time_weight.shape[-1], dtype=time_weight.dtype)
        out = torch.ops.stseq.time_gap_embedding_backward(grad, timestamps, time_weight,
                                                          lengths, None, None, *options)[0]
    else:
        out = torch.ops.stseq.time_gap_embedding(timestamps, time_weight, lengths, None, None,
                                                 *options)
    return "finite" if bool(out.isfinite().all()) else "non-finite"


def risky_cases():
    """Direct-call arguments that the Python checks would refuse: values the kernels must
    survive (clamped) or refuse with a named error."""
    valid = torch.tensor([[0, 5, 60, 3600], [7, 7, 8, 10**9]])
    table = torch.randn(2, 4, 3, dtype=torch.float64)
    base = dict(timestamps=valid, time_weight=table, lengths=None, window=2, time_unit=1.0,
                time_scale=1.0)
    edits = [dict(lengths=torch.tensor([10**12, -10**12])),
             dict(lengths=torch.tensor([2**63 - 1, -2**63])),
             dict(timestamps=torch.tensor([[2**63 - 1] * 4, [-2**63] * 4])),
             dict(timestamps=torch.tensor([[-2**63, 0, 0, 2**63 - 1], [0] * 4])),
             dict(timestamps=torch.tensor([[5, 4, 3, 2], [0] * 4])),
             dict(timestamps=torch.tensor([[0.0, math.nan, math.inf, -math.inf]] * 2,
                                          dtype=torch.float64)),
             dict(timestamps=torch.tensor([[-1e308, 0.0, 1e308, 1e308]] * 2,
                                          dtype=torch.float64)),
             dict(time_unit=1e-308), dict(time_scale=1e308), dict(time_unit=math.nan),
             dict(time_weight=table.new_full((2, 4, 3), math.nan)),
             dict(time_weight=table[:, :1]), dict(window=10**9), dict(window=-5),
             dict(timestamps=torch.zeros(0, 4, dtype=torch.long), lengths=torch.zeros(0))]
    return [dict(base, **edit, backward=backward) for edit in edits for backward in (False, True)]


def test_direct_native_calls_never_crash():
    cases = risky_cases()
    results = run_isolated("test_time_gap_fuzz:direct_call", cases)
    assert len(results) == len(cases)
    for case, result in zip(cases, results):
        if result["outcome"] == "raised":
            assert result["type"] in ("ValueError", "TypeError"), (case, result)
        else:  # whatever was accepted is memory-safe and finite (the tables are)
            assert result["value"] == "finite" or case["time_weight"].isnan().any(), case
        record(OP, "no-crash")
