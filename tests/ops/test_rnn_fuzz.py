"""Fuzz suite of lstm and gru (tests/fuzzing.py): random valid shapes and options (layers,
directions, bias, projection, batch_first, hx given or None, padded with or without lengths or
packed), native against the reference twin forward and backward; one mutated argument at a time
(dtype, device, rank, stride-0/non-contiguous, NaN/inf, bad lengths and batch_sizes, bad
options) gives the right answer or a ValueError/TypeError naming the argument on both backends;
direct calls of the native layer ops with values the Python checks refuse run in a child
interpreter (a crash fails the test)."""

import math

import hypothesis
import pytest
import torch
from hypothesis import given, strategies as st

from stseq import ops

from case_edits import with_value
from fuzzing import bad_lengths, expect_named_error, record, run_isolated

PER_MUTATION = hypothesis.settings(
    max_examples=max(1, hypothesis.settings().max_examples // 12))
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=2e-5),
             torch.float64: dict(rtol=1e-9, atol=1e-10)}
OPS = {"lstm": ops.lstm, "gru": ops.gru}


@st.composite
def valid_cases(draw, mode=None, min_batch=0, layout=None):
    """(mode, keyword arguments of ops.lstm / ops.gru) of a random valid call."""
    mode = mode or draw(st.sampled_from(("lstm", "gru")))
    seq_len, batch = draw(st.integers(1, 5)), draw(st.integers(min_batch, 4))
    input_size, hidden = draw(st.integers(1, 5)), draw(st.integers(1, 10))
    num_layers, bidirectional = draw(st.integers(1, 2)), draw(st.booleans())
    bias, batch_first = draw(st.booleans()), draw(st.booleans())
    proj = draw(st.integers(0, hidden - 1)) if mode == "lstm" and draw(st.booleans()) else 0
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
    options = dict(num_layers=num_layers, bias=bias, bidirectional=bidirectional)
    module = (torch.nn.LSTM(input_size, hidden, proj_size=proj, **options) if mode == "lstm"
              else torch.nn.GRU(input_size, hidden, **options))
    weights = [w.detach().to(dtype).requires_grad_() for w in module._flat_weights]
    layout = layout or draw(st.sampled_from(("padded", "lengths", "packed")))
    case = dict(weights=weights, **options)
    states = num_layers * (2 if bidirectional else 1)
    out_size = proj or hidden
    x = torch.randn(seq_len, batch, input_size, dtype=dtype)
    if layout == "packed":
        hypothesis.assume(batch >= 1)
        lengths = torch.tensor(sorted(draw(st.lists(st.integers(1, seq_len), min_size=batch,
                                                    max_size=batch)), reverse=True))
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths)
        case.update(input=packed.data.requires_grad_(), batch_sizes=packed.batch_sizes)
    else:
        if batch_first:
            x = x.transpose(0, 1).contiguous()
        case.update(input=x.requires_grad_(), batch_first=batch_first)
        if layout == "lengths":
            case["lengths"] = torch.tensor(draw(st.lists(st.integers(0, seq_len), min_size=batch,
                                                         max_size=batch)), dtype=torch.long)
    if draw(st.booleans()):
        h0 = (torch.randn(states, batch, out_size, dtype=dtype) * 0.5).requires_grad_()
        c0 = (torch.randn(states, batch, hidden, dtype=dtype) * 0.5).requires_grad_()
        case["hx"] = (h0, c0) if mode == "lstm" else h0
    else:
        case["hx"] = None
    return mode, case


def leaves(case):
    hx = case["hx"]
    states = [] if hx is None else list(hx) if isinstance(hx, tuple) else [hx]
    return [t for t in [case["input"], *states, *case["weights"]]
            if isinstance(t, torch.Tensor) and t.requires_grad]


def run(mode, case, backend):
    output, finals = OPS[mode](**case, backend=backend)
    outputs = [output, *(finals if mode == "lstm" else [finals])]
    grads = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape) for o in outputs]
    inputs = leaves(case)
    gradients = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
    return [o.detach() for o in outputs], [torch.zeros_like(t) if g is None else g
                                           for t, g in zip(inputs, gradients)]


def assert_close_to_scale(actual, expected, dtype):
    """Elementwise, or within rtol of the tensor's largest finite magnitude (a weight gradient
    sums B * L terms); NaN where the reference has NaN."""
    tolerance = TOLERANCE[dtype]
    finite = expected[torch.isfinite(expected)]
    scale = finite.abs().max().item() if finite.numel() else 0.0
    torch.testing.assert_close(actual, expected, equal_nan=True, rtol=tolerance["rtol"],
                               atol=max(tolerance["atol"], tolerance["rtol"] * scale))


