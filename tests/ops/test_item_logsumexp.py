"""item_logsumexp: native (C++) and Triton (interpreter on the CPU) against the materialised
reference, forward and every gradient; chunk edges, gradcheck, opcheck, torch.compile,
determinism, NaN/inf as torch.logsumexp, the gradient filter and every bad input."""

import pytest
import torch

from stseq import reference
from stseq.ops import item_logsumexp

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2}


def random_case(rows, items, dim, *, dtype=torch.float64, bias=True, scale=1.0):
    hidden = (torch.randn(rows, dim, dtype=dtype) * scale).requires_grad_()
    weight = (torch.randn(items, dim, dtype=dtype) * scale).requires_grad_()
    item_bias = torch.randn(items, dtype=dtype).requires_grad_() if bias else None
    return hidden, weight, item_bias


def outputs_and_grads(case, grad, **options):
    lse = item_logsumexp(*case, **options)
    inputs = [x for x in case if x is not None]
    return (lse, *torch.autograd.grad(lse, inputs, grad))


def assert_parity(case, backend, dtype, **options):
    accumulate = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.randn(case[0].shape[0], dtype=accumulate)
    expected = outputs_and_grads(case, grad, backend="reference")
    actual = outputs_and_grads(case, grad, backend=backend, **options)
    for got, want in zip(actual, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        scale = want.abs().max().clamp(min=1.0)
        assert (got.double() - want.double()).abs().max() <= TOLERANCE[dtype] * scale


# (rows, items, dim, chunk_size): chunks that do not divide N, N < chunk, M = 1, one item.
SHAPES = [(9, 50, 8, 16), (1, 37, 5, 7), (6, 10, 4, 64), (4, 1, 3, 1), (33, 70, 16, 70)]


@pytest.mark.parametrize("rows,items,dim,chunk", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
def test_native_matches_reference_float64(rows, items, dim, chunk, bias):
    case = random_case(rows, items, dim, bias=bias)
    assert_parity(case, "native", torch.float64, chunk_size=chunk)


@pytest.mark.parametrize("rows,items,dim,chunk", SHAPES[:3])
def test_native_matches_reference_float32_large_scores(rows, items, dim, chunk):
    case = random_case(rows, items, dim, dtype=torch.float32, scale=3.0)  # scores ~ +-50
    assert_parity(case, "native", torch.float32, chunk_size=chunk)


@pytest.mark.parametrize("rows,items,dim", [(20, 45, 8), (1, 16, 16), (17, 5, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_triton_matches_reference_float32(rows, items, dim, bias):
    case = random_case(rows, items, dim, dtype=torch.float32, bias=bias)
    assert_parity(case, "triton", torch.float32)


def test_triton_float16_accumulates_in_float32():
    case = [x.detach().half().requires_grad_() for x in random_case(18, 40, 16)]
    lse = item_logsumexp(*case, backend="triton")
    assert lse.dtype == torch.float32
    expected = reference.item_logsumexp(*[x.detach() for x in case])
    assert (lse - expected).abs().max() < 2e-2
    grads = torch.autograd.grad(lse.sum(), case)
    ref_grads = torch.autograd.grad(reference.item_logsumexp(*[x.float() for x in case]).sum(),
                                    case)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float16
        assert (got.float() - want.float()).abs().max() < 2e-2


def test_native_float16_runs_in_float32():
    case = [x.detach().half() for x in random_case(5, 30, 8)]
    lse = item_logsumexp(*case, backend="native", chunk_size=7)
    assert lse.dtype == torch.float32
    assert torch.allclose(lse, reference.item_logsumexp(*case), atol=1e-5)


@pytest.mark.parametrize("backend", ["native", "triton"])
def test_gradient_filter_drops_only_negligible_chunks(backend):
    # one dominant item per row block: the other chunks' softmax values are ~e^-60 < 2^-24
    dtype = torch.float32
    hidden = torch.randn(16, 8, dtype=dtype)
    weight = torch.randn(64, 8, dtype=dtype) * 0.01
    bias = torch.zeros(64, dtype=dtype)
    bias[3] = 60.0
    case = [x.requires_grad_() for x in (hidden, weight, bias)]
    grad = torch.ones(16)
    exact = outputs_and_grads(case, grad, backend=backend, chunk_size=16)
    filtered = outputs_and_grads(case, grad, backend=backend, chunk_size=16, gradient_filter=True)
    for got, want in zip(filtered, exact):
        assert (got - want).abs().max() <= 1e-6
    assert filtered[2][16:].abs().max() == 0  # the skipped chunks get exactly zero
    assert exact[2][16:].abs().max() > 0      # where the exact backward has tiny values


def test_gradcheck_native():
    case = random_case(5, 13, 4)
    assert torch.autograd.gradcheck(
        lambda h, w, b: item_logsumexp(h, w, b, chunk_size=4, backend="native"), case)


@pytest.mark.parametrize("bias", [True, False])
def test_opcheck(bias):
    hidden, weight, item_bias = (x.detach() if x is not None else None
                                 for x in random_case(6, 11, 4, dtype=torch.float32, bias=bias))
    args = (hidden.requires_grad_(), weight.requires_grad_(),
            item_bias.requires_grad_() if bias else None, 4, False)
    torch.library.opcheck(torch.ops.stseq.item_logsumexp.default, args)
    lse = torch.ops.stseq.item_logsumexp(*args)
    torch.library.opcheck(torch.ops.stseq.item_logsumexp_backward.default,
                          (torch.randn(6), hidden.detach(), weight.detach(),
                           None if item_bias is None else item_bias.detach(), lse.detach(), 4,
                           False))


def test_opcheck_triton():
    hidden, weight, bias = random_case(6, 20, 8, dtype=torch.float32)
    torch.library.opcheck(torch.ops.stseq.item_logsumexp_triton.default,
                          (hidden, weight, bias, False))


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_compile_fullgraph(backend):
    case = random_case(7, 19, 4, dtype=torch.float32)

    def loss(h, w, b):
        return item_logsumexp(h, w, b, chunk_size=5, backend=backend).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got = torch.autograd.grad(compiled(*case), case)
    want = torch.autograd.grad(loss(*case), case)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6)


def test_backward_is_bitwise_deterministic_across_thread_counts():
    case = random_case(40, 300, 16, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, max(threads, 2)):
            torch.set_num_threads(count)
            results.append(outputs_and_grads(case, torch.ones(40), chunk_size=64))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def special_bias(kind):
    bias = torch.zeros(6, dtype=torch.float64)
    if kind == "nan":
        bias[2] = float("nan")
    elif kind == "inf":
        bias[4] = float("inf")
    elif kind == "all -inf":
        bias[:] = float("-inf")
    elif kind == "some -inf":
        bias[:3] = float("-inf")
    elif kind == "huge":
        bias[1] = 1e300
    return bias


@pytest.mark.parametrize("kind", ["nan", "inf", "all -inf", "some -inf", "huge"])
@pytest.mark.parametrize("backend", ["native", "triton"])
def test_nan_and_inf_as_torch_logsumexp(kind, backend):
    dtype = torch.float32 if backend == "triton" else torch.float64
    hidden = torch.randn(3, 4, dtype=dtype, requires_grad=True)
    weight = torch.randn(6, 4, dtype=dtype, requires_grad=True)
    bias = special_bias(kind).to(dtype).requires_grad_()
    want = reference.item_logsumexp(hidden, weight, bias)
    got = item_logsumexp(hidden, weight, bias, chunk_size=4, backend=backend)
    torch.testing.assert_close(got, want, equal_nan=True)
    want_grads = torch.autograd.grad(want.sum(), (hidden, weight, bias))
    got_grads = torch.autograd.grad(got.sum(), (hidden, weight, bias))
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, equal_nan=True, atol=1e-5, rtol=1e-5)


def test_inputs_are_not_mutated_and_noncontiguous_inputs_work():
    hidden, weight, bias = (x.detach() for x in random_case(5, 21, 6))
    copies = [x.clone() for x in (hidden, weight, bias)]
    strided_weight = torch.randn(6, 21, dtype=torch.float64).t()  # [21, 6], not contiguous
    lse = item_logsumexp(hidden, strided_weight, bias, chunk_size=4)
    assert torch.allclose(lse, reference.item_logsumexp(hidden, strided_weight, bias))
    item_logsumexp(hidden, weight, bias, chunk_size=4)
    for x, copy in zip((hidden, weight, bias), copies):
        assert torch.equal(x, copy)


def test_default_chunk_never_holds_rows_by_items():
    from stseq.ops.scoring import default_chunk_size

    assert default_chunk_size(6400) * 6400 <= 1 << 23
    assert default_chunk_size(1) == 8192


H, W, B = torch.randn(4, 3), torch.randn(10, 3), torch.randn(10)
BAD_INPUTS = {
    "hidden not a tensor": (dict(hidden=[[1.0]]), TypeError, "hidden"),
    "hidden 1-d": (dict(hidden=torch.randn(3)), ValueError, "hidden"),
    "hidden integer": (dict(hidden=torch.ones(4, 3, dtype=torch.int64)), TypeError, "hidden"),
    "weight wrong D": (dict(weight=torch.randn(10, 4)), ValueError, "weight"),
    "weight empty": (dict(weight=torch.randn(0, 3), bias=None), ValueError, "weight"),
    "weight dtype": (dict(weight=W.double()), TypeError, "weight"),
    "bias shape": (dict(bias=torch.randn(9)), ValueError, "bias"),
    "bias dtype": (dict(bias=B.double()), TypeError, "bias"),
    "bias device": (dict(bias=B.to("meta")), ValueError, "bias"),
    "chunk_size 0": (dict(chunk_size=0), ValueError, "chunk_size"),
    "chunk_size float": (dict(chunk_size=2.5), ValueError, "chunk_size"),
    "gradient_filter str": (dict(gradient_filter="yes"), TypeError, "gradient_filter"),
    "backend unknown": (dict(backend="fast"), ValueError, "backend"),
    "triton float64": (dict(hidden=H.double(), weight=W.double(), bias=None, backend="triton"),
                       TypeError, "float64"),
    "triton D > 256": (dict(hidden=torch.randn(2, 300), weight=torch.randn(3, 300), bias=None,
                            backend="triton"), ValueError, "D <= 256"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_named_error(name):
    changes, error, words = BAD_INPUTS[name]
    arguments = dict(hidden=H, weight=W, bias=B) | changes
    with pytest.raises(error, match=words):
        item_logsumexp(arguments.pop("hidden"), arguments.pop("weight"), arguments.pop("bias"),
                       **arguments)


def test_native_op_checks_direct_calls():
    with pytest.raises(ValueError, match="weight"):
        torch.ops.stseq.item_logsumexp(H, torch.randn(10, 5), None, 4, False)
    with pytest.raises(ValueError, match="chunk_size"):
        torch.ops.stseq.item_logsumexp(H, W, B, 0, False)
    with pytest.raises(ValueError, match="lse"):
        torch.ops.stseq.item_logsumexp_backward(torch.ones(4), H, W, B, torch.ones(3), 4, False)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("gradient_filter", [False, True])
def test_cuda_triton_matches_reference(dtype, gradient_filter):
    hidden, weight, bias = (x.detach().to("cuda", dtype).requires_grad_()
                            for x in random_case(300, 5000, 128, dtype=torch.float32))
    lse = item_logsumexp(hidden, weight, bias, gradient_filter=gradient_filter)  # auto: Triton
    grads = torch.autograd.grad(lse.sum(), (hidden, weight, bias))
    leaves = [x.detach().float().requires_grad_() for x in (hidden, weight, bias)]
    want = reference.item_logsumexp(*leaves)
    want_grads = torch.autograd.grad(want.sum(), leaves)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    assert lse.dtype == torch.float32
    assert (lse - want).abs().max() <= tolerance * want.abs().max()
    for got, expected in zip(grads, want_grads):
        assert got.dtype == dtype
        assert (got.float() - expected).abs().max() <= tolerance * expected.abs().max()
