"""time_gap_embedding: native kernels against the reference twin, exact values on hand-built
cases, gradcheck, opcheck, torch.compile, determinism and every bad input."""

import itertools
import math

import pytest
import torch

import stseq
from stseq import ops, reference

from case_edits import beyond_float64_seconds, overflowing_span, replace, set_element

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
             torch.bfloat16: dict(rtol=1e-2, atol=1e-2), torch.float16: dict(rtol=1e-2, atol=1e-3)}
EPOCH = 1_700_000_000


def random_case(batch, seq_len, window, *, num_buckets=16, dim=8, lag_specific=True,
                distance=False, interpolate=False, bucketing="log", timestamp_dtype=torch.int64,
                dtype=torch.float64, device="cpu", seed=0):
    """Keyword arguments of ops.time_gap_embedding: epoch-scale timestamps with repeated events,
    seconds and days between events, a row of length 0 and a full row."""
    g = torch.Generator().manual_seed(seed)
    gaps = torch.exp(torch.rand(batch, seq_len, generator=g) * 12) - 1  # 0 .. ~1.6e5 s
    gaps[torch.rand(batch, seq_len, generator=g) < 0.2] = 0  # simultaneous events
    if timestamp_dtype == torch.int64:
        gaps = gaps.round().long()
    timestamps = (EPOCH + gaps.cumsum(1)).to(timestamp_dtype)
    lengths = torch.randint(0, seq_len + 1, (batch,), generator=g)
    lengths[0] = 0
    lengths[-1] = seq_len
    max_gap = 2e5
    scale = max(num_buckets - 1, 1) / (math.log1p(max_gap) if bucketing == "log" else max_gap)

    def table(n):
        shape = (window, n, dim) if lag_specific else (n, dim)
        return torch.randn(shape, generator=g).to(device, dtype).requires_grad_()

    case = dict(timestamps=timestamps.to(device), time_weight=table(num_buckets),
                lengths=lengths.to(device), window=window, time_scale=scale,
                bucketing=bucketing, interpolate=interpolate)
    if distance:
        coordinates = torch.stack([torch.rand(batch, seq_len, generator=g) * 20 + 40,
                                   torch.rand(batch, seq_len, generator=g) * 40 - 20], -1)
        distance_max = 3000.0
        case.update(coordinates=coordinates.to(device), distance_weight=table(num_buckets + 3),
                    distance_scale=(num_buckets + 2) / (math.log1p(distance_max)
                                                        if bucketing == "log" else distance_max))
    return case


def tables(case):
    return [case["time_weight"]] + ([case["distance_weight"]] if "distance_weight" in case else [])


def run(case, backend, grad_out=None):
    """(out, table gradients) of one backend for a case."""
    out = ops.time_gap_embedding(**case, backend=backend)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, tables(case), grad_outputs=grad_out)
    return out, grads, grad_out


def assert_close_to_scale(actual, expected, dtype):
    """Elementwise within rtol, or within rtol of the tensor's largest magnitude: a table
    gradient sums hundreds of terms, and summation order alone moves a cancelled element."""
    rtol = TOLERANCE[dtype]["rtol"]
    atol = max(TOLERANCE[dtype]["atol"], rtol * expected.abs().max().item())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def assert_parity(case, dtype):
    out, grads, grad_out = run(case, "native")
    ref_out, ref_grads, _ = run(case, "reference", grad_out)
    torch.testing.assert_close(out, ref_out, **TOLERANCE[dtype])
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close_to_scale(grad, ref_grad, dtype)


SHAPES = [dict(batch=3, seq_len=1, window=4),   # L = 1: every output is zero
          dict(batch=4, seq_len=5, window=9),   # W > L
          dict(batch=5, seq_len=17, window=3),
          dict(batch=2, seq_len=33, window=8, num_buckets=1, dim=5)]
OPTIONS = list(itertools.product([True, False], [False, True], [False, True], ["log", "linear"]))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{batch}-L{seq_len}-W{window}".format(**s))
@pytest.mark.parametrize("lag_specific,interpolate,distance,bucketing", OPTIONS)
@pytest.mark.parametrize("timestamp_dtype", [torch.int64, torch.float64], ids=str)
def test_native_matches_reference_float64(shape, lag_specific, interpolate, distance, bucketing,
                                          timestamp_dtype):
    case = random_case(**shape, lag_specific=lag_specific, interpolate=interpolate,
                       distance=distance, bucketing=bucketing, timestamp_dtype=timestamp_dtype)
    assert_parity(case, torch.float64)


