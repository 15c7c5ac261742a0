"""time_decay_attention: the Triton kernels (through the interpreter on CPU) and the chunked
CPU path (stseq.cpu.attention) against the float64 oracle, forward and every gradient; the oracle against an
independent SDPA with a materialised bias; exact values at epoch-scale timestamps; padding;
gradcheck, opcheck, determinism and every bad input."""

import importlib
import math

import pytest
import torch

import stseq
from stseq import ops, reference
from stseq.bench.time_decay_attention import sdpa_bias
from stseq.ops.attention import relative_times

from case_edits import beyond_float64_seconds, overflowing_span, replace, set_element

# The modules themselves (their packages re-export a function of the same name).
CHUNKED = importlib.import_module("stseq.cpu.attention")
OP_MODULE = importlib.import_module("stseq.ops.attention")

EPOCH = 1_700_000_000
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2,
             torch.float16: 1e-2}


def random_case(batch=3, heads=2, seq_len=21, head_dim=16, *, jagged=False, lengths=True,
                timestamp_dtype=torch.int64, table=False, dtype=torch.float32, device="cpu",
                seed=0, row_lengths=None):
    """Keyword arguments of ops.time_decay_attention: epoch-second timestamps with repeated
    events and gaps of seconds to days, a row of length 0, one of length 1 and a full row (or
    the given ``row_lengths``); ``jagged`` gives the same sequences as [T, H, D] with
    cu_seqlens."""
    g = torch.Generator().manual_seed(seed)
    gaps = torch.exp(torch.rand(batch, seq_len, generator=g) * 12) - 1  # 0 .. ~1.6e5 s
    gaps[torch.rand(batch, seq_len, generator=g) < 0.2] = 0
    if timestamp_dtype == torch.int64:
        gaps = gaps.round().long()
    timestamps = (EPOCH + gaps.cumsum(1)).to(timestamp_dtype)
    if row_lengths is None:
        row_lengths = torch.randint(1, seq_len + 1, (batch,), generator=g)
        row_lengths[-1] = seq_len
        if batch > 2:
            row_lengths[0], row_lengths[1] = 0, 1
    else:
        row_lengths = torch.tensor(row_lengths)
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, generator=g) for _ in range(3))
    case = dict(q=q, k=k, v=v, timestamps=timestamps,
                decay=torch.randn(heads, generator=g), time_unit=3600.0)
    if table:
        case["time_bias"] = torch.randn(heads, 11, generator=g)
    if jagged:
        valid = torch.arange(seq_len) < row_lengths[:, None]
        case.update({name: case[name].transpose(1, 2)[valid] for name in ("q", "k", "v")})
        case["timestamps"] = timestamps[valid]
        case["cu_seqlens"] = torch.cat([torch.zeros(1, dtype=torch.long), row_lengths.cumsum(0)])
        case["max_seqlen"] = int(row_lengths.max())
    elif lengths:
        case["lengths"] = row_lengths
    parameter_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    for name in ("q", "k", "v", "decay", "time_bias"):
        if name in case:
            cast = dtype if name in ("q", "k", "v") else parameter_dtype
            case[name] = case[name].to(device, cast).requires_grad_()
    return {name: value.to(device) if isinstance(value, torch.Tensor) and not value.requires_grad
            else value for name, value in case.items()}


def parameters(case):
    return [case[name] for name in ("q", "k", "v", "decay", "time_bias") if name in case]


def run(case, backend, grad_out=None, **options):
    """(out, gradients of q, k, v, decay[, time_bias], grad_out) of one backend."""
    out = ops.time_decay_attention(**case, **options, backend=backend)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out)
    grads = torch.autograd.grad(out, parameters(case), grad_outputs=grad_out)
    return out, grads, grad_out


def run_oracle(case, grad_out, **options):
    """The oracle in float64 on float64 copies -> (out, gradients)."""
    twin = {name: value.detach().double().requires_grad_()
            if name in ("q", "k", "v", "decay", "time_bias") else value
            for name, value in case.items()}
    out = reference.time_decay_attention(**twin, **options)
    return out, torch.autograd.grad(out, parameters(twin), grad_outputs=grad_out.double())