def assert_native_matches_reference(mode, case):
    outputs, gradients = run(mode, case, "native")
    expected, expected_gradients = run(mode, case, "reference")
    dtype = case["weights"][0].dtype
    for a, e in zip(outputs + gradients, expected + expected_gradients, strict=True):
        assert_close_to_scale(a, e, dtype)
    record(mode, "match")


@given(valid_cases())
def test_valid_inputs_native_matches_reference(mode_case):
    assert_native_matches_reference(*mode_case)


# ---- one mutated argument at a time ----------------------------------------------------------


def _input(change):
    return with_value("input", lambda case: change(case["input"].detach()).requires_grad_())


def _padded(case):
    hypothesis.assume("batch_sizes" not in case)
    return case


def _packed(case):
    hypothesis.assume("batch_sizes" in case)
    return case


def _padded_batch(case):
    x = _padded(case)["input"]
    return x.shape[0 if case.get("batch_first") else 1], x.shape[1 if case.get("batch_first")
                                                              else 0]


def _lengths(make):
    """A new padded case with lengths ``make(B, L)``."""
    return lambda case: dict(_padded(case), lengths=make(*_padded_batch(case)))


def _hx(change):
    def mutate(case):
        hypothesis.assume(case["hx"] is not None)
        hx = case["hx"]
        return dict(case, hx=tuple(change(h.detach()) for h in hx) if isinstance(hx, tuple)
                    else change(hx.detach()))
    return mutate


def _weight(index, change):
    def mutate(case):
        weights = list(case["weights"])
        weights[index] = change(weights[index].detach()).requires_grad_()
        return dict(case, weights=weights)
    return mutate