@pytest.mark.parametrize("interpolate,distance", [(False, False), (True, True)])
def test_native_matches_reference_float32(interpolate, distance):
    case = random_case(64, 40, 8, dim=32, interpolate=interpolate, distance=distance,
                       dtype=torch.float32)
    assert_parity(case, torch.float32)


def identifiable_table(window, num_buckets, dim, dtype=torch.float64):
    """table[k, n, :] = 100 * k + n, so an output names the rows it averaged."""
    rows = 100.0 * torch.arange(window)[:, None] + torch.arange(num_buckets)[None, :]
    return rows[..., None].expand(window, num_buckets, dim).to(dtype).contiguous()


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_hand_computed_values(backend):
    # Linear buckets of 10 s: gaps 10 -> bucket 1, 90 -> 9, 100 -> 10.
    timestamps = torch.tensor([[0, 10, 100]])
    table = identifiable_table(2, 20, 3)
    out = ops.time_gap_embedding(timestamps, table, time_scale=0.1, bucketing="linear",
                                 backend=backend)
    expected = torch.tensor([0.0, 1.0, (9.0 + 110.0) / 2], dtype=torch.float64)[:, None].expand(3, 3)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_interpolation_is_linear_between_buckets(backend):
    timestamps = torch.tensor([[0, 15, 40]])  # gaps 15 -> position 1.5, 25 -> 2.5, 40 -> 4.0
    table = identifiable_table(1, 8, 2)
    out = ops.time_gap_embedding(timestamps, table, time_scale=0.1, bucketing="linear",
                                 interpolate=True, backend=backend)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 1.5, 2.5], dtype=torch.float64))


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("timestamp_dtype", [torch.int64, torch.float64], ids=str)
def test_epoch_timestamps_resolve_one_second(backend, timestamp_dtype):
    # 1-second gaps at ~1.7e9 s: float32 timestamps would round them to 0 or 128 s.
    timestamps = (EPOCH + torch.arange(12)).to(timestamp_dtype)[None]
    window, num_buckets = 4, 16
    table = identifiable_table(window, num_buckets, 2, torch.float32)
    out = ops.time_gap_embedding(timestamps, table, time_scale=1.0, bucketing="linear",
                                 backend=backend)
    # lag k has gap k -> bucket k of table k-1, value 100 (k - 1) + k.
    expected = [0.0] + [sum(101.0 * k - 100 for k in range(1, min(t, window) + 1)) / min(t, window)
                        for t in range(1, 12)]
    torch.testing.assert_close(out[0, :, 0], torch.tensor(expected), rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_distance_term_uses_haversine_kilometres(backend):
    timestamps = torch.tensor([[0, 0]])
    coordinates = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # 111.2 km apart
    time_table = torch.zeros(1, 4, 2, dtype=torch.float64)
    distance_table = identifiable_table(1, 10, 2)
    out = ops.time_gap_embedding(timestamps, time_table, coordinates=coordinates,
                                 distance_weight=distance_table, distance_scale=0.01,
                                 bucketing="linear", backend=backend)
    assert out[0, 1, 0].item() == 1.0  # 111.2 km / 100 km per bucket -> bucket 1
    torch.testing.assert_close(
        reference.haversine_km(*coordinates[0, 0], *coordinates[0, 1]),
        torch.tensor(2 * math.pi * 6371.0088 / 360, dtype=torch.float64))


def test_padding_is_zero_and_ignored():
    case = random_case(3, 10, 4)
    case["lengths"] = torch.tensor([4, 0, 10])
    case["timestamps"][0, 6] = 0  # decreasing, but inside the padding of row 0
    out = ops.time_gap_embedding(**case, backend="native")
    assert out[0, 4:].abs().sum() == 0 and out[1].abs().sum() == 0 and out[:, 0].abs().sum() == 0
    assert out[2, 1:].abs().sum() > 0
    torch.testing.assert_close(out, ops.time_gap_embedding(**case, backend="reference"))


def test_gradcheck_native():
    case = random_case(3, 7, 3, dim=3, interpolate=True, distance=True, num_buckets=5)
    time_weight, distance_weight = case.pop("time_weight"), case.pop("distance_weight")

    def fn(time_weight, distance_weight):
        return ops.time_gap_embedding(time_weight=time_weight, distance_weight=distance_weight,
                                      **case, backend="native")

    assert torch.autograd.gradcheck(fn, (time_weight, distance_weight))


def op_samples():
    for kwargs in (dict(), dict(distance=True, interpolate=True), dict(lag_specific=False)):
        case = random_case(3, 6, 3, **kwargs)
        yield (case["timestamps"], case["time_weight"], case["lengths"], case.get("coordinates"),
               case.get("distance_weight"), case["window"], 1.0, case["time_scale"],
               case.get("distance_scale", 1.0), case["bucketing"], case["interpolate"])


@pytest.mark.parametrize("args", list(op_samples()))
def test_opcheck(args):
    torch.library.opcheck(torch.ops.stseq.time_gap_embedding.default, args)


def test_opcheck_backward():
    args = next(op_samples())
    grad = torch.randn(3, 6, args[1].shape[-1], dtype=torch.float64)
    torch.library.opcheck(torch.ops.stseq.time_gap_embedding_backward.default,
                          (grad,) + tuple(a.detach() if isinstance(a, torch.Tensor) else a
                                          for a in args))


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_compile_fullgraph_module(backend):
    torch._dynamo.reset()
    module = stseq.nn.TimeGapEmbedding(16, 8, window=3, distance_buckets=6, interpolate=True,
                                       backend=backend)
    case = random_case(4, 9, 3, distance=True, dtype=torch.float32)
    args = (case["timestamps"], case["lengths"], case["coordinates"])
    compiled = torch.compile(module, fullgraph=True)
    out = compiled(*args)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    expected = module(*args)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    for grad, p in zip(grads, module.parameters()):
        torch.testing.assert_close(grad, p.grad)


def test_backward_is_bitwise_deterministic_across_thread_counts():
    case = random_case(32, 30, 8, dim=64, interpolate=True, distance=True, dtype=torch.float32)
    grad_out = torch.randn(32, 30, 64)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, threads, threads):
            torch.set_num_threads(n)
            results.append(run(case, "native", grad_out)[1])
    finally:
        torch.set_num_threads(threads)
    for grads in results[1:]:
        for a, b in zip(results[0], grads):
            assert torch.equal(a, b)