def assert_close_to_scale(actual, expected, dtype):
    """Within ``TOLERANCE[dtype]`` of the largest magnitude of ``expected`` (gradients sum many
    terms, so a cancelled element is only as accurate as the terms)."""
    scale = max(expected.abs().max().item(), 1e-30)
    error = (actual.double() - expected.double()).abs().max().item() / scale
    assert error <= TOLERANCE[dtype], f"relative error {error:.2e} > {TOLERANCE[dtype]:.0e}"


def assert_parity(case, backend, dtype=torch.float32, **options):
    out, grads, grad_out = run(case, backend, **options)
    expected, expected_grads = run_oracle(case, grad_out.float(), **options)
    assert out.dtype == case["q"].dtype
    assert_close_to_scale(out, expected, dtype)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert_close_to_scale(grad, expected_grad, dtype)


# Each Triton case costs seconds in the interpreter: together they cover both layouts, causal
# and not, every decay_fn, both bucketings, a window and a head dim that is not a power of two.
TRITON_CASES = {
    "padded-causal-abs": (dict(), dict(causal=True, decay_fn="abs")),
    "padded-log1p-table-window": (dict(table=True, head_dim=24),
                                  dict(causal=False, decay_fn="log1p", window=6,
                                       bucket_scale=2.5)),
    "padded-causal-sqrt-sqrtbuckets": (dict(table=True, lengths=False),
                                       dict(causal=True, decay_fn="sqrt", bucketing="sqrt",
                                            bucket_scale=1.5)),
    "jagged-causal-log1p-window": (dict(jagged=True),
                                   dict(causal=True, decay_fn="log1p", window=9)),
    "jagged-sqrt-table": (dict(jagged=True, table=True, timestamp_dtype=torch.float64),
                          dict(causal=False, decay_fn="sqrt", bucket_scale=2.5)),
}


@pytest.mark.parametrize("name", list(TRITON_CASES))
def test_triton_matches_oracle(name):
    shape, options = TRITON_CASES[name]
    assert_parity(random_case(**shape), "triton", **options)


OPTIONS = [dict(causal=causal, decay_fn=decay_fn, window=window)
           for causal in (True, False) for decay_fn in ("abs", "log1p", "sqrt")
           for window in (None, 4)]


