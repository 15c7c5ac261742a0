"""Fuzz suite of time_decay_attention (tests/fuzzing.py): random valid shapes and options, every
None/non-None combination of the optional inputs, the chunked path and the Triton kernels
(interpreted; few, tiny examples) against the float64 oracle forward and backward, NaN/inf in
q, k, v where the oracle has them; one mutated argument at a time gives the right answer or a
ValueError/TypeError naming the argument; direct calls of the op with values the checks would
refuse run in a child interpreter (a crash fails the test)."""

import math

import hypothesis
import pytest
import torch
from hypothesis import given, strategies as st

from stseq import ops

from case_edits import with_value
from fuzzing import expect_named_error, record, run_isolated
from test_time_decay_attention_masking import assert_matches_oracle

OP = "time_decay_attention"
SETTINGS = hypothesis.settings()
PER_MUTATION = hypothesis.settings(max_examples=max(1, SETTINGS.max_examples // 8))
TRITON_EXAMPLES = hypothesis.settings(max_examples=max(2, SETTINGS.max_examples // 5))
LAYOUTS = ("full", "lengths", "jagged")
START_TIMES = (0, 1_700_000_000, -10**12, 2**40)


@st.composite
def valid_cases(draw, layout=None, dtypes=(torch.float32, torch.float64), max_len=12):
    """(keyword arguments of ops.time_decay_attention, layout): random shapes, layouts and
    options, decay and time_bias each present or not."""
    layout = layout or draw(st.sampled_from(LAYOUTS))
    batch, heads = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    seq_len, head_dim = draw(st.integers(1, max_len)), draw(st.sampled_from((16, 24, 32)))
    dtype = draw(st.sampled_from(dtypes))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    gaps = torch.exp(torch.rand(batch, seq_len, generator=g) * 16) - 1  # 0 .. ~9e6 s
    gaps[torch.rand(batch, seq_len, generator=g) < 0.25] = 0
    timestamps = draw(st.sampled_from(START_TIMES)) + gaps.round().long().cumsum(1)
    if draw(st.booleans()):
        timestamps = timestamps.double()
    row_lengths = torch.tensor(draw(st.lists(st.integers(0, seq_len), min_size=batch,
                                             max_size=batch)))
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, generator=g, dtype=dtype)
               for _ in range(3))
    case = dict(q=q, k=k, v=v, timestamps=timestamps, decay=None,
                causal=draw(st.booleans()), decay_fn=draw(st.sampled_from(("abs", "log1p",
                                                                           "sqrt"))),
                time_unit=draw(st.sampled_from((1.0, 60.0, 3600.0, 86400.0))),
                bucketing=draw(st.sampled_from(("log", "sqrt"))),
                bucket_scale=draw(st.floats(0.5, 5.0)),
                window=draw(st.one_of(st.none(), st.integers(0, 6))),
                scale=draw(st.one_of(st.none(), st.floats(0.05, 1.0))))
    if draw(st.booleans()):
        case["decay"] = torch.randn(heads, generator=g, dtype=dtype)
    if draw(st.booleans()):
        case["time_bias"] = torch.randn(heads, draw(st.integers(1, 6)), generator=g, dtype=dtype)
    if layout == "lengths":
        case["lengths"] = row_lengths
    if layout == "jagged":
        valid = torch.arange(seq_len) < row_lengths[:, None]
        case.update({name: case[name].transpose(1, 2)[valid] for name in ("q", "k", "v")})
        case["timestamps"] = timestamps[valid]
        case["cu_seqlens"] = torch.cat([torch.zeros(1, dtype=torch.long), row_lengths.cumsum(0)])
        if draw(st.booleans()):
            case["max_seqlen"] = int(row_lengths.max()) + draw(st.integers(0, 2))
    for name in ("q", "k", "v", "decay", "time_bias"):
        if case.get(name) is not None:
            case[name].requires_grad_()
    return case, layout


def grad_like(case):
    return torch.randn(case["q"].shape, generator=torch.Generator().manual_seed(1)).to(
        case["q"].dtype)


def assert_match(case, backend):
    assert_matches_oracle(case, backend, grad_like(case))
    record(OP, "match")


@given(valid_cases())
def test_valid_inputs_reference_path_match_oracle(drawn):
    assert_match(drawn[0], "reference")


@TRITON_EXAMPLES
@given(valid_cases(dtypes=(torch.float32,), max_len=9))
def test_valid_inputs_triton_match_oracle(drawn):
    assert_match(drawn[0], "triton")


# ---- one mutated argument at a time ----------------------------------------------------------


def _timestamps(change):
    """A new case with the timestamps changed by ``change(timestamps)``."""
    return with_value("timestamps", lambda case: change(case["timestamps"]))


def _detached(name, change):
    """case[name] replaced by change(case[name] detached)."""
    return with_value(name, lambda case: change(case[name].detach()))


def _token(case):
    """(index of the last real token of the longest sequence, its previous and first tokens)
    in the padded [B, L] or jagged [T] timestamps; skips cases without a sequence of 2."""
    if "cu_seqlens" in case:
        offsets = case["cu_seqlens"]
        sequence = int(torch.argmax(offsets[1:] - offsets[:-1]))
        start, end = int(offsets[sequence]), int(offsets[sequence + 1])
        hypothesis.assume(end - start >= 2)
        return end - 1, end - 2, start
    lengths = case.get("lengths", torch.full((case["q"].shape[0],), case["q"].shape[2]))
    row = int(torch.argmax(lengths))
    hypothesis.assume(int(lengths[row]) >= 2)
    return (row, int(lengths[row]) - 1), (row, int(lengths[row]) - 2), (row, 0)


def _time_edit(edit, dtype=None):
    """Timestamps with ``edit(timestamps, last, previous, first)`` applied to a copy."""
    def mutate(case):
        last, previous, first = _token(case)
        timestamps = case["timestamps"].to(dtype or case["timestamps"].dtype).clone()
        edit(timestamps, last, previous, first)
        return dict(case, timestamps=timestamps)
    return mutate


def _decrease(t, last, previous, first):
    t[last] = t[previous] - 1


def _overflow(t, last, previous, first):
    t[first], t[last] = -2**62, 2**62 + 1  # non-decreasing while the sequence is [-2^62, ...]
    t[previous] = max(int(t[previous]), -2**62)


def _poison(name, value):
    """A NaN/inf in one element of q, k or v: valid input, answered where the oracle says. In
    float64, so that no probability underflows to 0 here but not in the oracle (0 * inf is NaN,
    tiny * inf is inf)."""
    def mutate(case):
        hypothesis.assume(case[name].numel() > 0)
        case = {key: value.detach().double().requires_grad_()
                if key in ("q", "k", "v", "decay", "time_bias") and value is not None else value
                for key, value in case.items()}
        tensor = case[name].detach().clone()
        tensor.view(-1)[tensor.numel() // 2] = value
        return dict(case, **{name: tensor.requires_grad_()})
    return mutate


def _heads(case):
    return case["q"].shape[1]  # [B, H, L, D] or [T, H, D]


# name -> (mutation of a valid case, text its error must contain (None: still valid, the answer
# must match the oracle)[, the layout it needs: "padded" or "jagged"])
MUTATIONS = {
    "q integer": (_detached("q", lambda q: q.long()), "q must be a floating-point tensor"),
    "q list": (_detached("q", lambda q: q.tolist()), "q must be a torch.Tensor"),
    "q rank": (_detached("q", lambda q: q[None]), "q must have shape"),
    "q meta": (_detached("q", lambda q: q.to("meta")), "q is on meta"),
    "k dtype": (_detached("k", lambda k: k.to(torch.float16)), "but k is torch.float16"),
    "v shape": (_detached("v", lambda v: v[..., :8]), "v must have the shape of q"),
    "head dim 8": (lambda c: {**c, **{n: c[n].detach()[..., :8] for n in "qkv"}},
                   "head dim D = q.shape[-1]"),
    "q stride-0": (_detached("q", lambda q: q[..., :1, :].expand_as(q).requires_grad_()),
                   None),
    "k non-contiguous": (_detached("k", lambda k: k.transpose(-1, -2).contiguous().transpose(
        -1, -2).requires_grad_()), None),
    "q nan": (_poison("q", math.nan), None),
    "k inf": (_poison("k", math.inf), None),
    "v nan": (_poison("v", math.nan), None),
    "timestamps float32": (_timestamps(lambda t: t.float()), "timestamps"),
    "timestamps shape": (with_value("timestamps", lambda c: torch.cat(
        [c["timestamps"], c["timestamps"].new_zeros(c["timestamps"].shape[:-1] + (1,))], -1)),
                         "timestamps"),
    "timestamps decreasing": (_time_edit(_decrease), "timestamps"),
    "timestamps nan": (_time_edit(lambda t, last, *_: t.__setitem__(last, math.nan),
                                  torch.float64), "timestamps"),
    "timestamps span overflow": (_time_edit(_overflow, torch.int64), "timestamps"),
    "timestamps beyond 2^53": (_time_edit(lambda t, last, *_: t.__setitem__(last, 2.0**60),
                                          torch.float64), "timestamps"),
    "decay heads": (with_value("decay", lambda c: torch.zeros(_heads(c) + 1)), "decay"),
    "decay integer": (with_value("decay", lambda c: torch.zeros(_heads(c), dtype=torch.long)),
                      "decay"),
    "time_bias heads": (with_value("time_bias", lambda c: torch.zeros(_heads(c) + 1, 3)),
                        "time_bias"),
    "time_bias no buckets": (with_value("time_bias", lambda c: torch.zeros(_heads(c), 0)),
                             "time_bias"),
    "lengths negative": (with_value("lengths", lambda c: torch.full((c["q"].shape[0],), -1)),
                         "lengths", "padded"),
    "lengths past L": (with_value("lengths", lambda c: torch.full((c["q"].shape[0],),
                                                                  c["q"].shape[2] + 1)),
                       "lengths", "padded"),
    "lengths float": (with_value("lengths", lambda c: torch.ones(c["q"].shape[0])), "lengths",
                      "padded"),
    "lengths meta": (with_value("lengths", lambda c: torch.ones(
        c["q"].shape[0], dtype=torch.long, device="meta")), "lengths", "padded"),
    "lengths with cu_seqlens": (with_value("lengths", torch.ones(1, dtype=torch.long)),
                                "lengths", "jagged"),
    "max_seqlen padded": (with_value("max_seqlen", 4), "max_seqlen", "padded"),
    "cu_seqlens start": (with_value("cu_seqlens", lambda c: c["cu_seqlens"] + 1), "cu_seqlens",
                         "jagged"),
    "cu_seqlens past T": (with_value("cu_seqlens", lambda c: c["cu_seqlens"].index_fill(
        0, torch.tensor([1]), c["q"].shape[0] + 1)), "cu_seqlens", "jagged"),
    "cu_seqlens float": (with_value("cu_seqlens", lambda c: c["cu_seqlens"].double()),
                         "cu_seqlens", "jagged"),
    "max_seqlen short": (lambda c: dict(c, max_seqlen=0) if c["q"].shape[0]
                         else hypothesis.reject(), "max_seqlen", "jagged"),
    "window negative": (with_value("window", -1), "window"),
    "scale zero": (with_value("scale", 0.0), "scale"),
    "time_unit nan": (with_value("time_unit", math.nan), "time_unit"),
    "bucket_scale inf": (with_value("bucket_scale", math.inf), "bucket_scale"),
    "decay_fn": (with_value("decay_fn", "exp"), "decay_fn"),
    "bucketing": (with_value("bucketing", "linear"), "bucketing"),
    "backend": (with_value("backend", "bogus"), "backend"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
@PER_MUTATION
@given(data=st.data())
def test_one_mutated_argument(name, data):
    mutate, message, *layout = MUTATIONS[name]
    layouts = {"padded": ("full", "lengths"), "jagged": ("jagged",)}[layout[0]] if layout \
        else LAYOUTS
    case = mutate(data.draw(valid_cases(layout=data.draw(st.sampled_from(layouts))))[0])
    if message is None:
        assert_match(case, "reference")
    else:
        expect_named_error(OP, lambda: ops.time_decay_attention(**case), message)


# ---- direct calls of the op, in a child interpreter -----------------------------------------


def direct_call(implementation, lengths, cu_seqlens, max_seqlen, window, times, heads_in_table,
                causal):
    """Run by the child of run_isolated: the registered op without the Python checks on a small
    case (padded [2, 2, 8, 16], or jagged [T, 2, 16] with cu_seqlens) -> "finite" or not."""
    g = torch.Generator().manual_seed(0)
    shape = (2, 2, 8, 16) if cu_seqlens is None else (int(max(cu_seqlens.max(), 1)), 2, 16)
    q, k, v = (torch.randn(shape, generator=g) for _ in range(3))
    hi = times.expand(shape[0], 8).contiguous() if cu_seqlens is None else times[:1].expand(
        shape[0]).contiguous()
    out, lse = torch.ops.stseq.time_decay_attention(
        q, k, v, hi, torch.zeros_like(hi), torch.ones(2), torch.zeros(heads_in_table, 5),
        lengths, cu_seqlens, max_seqlen, causal, 0.25, "log1p", "log", 2.0, window,
        implementation)
    grads = torch.ops.stseq.time_decay_attention_backward(
        torch.ones_like(out), q, k, v, out, lse, hi, torch.zeros_like(hi), torch.ones(2),
        torch.zeros(heads_in_table, 5), lengths, cu_seqlens, max_seqlen, causal, 0.25, "log1p",
        "log", 2.0, window, implementation)
    return "finite" if all(bool(x.isfinite().all()) for x in (out, *grads)) else "non-finite"


def risky_cases():
    times = torch.arange(8.0) * 3
    base = dict(lengths=None, cu_seqlens=None, max_seqlen=8, window=-1, times=times,
                heads_in_table=2, causal=True)
    edits = [dict(lengths=torch.tensor([100, -7])), dict(lengths=torch.tensor([2**40, 8])),
             dict(cu_seqlens=torch.tensor([0, 9, 3, 12]), max_seqlen=9),
             dict(cu_seqlens=torch.tensor([5, 2, 40]), max_seqlen=3),
             dict(cu_seqlens=torch.tensor([0, 6, 12]), max_seqlen=2),
             dict(cu_seqlens=torch.tensor([0, 6, 12]), max_seqlen=2**40),
             dict(window=2**31 - 1, causal=False), dict(window=2**62, causal=False),
             dict(window=0),
             dict(times=torch.tensor([0.0, math.nan, math.inf, -math.inf] * 2)),
             dict(times=torch.full((8,), 3e38))]
    return [dict(base, **edit, implementation=implementation)
            for edit in edits for implementation in ("reference", "triton")]


def test_direct_op_calls_never_crash():
    cases = risky_cases()
    results = run_isolated("test_time_decay_attention_fuzz:direct_call", cases)
    assert len(results) == len(cases)
    for case, result in zip(cases, results):
        assert result["outcome"] == "returned" or result["type"] in (
            "ValueError", "TypeError", "IndexError", "RuntimeError"), (case, result)
        if result["outcome"] == "returned" and case["times"].isfinite().all():
            assert result["value"] == "finite", case
        record(OP, "no-crash")