def test_inputs_are_not_mutated():
    case = random_case(4, 8, 3, distance=True)
    before = {k: v.detach().clone() for k, v in case.items() if isinstance(v, torch.Tensor)}
    run(case, "native")
    for name, value in before.items():
        assert torch.equal(case[name].detach(), value), name


def test_noncontiguous_inputs():
    case = random_case(4, 8, 3, dim=6, distance=True)
    strided = dict(case)
    strided["timestamps"] = case["timestamps"].t().contiguous().t()
    strided["coordinates"] = case["coordinates"].transpose(0, 1).contiguous().transpose(0, 1)
    strided["time_weight"] = case["time_weight"].detach().transpose(0, 1).contiguous().transpose(
        0, 1).requires_grad_()
    assert not strided["timestamps"].is_contiguous()
    torch.testing.assert_close(ops.time_gap_embedding(**strided, backend="native"),
                               ops.time_gap_embedding(**case, backend="reference"))


def test_module_shapes_and_last_bucket():
    module = stseq.nn.TimeGapEmbedding(32, 8, window=4, lag_specific=False, distance_buckets=5)
    assert module.time_weight.shape == (32, 8) and module.distance_weight.shape == (5, 8)
    timestamps = EPOCH + torch.tensor([[0, 1, 3600, 400 * 86400]])
    coordinates = torch.tensor([[[48.8, 2.3]] * 4])  # one place: distance 0 -> bucket 0
    out = module(timestamps, coordinates=coordinates)
    assert out.shape == (1, 4, 8)
    # every gap to the last event exceeds max_gap (one year): all three lags use the last bucket
    torch.testing.assert_close(out[0, 3], module.time_weight[31] + module.distance_weight[0])