def _poison(value):
    def change(t):
        t = t.clone()
        if t.numel():
            t.view(-1)[t.numel() // 2] = value
        return t
    return change


# name -> (mutation of a valid case, the argument its error names; None: still valid, the
# answer must match the reference)
MUTATIONS = {
    "input integer": (with_value("input", lambda c: c["input"].detach().long()), "input"),
    "input float16 weights float32": (with_value("input", lambda c: c["input"].detach().half()),
                                      "input"),
    "input rank 4": (with_value("input", lambda c: c["input"].detach()[None]), "input"),
    "input rank 2 padded": (lambda c: dict(_padded(c), input=c["input"].detach()[0]), "input"),
    "input list": (with_value("input", lambda c: c["input"].tolist()), "input"),
    "input meta": (with_value("input", lambda c: c["input"].detach().to("meta")), "input"),
    "input size": (with_value("input", lambda c: torch.cat([c["input"].detach()] * 2, -1)),
                   "input"),
    "input stride-0": (_input(lambda x: x[..., :1].expand_as(x)), None),
    "input non-contiguous": (_input(lambda x: x.transpose(0, -1).contiguous().transpose(0, -1)),
                             None),
    "input nan": (_input(_poison(math.nan)), None),
    "input inf": (_input(_poison(-math.inf)), None),
    "hx shape": (_hx(lambda h: h[:, :0]), "hx"),
    "hx dtype": (_hx(lambda h: h.to(torch.float16)), "hx"),
    "hx meta": (_hx(lambda h: h.to("meta")), "hx"),
    "hx nan": (_hx(lambda h: _poison(math.nan)(h).requires_grad_()), None),
    "hx stride-0": (_hx(lambda h: h[..., :1].expand_as(h).requires_grad_()), None),
    "weights dtype": (_weight(1, lambda w: w.to(torch.float16)), "weights"),
    "weights meta": (_weight(0, lambda w: w.to("meta")), "weights"),
    "weights count": (lambda c: dict(c, weights=c["weights"][:-1]), "weights"),
    "weights tuple of lists": (lambda c: dict(c, weights=[w.tolist() for w in c["weights"]]),
                               "weights"),
    "weight_hh shape": (_weight(1, lambda w: torch.cat([w, w], 1)), "weight_hh_l0"),
    "weights nan": (_weight(1, _poison(math.nan)), None),
    "weights inf": (_weight(0, _poison(math.inf)), None),
    "weights non-contiguous": (_weight(0, lambda w: w.t().contiguous().t()), None),
    **bad_lengths(_lengths),
    "lengths int32": (_lengths(lambda batch, seq_len: torch.full((batch,), seq_len,
                                                                 dtype=torch.int32)), None),
    "batch_sizes increasing": (lambda c: dict(_packed(c), batch_sizes=torch.cat(
        [c["batch_sizes"][:1], c["batch_sizes"] + 1])), "batch_sizes"),
    "batch_sizes int32": (lambda c: dict(_packed(c), batch_sizes=c["batch_sizes"].int()),
                          "batch_sizes"),
    "batch_sizes sum": (lambda c: dict(_packed(c), batch_sizes=c["batch_sizes"] * 2),
                        "batch_sizes"),
    "batch_sizes and lengths": (lambda c: dict(_packed(c), lengths=c["batch_sizes"]), "lengths"),
    "num_layers 0": (with_value("num_layers", 0), "num_layers"),
    "dropout 2": (with_value("dropout", 2.0), "dropout"),
    "algorithm": (with_value("algorithm", "fastest"), "algorithm"),
    "backend": (with_value("backend", "bogus"), "backend"),
}


@pytest.mark.parametrize("mode", list(OPS))
@pytest.mark.parametrize("name", list(MUTATIONS))
@PER_MUTATION
@given(data=st.data())
def test_one_mutated_argument(mode, name, data):
    mutate, argument = MUTATIONS[name]
    layout = ("packed" if name.startswith("batch_sizes") else
              "lengths" if name.startswith("lengths") else None)
    _, case = data.draw(valid_cases(mode, min_batch=1, layout=layout))
    case = mutate(case)
    if argument is None:
        assert_native_matches_reference(mode, case)
        return
    backends = [case.pop("backend")] if "backend" in case else ["native", "reference"]
    for backend in backends:
        expect_named_error(mode, lambda: OPS[mode](**case, backend=backend), argument)


# ---- direct calls of the native layer ops, in a child interpreter ----------------------------


def direct_call(mode, input, h0, weight_ih, weight_hh, batch_sizes, padded, backward):
    """Run by the child of run_isolated: one native layer (and its backward) without the Python
    checks -> "finite" or "non-finite"."""
    if mode == "lstm":
        out, h, c, gates, cells = torch.ops.stseq.lstm(
            input, h0, h0, weight_ih, weight_hh, None, None, None, batch_sizes, padded, False,
            backward, "auto")
        if backward:
            out = torch.ops.stseq.lstm_backward(
                out, h, c, input, h0, h0, weight_ih, weight_hh, None, out, gates, cells,
                batch_sizes, padded, False, False, "auto")[0]
    else:
        out, h, gates = torch.ops.stseq.gru(input, h0, weight_ih, weight_hh, None, None,
                                            batch_sizes, padded, False, backward, "auto")
        if backward:
            out = torch.ops.stseq.gru_backward(
                out, h, input, h0, weight_ih, weight_hh, out, gates, batch_sizes, padded, False,
                False, "auto")[0]
    return "finite" if bool(out.isfinite().all()) else "non-finite"


def risky_cases(mode):
    """Direct-call arguments the Python checks would refuse: the kernels must refuse them with
    a named error or run them in bounds."""
    gates = 4 if mode == "lstm" else 3
    x, h0 = torch.randn(6, 2), torch.zeros(3, 3)
    w_ih, w_hh = torch.randn(gates * 3, 2), torch.randn(gates * 3, 3)
    base = dict(mode=mode, input=x, h0=h0, weight_ih=w_ih, weight_hh=w_hh,
                batch_sizes=torch.tensor([3, 3]), padded=False)
    edits = [dict(batch_sizes=torch.tensor([3, 4])), dict(batch_sizes=torch.tensor([-3, 9])),
             dict(batch_sizes=torch.tensor([2**62, 2**62])), dict(batch_sizes=torch.tensor([3])),
             dict(batch_sizes=torch.tensor([], dtype=torch.long)),
             dict(batch_sizes=torch.tensor([3, 3]), padded=True, h0=torch.zeros(2, 3)),
             dict(batch_sizes=torch.tensor([3, 3]).t()[None, :].t()),
             dict(h0=torch.zeros(2, 3)), dict(h0=torch.zeros(3, 4)), dict(h0=torch.zeros(0, 3)),
             dict(weight_hh=w_hh[:, :2]), dict(weight_ih=w_ih[:-1]), dict(weight_ih=w_ih.t()),
             dict(input=x[:, :1]), dict(input=x.double()), dict(input=x[::2]),
             dict(input=torch.full((6, 2), math.nan)), dict(input=x.expand(2, 6, 2))]
    return [dict(base, **edit, backward=backward) for edit in edits for backward in (False, True)]


@pytest.mark.parametrize("mode", list(OPS))
def test_direct_native_calls_never_crash(mode):
    cases = risky_cases(mode)
    results = run_isolated("test_rnn_fuzz:direct_call", cases)
    assert len(results) == len(cases)
    for case, result in zip(cases, results):
        if result["outcome"] == "raised":
            assert result["type"] in ("ValueError", "TypeError"), (case, result)
        record(mode, "no-crash")
