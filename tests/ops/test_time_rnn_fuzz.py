"""Fuzz suite of time_lstm (variants 1-3), tlstm and time_decay_gru (tests/fuzzing.py): random
valid shapes and options (lengths given or None, reverse, both activations, empty batches and
sequences), native against the reference twin forward and backward; one mutated argument at a
time (dtype, device, rank, stride-0/non-contiguous, NaN/inf, negative or non-finite gaps, bad
lengths, decreasing or overflowing timestamps where the gaps come from) gives the right answer
or a ValueError/TypeError naming the argument on both backends; direct calls of the native ops
with values the Python checks refuse run in a child interpreter (a crash fails the test)."""

import math

import hypothesis
import pytest
import torch
from hypothesis import given, strategies as st

import stseq
from stseq import ops

from fuzzing import bad_lengths, expect_named_error, record, run_isolated
from test_time_rnn import CELLS, random_case

PER_MUTATION = hypothesis.settings(
    max_examples=max(1, hypothesis.settings().max_examples // 12))
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=2e-5),
             torch.float64: dict(rtol=1e-9, atol=1e-10)}
OPS = ("time_lstm", "tlstm", "time_decay_gru")
# Argument names of each op's tensors, in order.
NAMES = {"time_lstm": ["input", "dt", "h0", "c0", "weight_ih", "weight_hh", "bias", "peephole",
                       "time_weight"],
         "tlstm": ["input", "dt", "h0", "c0", "weight_ih", "weight_hh", "bias", "decay_weight",
                   "decay_bias"],
         "time_decay_gru": ["input", "dt", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh",
                            "decay_weight", "decay_bias"]}


@st.composite
def valid_cases(draw, op=None, min_batch=0, min_len=0, lengths=None):
    """(op, tensors, keyword arguments) of a random valid call."""
    op = op or draw(st.sampled_from(OPS))
    options = draw(st.sampled_from([o for name, o in CELLS if name == op]))
    batch, seq_len = draw(st.integers(min_batch, 4)), draw(st.integers(min_len, 5))
    if lengths is None:
        lengths = batch >= 1 and draw(st.booleans())
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    tensors, kwargs = random_case(op, options, seq_len=seq_len, batch=batch,
                                  input_size=draw(st.integers(1, 4)),
                                  hidden=draw(st.integers(1, 10)), lengths=lengths, dtype=dtype,
                                  seed=draw(st.integers(0, 2**31 - 1)))
    kwargs["reverse"] = draw(st.booleans())
    return op, tensors, kwargs


def run(op, tensors, kwargs, backend):
    outputs = getattr(ops, op)(*tensors, **kwargs, backend=backend)
    grads = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape) for o in outputs]
    inputs = [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]
    reached = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]  # none when L = 0
    gradients = torch.autograd.grad([o for o, _ in reached], inputs, [g for _, g in reached],
                                    allow_unused=True) if reached else [None] * len(inputs)
    return [o.detach() for o in outputs], [torch.zeros_like(t) if g is None else g
                                           for t, g in zip(inputs, gradients)]


def assert_close_to_scale(actual, expected, dtype):
    """Elementwise, or within rtol of the tensor's largest finite magnitude (a weight gradient
    sums B * L terms); NaN where the reference has NaN."""
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(actual, expected, equal_nan=True, rtol=tolerance["rtol"],
                               atol=max(tolerance["atol"], tolerance["rtol"] * scale))


def assert_native_matches_reference(op, tensors, kwargs):
    outputs, gradients = run(op, tensors, kwargs, "native")
    expected, expected_gradients = run(op, tensors, kwargs, "reference")
    for a, e in zip(outputs + gradients, expected + expected_gradients, strict=True):
        assert_close_to_scale(a, e, tensors[0].dtype)
    record(op, "match")


@given(valid_cases())
def test_valid_inputs_native_matches_reference(case):
    assert_native_matches_reference(*case)


# ---- one mutated argument at a time ----------------------------------------------------------


def _tensor(name, change, grad=True):
    """Mutation of the tensor argument ``name``: change(tensor detached)."""
    def mutate(op, tensors, kwargs):
        tensors = list(tensors)
        index = NAMES[op].index(name)
        value = change(tensors[index].detach())
        if grad and isinstance(value, torch.Tensor) and value.is_floating_point() and (
                name != "dt"):
            value = value.requires_grad_()
        tensors[index] = value
        return tensors, kwargs
    return mutate