BAD_MODULE_OPTIONS = {
    "max_gap 0": (dict(max_gap=0), r"max_gap must be a finite number > 0 \(in time_unit\), got 0"),
    "max_gap -1": (dict(max_gap=-1), r"max_gap must be a finite number > 0"),
    "max_gap nan": (dict(max_gap=math.nan), r"max_gap must be a finite number > 0"),
    "time_unit 0": (dict(time_unit=0), r"time_unit must be a finite number > 0 \(seconds per "
                                       r"time unit\), got 0"),
    "num_buckets 0": (dict(num_buckets=0), r"num_buckets must be an int >= 1, got 0"),
    "num_buckets float": (dict(num_buckets=8.0), r"num_buckets must be an int >= 1, got 8.0"),
    "embedding_dim": (dict(embedding_dim=0), r"embedding_dim must be an int >= 1, got 0"),
    "window": (dict(window=0), r"window must be an int >= 1, got 0"),
    "bucketing": (dict(bucketing="sqrt"), r"bucketing must be one of \('log', 'linear'\)"),
    "distance_buckets": (dict(distance_buckets=-1), r"distance_buckets must be an int >= 0"),
    "max_distance": (dict(distance_buckets=4, max_distance=0.0),
                     r"max_distance must be a finite number > 0 \(km\), got 0.0"),
    "backend": (dict(backend="cudnn"), r"backend must be one of"),
}


@pytest.mark.parametrize("name", list(BAD_MODULE_OPTIONS))
def test_module_options_are_checked_in_the_constructor(name):
    options, message = BAD_MODULE_OPTIONS[name]
    # max_gap=0, time_unit=0 and max_gap=-1 raised ZeroDivisionError / "math domain error".
    with pytest.raises(ValueError, match=message):
        stseq.nn.TimeGapEmbedding(**{"num_buckets": 8, "embedding_dim": 4, **options})


def test_module_requires_coordinates_exactly_with_distance_table():
    with pytest.raises(ValueError, match="needs coordinates"):
        stseq.nn.TimeGapEmbedding(8, 4, distance_buckets=3)(torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="has no distance table"):
        stseq.nn.TimeGapEmbedding(8, 4)(torch.tensor([[0, 1]]),
                                        coordinates=torch.zeros(1, 2, 2))


BAD_INPUTS = {
    "decreasing": (set_element("timestamps", (1, 3), EPOCH - 5),
                   r"non-decreasing within each sequence; row 1 decreases at position 3"),
    "nan timestamp": (lambda c: (replace("timestamps", c["timestamps"].double())(c),
                                 set_element("timestamps", (2, 4), math.nan)(c)),
                      r"timestamps must be finite; row 2 has nan at position 4"),
    "inf timestamp": (lambda c: (replace("timestamps", c["timestamps"].double())(c),
                                 set_element("timestamps", (0, 2), math.inf)(c)),
                      r"timestamps must be finite; row 0 has inf at position 2"),
    "span overflow": overflowing_span((1, 0), (1, slice(3, None)), "row 1, position 3"),
    "beyond 2^53": beyond_float64_seconds((2, slice(4, None)), "row 2, position 4"),
    "negative length": (set_element("lengths", 1, -1), r"lengths must be in \[0, L=6\]; lengths\[1\] = -1"),
    "length past L": (set_element("lengths", 2, 7), r"lengths must be in \[0, L=6\]; lengths\[2\] = 7"),
    "float32 timestamps": (replace("timestamps", lambda c: c["timestamps"].float()),
                           r"timestamps must be int64 \(seconds\) or float64, got torch.float32"),
    "int32 timestamps": (replace("timestamps", lambda c: c["timestamps"].int()),
                         r"timestamps must be int64"),
    "1-D timestamps": (replace("timestamps", lambda c: c["timestamps"][0]),
                       r"timestamps must have shape \[B, L\], got \(6,\)"),
    "list timestamps": (replace("timestamps", lambda c: c["timestamps"].tolist()),
                        r"timestamps must be a torch.Tensor"),
    "float lengths": (replace("lengths", lambda c: c["lengths"].double()),
                      r"lengths must be an integer tensor"),
    "short lengths": (replace("lengths", lambda c: c["lengths"][:2]),
                      r"lengths must have B=3 entries, got 2"),
    "latitude": (set_element("coordinates", (0, 1, 0), 91.0),
                 r"latitude must be in \[-90, 90\] degrees; row 0, position 1 has 91.0"),
    "longitude": (set_element("coordinates", (2, 5, 1), -181.0),
                  r"longitude must be in \[-180, 180\] degrees; row 2, position 5 has -181.0"),
    "nan coordinate": (set_element("coordinates", (1, 0, 1), math.nan),
                       r"coordinates must be finite; row 1, position 0"),
    "coordinates shape": (replace("coordinates", lambda c: c["coordinates"][..., :1]),
                          r"coordinates must have shape \[B, L, 2\] = \[3, 6, 2\]"),
    "integer coordinates": (replace("coordinates", lambda c: c["coordinates"].long()),
                            r"coordinates must be a floating-point tensor"),
    "coordinates without table": (replace("distance_weight", None), r"go together"),
    "table rank": (replace("time_weight", lambda c: c["time_weight"][0, 0]),
                   r"time_weight must have shape \[W, NB, D\]"),
    "table window": (replace("window", 2), r"time_weight has 3 lag tables but window=2"),
    "integer table": (replace("time_weight", lambda c: c["time_weight"].long()),
                      r"time_weight must be a floating-point tensor"),
    "table device": (replace("time_weight", lambda c: c["time_weight"].to("meta")),
                     r"time_weight is on meta but timestamps are on cpu"),
    "distance table size": (replace("distance_weight", lambda c: c["distance_weight"][..., :2]),
                            r"distance_weight has embedding size 2 but time_weight has 8"),
    "distance table dtype": (replace("distance_weight", lambda c: c["distance_weight"].float()),
                             r"distance_weight must have the dtype of time_weight"),
    "shared table without window": (lambda c: (replace("time_weight", c["time_weight"][0])(c),
                                               replace("distance_weight",
                                                        c["distance_weight"][0])(c),
                                               replace("window", None)(c)),
                                    r"window is required"),
    "zero window": (replace("window", 0), r"window must be an int >= 1, got 0"),
    "time unit": (replace("time_unit", 0.0), r"time_unit must be a finite number > 0"),
    "time scale": (replace("time_scale", -1.0), r"time_scale must be a finite number > 0"),
    "distance scale": (replace("distance_scale", math.inf),
                       r"distance_scale must be a finite number > 0"),
    "bucketing": (replace("bucketing", "sqrt"), r"bucketing must be one of \('log', 'linear'\)"),
}


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument(name, backend):
    change, message = BAD_INPUTS[name]
    case = random_case(3, 6, 3, distance=True)
    case["lengths"] = torch.tensor([6, 6, 6])
    change(case)
    error = TypeError if name == "list timestamps" else ValueError
    with pytest.raises(error, match=message):
        ops.time_gap_embedding(**case, backend=backend)