@pytest.mark.parametrize("jagged", [False, True], ids=["padded", "jagged"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(map(str, o.values())))
def test_reference_path_matches_oracle_float64(jagged, options, monkeypatch):
    # Small steps, so that rows, query chunks and key ranges are all split.
    monkeypatch.setattr(CHUNKED, "TILE_ELEMENTS", 2048)
    monkeypatch.setattr(CHUNKED, "QUERY_CHUNK", 8)
    case = random_case(5, 3, 23, 16, jagged=jagged, table=True, dtype=torch.float64)
    assert_parity(case, "reference", torch.float64, bucketing="log", bucket_scale=2.5,
                  **options)


@pytest.mark.parametrize("jagged", [False, True], ids=["padded", "jagged"])
@pytest.mark.parametrize("causal,decay_fn", [(True, "sqrt"), (False, "abs")])
def test_reference_path_groups_of_very_unequal_lengths_match_oracle(jagged, causal, decay_fn,
                                                                     monkeypatch):
    # With a small padding budget the sequences fall into several groups of similar length,
    # each padded only to its longest (some with padding, one of a single sequence when not
    # causal), taken in query chunks that pass the shorter rows' ends.
    monkeypatch.setattr(CHUNKED, "GROUP_PADDING", 300)
    monkeypatch.setattr(CHUNKED, "QUERY_CHUNK", 8)
    row_lengths = [40, 1, 3, 38, 2, 17, 40, 16, 0]
    groups = CHUNKED._length_groups(row_lengths, 2, causal)
    assert len(groups) >= 3 and max(map(len, groups)) >= 2
    case = random_case(len(row_lengths), 2, 40, 16, jagged=jagged, table=True,
                       dtype=torch.float64, row_lengths=row_lengths)
    assert_parity(case, "reference", torch.float64, causal=causal, decay_fn=decay_fn,
                  bucket_scale=2.5)


def test_reference_path_float32_and_half_inputs():
    case = random_case(4, 2, 40, 32, table=True)
    assert_parity(case, "reference", torch.float32, causal=True)
    half = random_case(4, 2, 40, 32, dtype=torch.bfloat16)
    assert_parity(half, "reference", torch.bfloat16)


@pytest.mark.parametrize("causal", [True, False])
def test_oracle_matches_sdpa_with_materialised_bias(causal):
    case = random_case(4, 2, 21, 16, table=True, dtype=torch.float64)
    case["time_bias"] = case["time_bias"].detach().double().requires_grad_()
    case["decay"] = case["decay"].detach().double().requires_grad_()
    case["time_unit"] = 86400.0
    expected = sdpa_bias(dict(case, causal=causal, decay_fn="log1p"))
    out = reference.time_decay_attention(**case, causal=causal, decay_fn="log1p")
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    grads = torch.autograd.grad(out.sum(), parameters(case))
    expected_grads = torch.autograd.grad(expected.sum(), parameters(case))
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", ["triton", "reference"])
@pytest.mark.parametrize("timestamp_dtype", [torch.int64, torch.float64], ids=str)
def test_epoch_timestamps_resolve_one_second(backend, timestamp_dtype):
    # q = k = 0: the weights are softmax(-rate * gap) exactly. Gaps of 1 and 2 s at ~1.7e9 s
    # would be rounded to 0 or 128 s by float32 timestamps.
    timestamps = (EPOCH + torch.tensor([[0, 1, 3, 3]])).to(timestamp_dtype)
    q = torch.zeros(1, 1, 4, 16)
    v = torch.eye(4, 16)[None, None]
    decay = torch.tensor([math.log(math.expm1(0.5))])  # rate 0.5 per second
    out = ops.time_decay_attention(q, q, v, timestamps, decay, backend=backend)
    gaps = torch.tensor([3.0, 2.0, 0.0, 0.0])  # from the last event
    expected = torch.softmax(-0.5 * gaps, 0)
    torch.testing.assert_close(out[0, 0, 3, :4], expected, rtol=1e-6, atol=1e-7)


def test_relative_times_split_keeps_gaps_exact():
    # 3e9 s after the first event: float32 resolves only 256 s there, hi + lo keeps 1 s.
    timestamps = torch.tensor([[0, 3_000_000_000, 3_000_000_001]])
    hi, lo = relative_times(timestamps, 1.0)
    gap = (hi[0, 2] - hi[0, 1]) + (lo[0, 2] - lo[0, 1])
    assert gap.item() == 1.0 and hi.dtype == lo.dtype == torch.float32


@pytest.mark.parametrize("backend", ["triton", "reference"])
def test_padding_is_zero_and_ignored(backend):
    case = random_case(3, 2, 19, 16, table=True)
    clean = run(case, backend)
    # NaN in every padded position of every input changes nothing.
    valid = torch.arange(19) < case["lengths"][:, None]
    dirty = dict(case)
    for name in ("q", "k", "v"):
        dirty[name] = torch.where(valid[:, None, :, None], case[name].detach(),
                                  math.nan).requires_grad_()
    dirty["timestamps"] = torch.where(valid, case["timestamps"], -7)
    out, grads, _ = run(dirty, backend, clean[2])
    assert out[~valid[:, None, :, None].expand_as(out)].abs().sum() == 0
    torch.testing.assert_close(out, clean[0], rtol=0, atol=0)
    for grad, clean_grad in zip(grads, clean[1]):
        torch.testing.assert_close(grad, clean_grad, rtol=0, atol=0)


@pytest.mark.parametrize("jagged", [False, True], ids=["padded", "jagged"])
def test_empty_inputs(jagged):
    if jagged:
        q = torch.zeros(0, 2, 16, requires_grad=True)
        extra = dict(timestamps=torch.zeros(0, dtype=torch.long),
                     cu_seqlens=torch.tensor([0, 0]), max_seqlen=0)
    else:
        q = torch.zeros(2, 2, 5, 16, requires_grad=True)
        extra = dict(timestamps=torch.zeros(2, 5, dtype=torch.long),
                     lengths=torch.tensor([0, 0]))
    decay = torch.zeros(2, requires_grad=True)
    for backend in ("triton", "reference"):
        out = ops.time_decay_attention(q, q, q, decay=decay, backend=backend, **extra)
        out.sum().backward()
        assert out.shape == q.shape and out.abs().sum() == 0 and decay.grad.abs().sum() == 0


def test_gradcheck_oracle():
    case = random_case(2, 1, 5, 4, table=True, dtype=torch.float64)
    names = ("q", "k", "v", "decay", "time_bias")
    inputs = tuple(case[name].detach().double().requires_grad_() for name in names)
    rest = {name: value for name, value in case.items() if name not in names}

    def fn(q, k, v, decay, time_bias):
        return reference.time_decay_attention(q, k, v, decay=decay, time_bias=time_bias,
                                              bucket_scale=1.0, **rest)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("jagged", [False, True], ids=["padded", "jagged"])
def test_gradcheck_reference_path(jagged):
    # Fast mode (random projections of the Jacobian): D >= 16 makes the full one slow.
    case = random_case(3, 2, 6, 16, jagged=jagged, table=True, dtype=torch.float64)
    names = ("q", "k", "v", "decay", "time_bias")
    inputs = tuple(case[name].detach().double().requires_grad_() for name in names)
    rest = {name: value for name, value in case.items() if name not in names}

    def fn(q, k, v, decay, time_bias):
        return ops.time_decay_attention(q, k, v, decay=decay, time_bias=time_bias,
                                        bucket_scale=1.0, window=3, backend="reference", **rest)

    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def op_arguments(case, implementation, causal=True, window=-1):
    hi, lo = relative_times(case["timestamps"], case["time_unit"], lengths=case.get("lengths"),
                            cu_seqlens=case.get("cu_seqlens"))
    rate = torch.nn.functional.softplus(case["decay"].detach())
    seq_len = case.get("max_seqlen", case["q"].shape[-2])
    return (case["q"].detach(), case["k"].detach(), case["v"].detach(), hi, lo, rate,
            case["time_bias"].detach() if "time_bias" in case else None, case.get("lengths"),
            case.get("cu_seqlens"), seq_len, causal, 0.25, "log1p", "log", 3.0, window,
            implementation)


@pytest.mark.parametrize("implementation,jagged", [("reference", False), ("reference", True),
                                                   ("triton", False)])
def test_opcheck(implementation, jagged):
    case = random_case(3, 2, 9, 16, jagged=jagged, table=True)
    args = op_arguments(case, implementation)
    torch.library.opcheck(torch.ops.stseq.time_decay_attention.default, args)
    if implementation == "triton":
        return  # the backward op is opchecked through the reference implementation (faster)
    out, lse = torch.ops.stseq.time_decay_attention(*args)
    grad = torch.randn_like(out)
    torch.library.opcheck(torch.ops.stseq.time_decay_attention_backward.default,
                          (grad, *args[:3], out, lse, *args[3:]))


@pytest.mark.parametrize("implementation", ["reference", "triton"])
def test_opcheck_backward_without_learnable_bias_inputs(implementation):
    # rate and time_bias None: the backward returns two empty gradients, which must not alias.
    case = random_case(2, 2, 7, 16)
    args = list(op_arguments(case, implementation))
    args[5] = args[6] = None
    out, lse = torch.ops.stseq.time_decay_attention(*args)
    torch.library.opcheck(torch.ops.stseq.time_decay_attention_backward.default,
                          (torch.randn_like(out), *args[:3], out, lse, *args[3:]))


def test_triton_and_reference_paths_agree_on_lse():
    case = random_case(3, 2, 25, 16, table=True)
    triton_out, triton_lse = torch.ops.stseq.time_decay_attention(*op_arguments(case, "triton"))
    out, lse = torch.ops.stseq.time_decay_attention(*op_arguments(case, "reference"))
    torch.testing.assert_close(triton_out, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(triton_lse, lse, rtol=1e-5, atol=1e-6)


def test_reference_backward_is_bitwise_deterministic_across_thread_counts():
    case = random_case(8, 4, 50, 32, table=True)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, threads, threads):
            torch.set_num_threads(n)
            results.append(run(case, "reference")[1])
    finally:
        torch.set_num_threads(threads)
    for grads in results[1:]:
        for a, b in zip(results[0], grads):
            assert torch.equal(a, b)


def test_inputs_are_not_mutated_and_strides_do_not_matter():
    case = random_case(3, 2, 20, 16, table=True)
    before = {k: v.detach().clone() for k, v in case.items() if isinstance(v, torch.Tensor)}
    expected = run(case, "reference")
    for name, value in before.items():
        assert torch.equal(case[name].detach(), value), name
    # q, k, v as [B, L, H, D] storage viewed as [B, H, L, D] (what the module passes).
    strided = dict(case)
    for name in ("q", "k", "v"):
        strided[name] = case[name].detach().transpose(1, 2).contiguous().transpose(
            1, 2).requires_grad_()
    assert not strided["q"].is_contiguous()
    for backend in ("reference", "triton"):
        out, grads, _ = run(strided, backend, expected[2])
        torch.testing.assert_close(out, expected[0], rtol=1e-5, atol=1e-6)
        for grad, expected_grad in zip(grads, expected[1]):
            assert_close_to_scale(grad, expected_grad, torch.float32)


def test_auto_runs_the_reference_path_on_cpu(monkeypatch):
    calls = []
    original = OP_MODULE._kernels
    monkeypatch.setattr(OP_MODULE, "_kernels", lambda name: calls.append(name) or original(name))
    case = random_case(2, 2, 8, 16)
    ops.time_decay_attention(**case)
    with stseq.use_backend("triton"):
        ops.time_decay_attention(**case)
    ops.time_decay_attention(**case, backend="triton")
    assert calls == ["reference", "triton", "triton"]
    # stseq info lists the kernels in the order auto takes them.
    assert stseq.info()["ops"]["cpu"]["time_decay_attention"][0] == "reference"


def test_triton_rejects_float64():
    case = random_case(2, 2, 8, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="Triton kernels of time_decay_attention take float32"):
        ops.time_decay_attention(**case, backend="triton")


BAD_PADDED = {
    "decreasing": (set_element("timestamps", (2, 5), EPOCH - 5),
                   r"non-decreasing within each sequence; row 2 decreases at position 5"),
    "span overflow": overflowing_span((1, 0), (1, slice(4, None)), "row 1, position 4"),
    "beyond 2^53": beyond_float64_seconds((0, slice(6, None)), "row 0, position 6"),
    "float32 timestamps": (replace("timestamps", lambda c: c["timestamps"].float()),
                           r"timestamps must be int64 \(seconds\) or float64"),
    "timestamps shape": (replace("timestamps", lambda c: c["timestamps"][:, :4]),
                         r"timestamps must have shape \[B, L\] = \[3, 9\], got \(3, 4\)"),
    "length past L": (set_element("lengths", 1, 10), r"lengths must be in \[0, L=9\]; lengths\[1\] = 10"),
    "head dim 8": (lambda c: [c.update({n: c[n][..., :8]}) for n in "qkv"],
                   r"head dim D = q.shape\[-1\] must be in \[16, 128\], got 8"),
    "head dim 160": (lambda c: [c.update({n: c[n].repeat(1, 1, 1, 10)}) for n in "qkv"],
                     r"head dim D = q.shape\[-1\] must be in \[16, 128\], got 160"),
    "dtype mix": (replace("k", lambda c: c["k"].double()),
                  r"q, k and v must share one dtype; q is torch.float32 but k is torch.float64"),
    "shape mix": (replace("v", lambda c: c["v"][:, :, :5]), r"v must have the shape of q"),
    "rank": (replace("q", lambda c: c["q"][0]), r"q must have shape \[B, H, L, D\]"),
    "integer q": (lambda c: [c.update({n: c[n].long()}) for n in "qkv"],
                  r"q must be a floating-point tensor"),
    "decay heads": (replace("decay", lambda c: c["decay"][:1]),
                    r"decay must be a floating-point \[H\] = \[2\] tensor"),
    "table heads": (replace("time_bias", lambda c: c["time_bias"][:1]),
                    r"time_bias must have shape \[H, NB\] = \[2, >= 1\]"),
    "decay_fn": (replace("decay_fn", "exp"), r"decay_fn must be one of"),
    "bucketing": (replace("bucketing", "linear"), r"bucketing must be one of"),
    "time unit": (replace("time_unit", 0.0), r"time_unit must be a finite number > 0"),
    # 2^40 s in units of 1e-300 s is inf: NaN gaps, once read outside the bucket table.
    "tiny time unit": (replace("time_unit", 1e-300), r"time_unit must be >= 1e-18 s"),
    "scale": (replace("scale", math.nan), r"scale must be a finite number > 0"),
    "window": (replace("window", -1), r"window must be an int >= 0, got -1"),
    "max_seqlen padded": (replace("max_seqlen", 9), r"max_seqlen goes with cu_seqlens"),
}

BAD_JAGGED = {
    "cu_seqlens decreasing": (set_element("cu_seqlens", 1, 5),
                              r"cu_seqlens must be non-decreasing; cu_seqlens\[2\] = 1 < "
                              r"cu_seqlens\[1\] = 5"),
    "cu_seqlens start": (set_element("cu_seqlens", 0, 1), r"cu_seqlens must start at 0, got 1"),
    "cu_seqlens end": (set_element("cu_seqlens", -1, 5), r"cu_seqlens must end at T = 10"),
    "cu_seqlens float": (replace("cu_seqlens", lambda c: c["cu_seqlens"].double()),
                         r"cu_seqlens must be an int32 or int64 \[B \+ 1\] tensor"),
    "max_seqlen short": (replace("max_seqlen", 3),
                         r"max_seqlen = 3 is shorter than sequence 2 \(9 tokens\)"),
    "decreasing": (set_element("timestamps", 6, EPOCH - 1),
                   r"non-decreasing within each sequence; sequence 2, position 5 \(token 6\) "
                   r"decreases"),
    "nan": (lambda c: (replace("timestamps", c["timestamps"].double())(c),
                       set_element("timestamps", 4, math.nan)(c)),
            r"timestamps must be finite; sequence 2, position 3 \(token 4\) has nan"),
    "span overflow": overflowing_span(1, slice(7, None), r"sequence 2, position 6 \(token 7\)"),
    "beyond 2^53": beyond_float64_seconds(slice(8, None), r"sequence 2, position 7 \(token 8\)"),
    "timestamps length": (replace("timestamps", lambda c: c["timestamps"][:4]),
                          r"timestamps must have T = 10 entries"),
    "lengths with cu_seqlens": (replace("lengths", torch.tensor([1])),
                                r"lengths is for the padded layout"),
    "padded q": (replace("q", lambda c: c["q"][None]), r"q must have shape \[T, H, D\]"),
}


@pytest.mark.parametrize("name", list(BAD_PADDED))
def test_bad_padded_input_raises_naming_the_argument(name):
    change, message = BAD_PADDED[name]
    case = random_case(3, 2, 9, 16, table=True)
    case["lengths"] = torch.tensor([9, 9, 9])
    change(case)
    with pytest.raises(ValueError, match=message):
        ops.time_decay_attention(**case)


@pytest.mark.parametrize("name", list(BAD_JAGGED))
def test_bad_jagged_input_raises_naming_the_argument(name):
    change, message = BAD_JAGGED[name]
    case = random_case(3, 2, 9, 16, jagged=True)
    assert case["cu_seqlens"].tolist() == [0, 0, 1, 10]
    change(case)
    with pytest.raises(ValueError, match=message):
        ops.time_decay_attention(**case)


def test_direct_op_call_is_memory_safe_on_bad_offsets():
    # torch.ops bypasses the Python checks: lengths and offsets are clamped in the kernels.
    case = random_case(2, 2, 8, 16)
    args = list(op_arguments(case, "triton"))
    args[7] = torch.tensor([50, -3])  # lengths out of range
    out, _ = torch.ops.stseq.time_decay_attention(*args)
    assert torch.isfinite(out).all() and out[1].abs().sum() == 0
    jagged = random_case(3, 2, 8, 16, jagged=True)
    args = list(op_arguments(jagged, "triton"))
    args[8] = torch.tensor([0, 100, -5, 1000])  # cu_seqlens out of range
    out, _ = torch.ops.stseq.time_decay_attention(*args)
    assert torch.isfinite(out).all()


def _float32_twin(case):
    return {name: value.detach().float().requires_grad_()
            if name in ("q", "k", "v") else value for name, value in case.items()}


CUDA_SHAPES = [dict(batch=4, heads=4, seq_len=300, head_dim=64),
               dict(batch=2, heads=2, seq_len=1000, head_dim=128, table=True),
               dict(batch=8, heads=2, seq_len=129, head_dim=48, jagged=True, table=True)]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_cuda_triton_matches_reference(shape, dtype, causal):
    case = random_case(**shape, dtype=dtype, device="cuda")
    out, grads, grad_out = run(case, "triton", causal=causal, decay_fn="log1p")
    twin = _float32_twin(case)
    expected, expected_grads, _ = run(twin, "reference", grad_out.float(), causal=causal,
                                      decay_fn="log1p")
    assert out.dtype == dtype
    assert_close_to_scale(out, expected, dtype)
    for grad, expected_grad in zip(grads, expected_grads):
        assert_close_to_scale(grad, expected_grad, dtype)


@pytest.mark.cuda
def test_cuda_backward_is_bitwise_deterministic():
    case = random_case(16, 4, 700, 64, table=True, dtype=torch.bfloat16, device="cuda")
    first = run(case, "triton")
    for _ in range(3):
        again = run(case, "triton", first[2])
        for a, b in zip(first[1], again[1]):
            assert torch.equal(a, b)


@pytest.mark.cuda
def test_cuda_memory_is_linear_in_length():
    case = random_case(1, 4, 16384, 64, lengths=False, dtype=torch.bfloat16, device="cuda")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run(case, "triton")
    peak = torch.cuda.max_memory_allocated() - before
    # One [H, L, L] score tensor would be 2 GiB; inputs, outputs and gradients are ~50 MiB.
    assert peak < 256 * 2**20


COMPILE_FOR_HOPPER = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from stseq.triton import attention as kernels

POINTERS = {"LENGTHS": "*i64", "CU_SEQLENS": "*i64"}
DATA = ("Q", "K", "V", "OUT", "GRAD", "GRAD_Q", "GRAD_K", "GRAD_V")
FLOATS = ("scale", "scale2", "bucket_scale")
constants = dict(HEAD_DIM=48, BLOCK_D=64, BLOCK_B=16, CAUSAL=False, JAGGED=True,
                 HAS_LENGTHS=False, HAS_WINDOW=True, DECAY_FN=2, BUCKETING=1,
                 DOT_PRECISION="tf32")
for kernel, blocks in ((kernels._forward_kernel, kernels.FORWARD_BLOCKS),
                       (kernels._key_value_kernel, kernels.KEY_VALUE_BLOCKS),
                       (kernels._query_kernel, kernels.QUERY_BLOCKS)):
    fn = kernel.fn
    block_m, block_n, warps, stages = blocks[0]
    given = {**constants, "BLOCK_M": block_m, "BLOCK_N": block_n}
    given = {name: value for name, value in given.items() if name in fn.arg_names}
    signature = {}
    for name in fn.arg_names:
        if name in given:
            signature[name] = "constexpr"
        elif name in POINTERS:
            signature[name] = POINTERS[name]
        elif name.isupper():
            signature[name] = "*bf16" if name in DATA else "*fp32"
        else:
            signature[name] = "fp32" if name in FLOATS else "i64" if name == "total" else "i32"
    triton.compile(ASTSource(fn, signature, given), target=GPUTarget("cuda", 90, 32),
                   options=dict(num_warps=warps, num_stages=stages))
print("compiled")
"""


def test_kernels_compile_for_hopper_without_a_gpu():
    # The interpreter does not catch what only the compiler rejects (globals that are not
    # constexpr, type mismatches between branches): compile each kernel for sm_90 to PTX/cubin.
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", COMPILE_FOR_HOPPER], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]


def test_oracle_defaults_are_the_ops():
    # reference/ imports only torch, so the oracle spells the op's default bucket scale itself.
    import inspect

    from stseq.reference import attention as oracle

    for name in ("time_decay_attention", "attention_weights"):
        default = inspect.signature(getattr(oracle, name)).parameters["bucket_scale"].default
        assert default == OP_MODULE.HSTU_BUCKET_SCALE
    assert (inspect.signature(OP_MODULE.time_decay_attention).parameters["bucket_scale"].default
            == OP_MODULE.HSTU_BUCKET_SCALE)