def _last_weight(change):
    """Mutation of each op's last weight (time_weight or decay_bias)."""
    def mutate(op, tensors, kwargs):
        return _tensor(NAMES[op][-1], change, grad=False)(op, tensors, kwargs)
    return mutate


def _option(name, value):
    return lambda op, tensors, kwargs: (tensors, dict(kwargs, **{name: value}))


def _lengths(make):
    def mutate(op, tensors, kwargs):
        seq_len, batch = tensors[0].shape[:2]
        return tensors, dict(kwargs, lengths=make(batch, seq_len))
    return mutate


def _poison(value):
    def change(t):
        t = t.clone()
        t.view(-1)[t.numel() // 2] = value
        return t
    return change


def _poison_gap(value):
    """The first gap of the last row (random_case gives it the full length) set to value."""
    def change(t):
        t = t.clone()
        t[0, -1] = value
        return t
    return change


MUTATIONS = {
    "input integer": (_tensor("input", lambda x: x.long()), "input"),
    "input rank 2": (_tensor("input", lambda x: x[0]), "input"),
    "input meta": (_tensor("input", lambda x: x.to("meta"), grad=False), "input"),
    "input list": (_tensor("input", lambda x: x.tolist()), "input"),
    "input nan": (_tensor("input", _poison(math.nan)), None),
    "input inf": (_tensor("input", _poison(-math.inf)), None),
    "input stride-0": (_tensor("input", lambda x: x[..., :1].expand_as(x)), None),
    "input non-contiguous": (_tensor("input", lambda x: x.transpose(0, 1).contiguous(
        ).transpose(0, 1)), None),
    "dt integer": (_tensor("dt", lambda t: t.long()), "dt"),
    "dt rank 3": (_tensor("dt", lambda t: t[..., None]), "dt"),
    "dt meta": (_tensor("dt", lambda t: t.to("meta")), "dt"),
    "dt negative": (_tensor("dt", _poison_gap(-1.0)), "dt"),
    "dt nan": (_tensor("dt", _poison_gap(math.nan)), "dt"),
    "dt inf": (_tensor("dt", _poison_gap(math.inf)), "dt"),
    "dt float64 other dtype": (_tensor("dt", lambda t: t.double() * 1e3), None),
    "dt float16": (_tensor("dt", lambda t: t.half()), None),
    "dt stride-0": (_tensor("dt", lambda t: t[:1].expand_as(t)), None),
    "h0 shape": (_tensor("h0", lambda h: h[:, :0]), "h0"),
    "h0 dtype": (_tensor("h0", lambda h: h.half()), "h0"),
    "h0 nan": (_tensor("h0", _poison(math.nan)), None),
    "h0 non-contiguous": (_tensor("h0", lambda h: h.t().contiguous().t()), None),
    "weight_ih shape": (_tensor("weight_ih", lambda w: w[:-1]), "weight_ih"),
    "weight_hh dtype": (_tensor("weight_hh", lambda w: w.half()), "weight_hh"),
    "weight_hh meta": (_tensor("weight_hh", lambda w: w.to("meta"), grad=False), "weight_hh"),
    "weight_hh nan": (_tensor("weight_hh", _poison(math.nan)), None),
    "weight_ih inf": (_tensor("weight_ih", _poison(math.inf)), None),
    "weight_ih stride-0": (_tensor("weight_ih", lambda w: w[:1].expand_as(w)), None),
    "last weight rank": (_last_weight(lambda w: w[None]), "{last}"),
    "last weight dtype": (_last_weight(lambda w: w.double() if w.dtype == torch.float32
                                       else w.float()), "{last}"),
    **bad_lengths(_lengths),
    "lengths increasing int32": (_lengths(lambda batch, seq_len: torch.arange(
        batch, dtype=torch.int32).clamp(max=seq_len)), None),
    "reverse": (_option("reverse", True), None),
    "backend": (_option("backend", "bogus"), "backend"),
}


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", list(MUTATIONS))
@PER_MUTATION
@given(data=st.data())
def test_one_mutated_argument(op, name, data):
    mutate, argument = MUTATIONS[name]
    _, tensors, kwargs = data.draw(valid_cases(op, min_batch=1, min_len=1, lengths=True))
    tensors, kwargs = mutate(op, tensors, kwargs)
    if argument is None:
        assert_native_matches_reference(op, tensors, kwargs)
        return
    argument = argument.format(last=NAMES[op][-1])
    backends = [kwargs.pop("backend")] if "backend" in kwargs else ["native", "reference"]
    for backend in backends:
        expect_named_error(op, lambda: getattr(ops, op)(*tensors, **kwargs, backend=backend),
                           argument)


@pytest.mark.parametrize("op,option,value,error", [
    ("time_lstm", "variant", 4, ValueError), ("time_lstm", "variant", "1", ValueError),
    ("time_lstm", "time_activation", "relu", ValueError),
    ("tlstm", "short_term_activation", "softplus", ValueError),
    ("tlstm", "variant", 1, TypeError), ("time_decay_gru", "time_activation", "tanh", TypeError)])
def test_bad_options_are_named(op, option, value, error):
    options = dict(variant=1) if op == "time_lstm" else {}
    tensors, kwargs = random_case(op, options, lengths=False)
    with pytest.raises(error, match=option):
        getattr(ops, op)(*tensors, **dict(kwargs, **{option: value}))
    record(op, "named-error")


@pytest.mark.parametrize("change,where", [
    (lambda t: t.index_fill(1, torch.tensor([2]), 0), "row 0 decreases at position 2"),
    (lambda t: torch.cat([t[:, :1] * 0 - 2**62, t[:, 1:] - t[:, 1:2] + 2**62 + 1], 1),
     "span at most 2^63 - 1 s"),
])
def test_decreasing_or_overflowing_timestamps_are_named(change, where):
    # Where the gaps come from: stseq.nn.time_deltas turns timestamps into dt.
    timestamps = torch.tensor([[1_700_000_000, 1_700_000_060, 1_700_000_600, 1_700_003_600]])
    with pytest.raises(ValueError, match="timestamps") as info:
        stseq.nn.time_deltas(change(timestamps))
    assert where in str(info.value)
    record("time_lstm", "named-error")


# ---- direct calls of the native ops, in a child interpreter ----------------------------------


def direct_call(op, tensors, lengths, backward):
    """Run by the child of run_isolated: the native op (and its backward) without the Python
    checks -> "finite" or "non-finite"."""
    if op == "time_decay_gru":
        x, dt, h0, *weights = tensors
        out = torch.ops.stseq.time_decay_gru(x, dt, h0, lengths, *weights, False, backward)
        if backward:
            out = torch.ops.stseq.time_decay_gru_backward(
                out[0], out[1], x, dt, lengths, weights[0], weights[1], weights[4], weights[5],
                out[2], out[3], out[4], False)
    else:
        x, dt, h0, c0, *weights = tensors
        extra = (1, "tanh") if op == "time_lstm" else ("sigmoid",)
        out = getattr(torch.ops.stseq, op)(x, dt, h0, c0, lengths, *weights, *extra, False,
                                           backward)
        if backward:
            out = getattr(torch.ops.stseq, f"{op}_backward")(
                out[0], out[1], out[2], x, dt, lengths, weights[0], weights[1], weights[3],
                weights[4], out[3], out[4], out[5], *extra, False)
    return "finite" if all(bool(o.isfinite().all()) for o in out) else "non-finite"


def risky_cases(op):
    options = dict(variant=1, time_activation="tanh") if op == "time_lstm" else (
        dict(short_term_activation="sigmoid") if op == "tlstm" else {})
    tensors, _ = random_case(op, options, seq_len=4, batch=3, lengths=False, dtype=torch.float32)
    tensors = [t.detach() for t in tensors]

    def edit(index, value):
        changed = list(tensors)
        changed[index] = value
        return changed

    cases = [(tensors, torch.tensor([4, 9, -3])), (tensors, torch.tensor([2**62, 0, 1])),
             (tensors, torch.tensor([1, 2, 3])), (tensors, torch.tensor([4, 4])),
             (edit(1, torch.full((4, 3), -1e30)), None),
             (edit(1, torch.full((4, 3), math.nan)), None),
             (edit(1, tensors[1][:2]), None), (edit(0, tensors[0][:, :2]), None),
             (edit(2, tensors[2][:, :1]), None), (edit(0, tensors[0].double()), None),
             (edit(len(tensors) - 1, tensors[-1][:1]), None),
             (edit(0, torch.zeros(0, 3, tensors[0].shape[2])), None)]
    return [dict(op=op, tensors=t, lengths=n, backward=b) for t, n in cases for b in (False, True)]


@pytest.mark.parametrize("op", OPS)
def test_direct_native_calls_never_crash(op):
    cases = risky_cases(op)
    results = run_isolated("test_time_rnn_fuzz:direct_call", cases)
    assert len(results) == len(cases)
    for case, result in zip(cases, results):
        if result["outcome"] == "raised":
            assert result["type"] in ("ValueError", "TypeError"), (case, result)
        record(op, "no-crash")