def test_native_rejects_half_tables_on_cpu():
    case = random_case(2, 4, 2, dtype=torch.float16)
    with pytest.raises(ValueError, match="time_weight must be float32 or float64 on CPU"):
        ops.time_gap_embedding(**case, backend="native")


def direct_call(timestamps, table, lengths=None, backward=False):
    """torch.ops.stseq.time_gap_embedding(_backward), bypassing the Python checks."""
    options = (2, 1.0, 1.0, 1.0, "log", True)
    if backward:
        grad = torch.ones(*timestamps.shape, table.shape[-1], dtype=table.dtype)
        return torch.ops.stseq.time_gap_embedding_backward(grad, timestamps, table, lengths,
                                                           None, None, *options)
    return torch.ops.stseq.time_gap_embedding(timestamps, table, lengths, None, None, *options)


def test_direct_op_call_is_memory_safe_on_any_values():
    # torch.ops bypasses the Python checks: gaps of any size stay inside the table, and the
    # kernels' own shape checks name the argument.
    timestamps = torch.tensor([[-2**62, -5, 0, 2**62 - 1], [0, 2**40, 2**40, 2**41]])
    table = torch.randn(2, 4, 3, dtype=torch.float64)
    out = direct_call(timestamps, table, torch.tensor([4, 0]))
    assert torch.isfinite(out).all() and out[1].abs().sum() == 0
    torch.testing.assert_close(out[0, 3], table[:, 3].mean(0))  # both gaps in the last bucket
    with pytest.raises(ValueError, match="coordinates must have shape"):
        torch.ops.stseq.time_gap_embedding(timestamps, table, None, torch.zeros(2, 4, 3),
                                           table, 2, 1.0, 1.0, 1.0, "log", False)
    with pytest.raises(ValueError, match="lengths must have B=2 entries"):
        direct_call(timestamps, table, torch.tensor([1]))
    with pytest.raises(ValueError, match="grad must have shape"):
        torch.ops.stseq.time_gap_embedding_backward(torch.zeros(2, 4, 5), timestamps, table, None,
                                                    None, None, 2, 1.0, 1.0, 1.0, "log", False)


# Values the C++ checks refuse on their own (a direct op call, forward and backward), with the
# Python layer's wording.
BAD_VALUES_NATIVE = {
    "span overflow": (torch.tensor([[-2**62, 0, 2**62, 2**62 + 10]]), None,
                      r"span at most 2\^63 - 1 s within a sequence \(their gaps are int64\); "
                      r"row 0, position 2 has 4611686018427387904"),
    "decreasing": (torch.tensor([[0, 5, 3, 9]]), None,
                   r"non-decreasing within each sequence; row 0 decreases at position 2 "
                   r"\(5 -> 3\)"),
    "nan": (torch.tensor([[0.0, 1.0, math.nan, 3.0]], dtype=torch.float64), None,
            r"timestamps must be finite; row 0 has nan at position 2"),
    "beyond 2^53": (torch.tensor([[0.0, 1.0, 2.0**53 + 2, 2.0**54]], dtype=torch.float64), None,
                    r"within \+-2\^53 s, where float64 still resolves one second; row 0, "
                    r"position 2"),
    "length past L": (torch.tensor([[0, 1, 2, 3]]), torch.tensor([5]),
                      r"lengths must be in \[0, L=4\]; lengths\[0\] = 5"),
    "negative length": (torch.tensor([[0, 1, 2, 3]]), torch.tensor([-1]),
                        r"lengths must be in \[0, L=4\]; lengths\[0\] = -1"),
}


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("name", list(BAD_VALUES_NATIVE))
def test_direct_op_call_checks_values(name, backward):
    timestamps, lengths, message = BAD_VALUES_NATIVE[name]
    table = torch.randn(2, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        direct_call(timestamps, table, lengths, backward)
    # Past a row's length nothing is checked.
    direct_call(timestamps, table, torch.tensor([2]), backward)


def _float32_twin(case):
    """The case with float32 copies of the tables: the reference oracle for half dtypes."""
    twin = dict(case)
    for name in ("time_weight", "distance_weight"):
        if name in case:
            twin[name] = case[name].detach().float().requires_grad_()
    return twin


CUDA_SHAPES = [dict(batch=16, seq_len=37, window=5, dim=40),
               dict(batch=3, seq_len=50, window=40, dim=8),     # W > 32: lags in chunks
               dict(batch=2, seq_len=9, window=3, dim=300),     # D > 256: column tiles
               dict(batch=4, seq_len=1, window=4, dim=16)]


@pytest.mark.cuda
@pytest.mark.parametrize("shape", CUDA_SHAPES, ids=lambda s: "B{batch}-L{seq_len}-W{window}-D{dim}".format(**s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("lag_specific,interpolate,distance", [(True, False, False),
                                                               (False, True, True)])
def test_cuda_matches_reference(shape, dtype, lag_specific, interpolate, distance):
    case = random_case(**shape, lag_specific=lag_specific, interpolate=interpolate,
                       distance=distance, dtype=dtype, device="cuda")
    out, grads, grad_out = run(case, "native")
    ref_out, ref_grads, _ = run(_float32_twin(case), "reference", grad_out.float())
    assert out.dtype == dtype
    assert_close_to_scale(out.float(), ref_out, dtype)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert grad.dtype == dtype
        assert_close_to_scale(grad.float(), ref_grad, dtype)


@pytest.mark.cuda
def test_cuda_float64_matches_cpu_native():
    case = random_case(8, 30, 6, distance=True, interpolate=True)
    cuda_case = {k: (v.detach().cuda().requires_grad_(v.requires_grad)
                     if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    out, grads, grad_out = run(case, "native")
    cuda_out, cuda_grads, _ = run(cuda_case, "native", grad_out.cuda())
    torch.testing.assert_close(cuda_out.cpu(), out, **TOLERANCE[torch.float64])
    for a, b in zip(cuda_grads, grads):
        assert_close_to_scale(a.cpu(), b, torch.float64)


@pytest.mark.cuda
def test_cuda_backward_is_bitwise_deterministic():
    case = random_case(64, 50, 8, dim=64, interpolate=True, distance=True, dtype=torch.float32,
                       device="cuda")
    grad_out = torch.randn(64, 50, 64, device="cuda")
    first = run(case, "native", grad_out)[1]
    for _ in range(3):
        for a, b in zip(first, run(case, "native", grad_out)[1]):
            assert torch.equal(a, b)


@pytest.mark.cuda
def test_cuda_empty_batch():
    case = random_case(1, 5, 2, dtype=torch.float32, device="cuda")
    case["timestamps"], case["lengths"] = case["timestamps"][:0], case["lengths"][:0]
    out, grads, _ = run(case, "native")
    assert out.shape == (0, 5, 8) and grads[0].abs().sum() == 0
