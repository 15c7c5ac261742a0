"""Fuzz suite of item_logsumexp and the fused cross-entropy (tests/fuzzing.py): random shapes
(M = 0, D = 0, N = 1, chunks that do not divide N or exceed it), with and without bias, NaN/inf
planted in the scores; native and Triton (interpreter, float32) against the materialised twin,
forward and every gradient; one mutated argument at a time refused with a ValueError/TypeError
naming it; direct calls of the native ops with inconsistent arguments in a child interpreter."""

import hypothesis
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from stseq import reference
from stseq.models.losses import item_cross_entropy
from stseq.ops import item_logsumexp

from fuzzing import expect_named_error, record, run_isolated

OP = "item_logsumexp"
LOSS = "item_cross_entropy"
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
SPECIALS = (float("nan"), float("inf"), float("-inf"))
PER_MUTATION = hypothesis.settings(
    max_examples=max(1, hypothesis.settings().max_examples // 5))


@st.composite
def valid_cases(draw):
    rows, items, dim = draw(st.integers(0, 12)), draw(st.integers(1, 40)), draw(st.integers(0, 9))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    scale = draw(st.sampled_from((0.1, 1.0, 4.0)))
    hidden = torch.randn(rows, dim, generator=g, dtype=dtype) * scale
    weight = torch.randn(items, dim, generator=g, dtype=dtype)
    bias = torch.randn(items, generator=g, dtype=dtype) if draw(st.booleans()) else None
    for _ in range(draw(st.integers(0, 2))):  # plant a special value in the scores
        value = draw(st.sampled_from(SPECIALS))
        if bias is not None and draw(st.booleans()):
            bias[draw(st.integers(0, items - 1))] = value
        elif rows and dim:
            hidden[draw(st.integers(0, rows - 1)), draw(st.integers(0, dim - 1))] = value
    chunk = draw(st.one_of(st.none(), st.integers(1, 50)))
    return dict(hidden=hidden, weight=weight, bias=bias, chunk_size=chunk)


def _with_grads(fn, case, grad):
    leaves = [x.clone().requires_grad_() for x in (case["hidden"], case["weight"], case["bias"])
              if x is not None]
    lse = fn(*leaves)
    return (lse.detach(), *torch.autograd.grad(lse, leaves, grad)) if lse.numel() else (lse,)


def _assert_same(got, want, dtype):
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        finite = torch.isfinite(b)
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        assert torch.equal(a[torch.isinf(b)], b[torch.isinf(b)])
        scale = b[finite].abs().max().clamp(min=1.0) if finite.any() else 1.0
        assert ((a[finite] - b[finite]).abs() <= TOLERANCE[dtype] * scale).all()


@given(valid_cases(), st.sampled_from(("native", "triton")))
def test_valid_inputs_match_the_materialised_twin(case, backend):
    dtype = case["hidden"].dtype
    if backend == "triton" and dtype == torch.float64:
        backend = "native"  # the Triton kernels take float32/16
    rows = case["hidden"].shape[0]
    grad = torch.randn(rows, dtype=dtype)
    want = _with_grads(lambda *x: reference.item_logsumexp(*_split(x, case)), case, grad)
    got = _with_grads(lambda *x: item_logsumexp(*_split(x, case), chunk_size=case["chunk_size"],
                                                backend=backend), case, grad)
    _assert_same(got, want, dtype)
    record(OP, "match")


def _split(leaves, case):
    return (*leaves[:2], leaves[2] if case["bias"] is not None else None)


@given(valid_cases(), st.floats(0.0, 1.0), st.booleans())
def test_fused_cross_entropy_matches_f_cross_entropy(case, smoothing, ignore):
    rows, items = case["hidden"].shape[0], case["weight"].shape[0]
    targets = torch.randint(0, items, (rows,))
    if ignore and rows:
        targets[0] = -100
    options = dict(reduction="none", label_smoothing=smoothing)
    want = F.cross_entropy(F.linear(case["hidden"], case["weight"], case["bias"]), targets,
                           **options)
    got = item_cross_entropy(case["hidden"], case["weight"], case["bias"], targets,
                             chunk_rows=case["chunk_size"] or 3, **options)
    # label smoothing over -inf scores: torch counts the -inf log-probabilities as 0 in the
    # smoothing term, the fused loss as -inf (its mean score); compare where both are finite
    # or the scores are all finite
    scores_finite = torch.isfinite(F.linear(case["hidden"], case["weight"], case["bias"])).all(1)
    keep = scores_finite | (smoothing == 0)
    _assert_same((got[keep],), (want[keep],), case["hidden"].dtype)
    record(LOSS, "match")


H, W, B = torch.randn(3, 4), torch.randn(7, 4), torch.randn(7)
MUTATIONS = {
    "hidden": [torch.randn(3), torch.ones(3, 4, dtype=torch.int32), "x", torch.randn(3, 4, 1),
               torch.randn(3, 4, dtype=torch.float64)],
    "weight": [torch.randn(7, 5), torch.randn(0, 4), torch.randn(7), None,
               torch.randn(7, 4, dtype=torch.float64), torch.ones(7, 4, dtype=torch.int64)],
    "bias": [torch.randn(6), torch.randn(7, 1), torch.randn(7, dtype=torch.float64), 1.0,
             torch.randn(7, device="meta")],
    "chunk_size": [0, -3, 2.5, True, "8"],
    "gradient_filter": [1, "no", None],
    "backend": ["gpu", 3],
}


@pytest.mark.parametrize("argument", list(MUTATIONS))
@PER_MUTATION
@given(data=st.data())
def test_one_mutated_argument_is_named(argument, data):
    value = data.draw(st.sampled_from(MUTATIONS[argument]))
    arguments = dict(hidden=H, weight=W, bias=B)
    arguments[argument] = value
    expect_named_error(OP, lambda: item_logsumexp(arguments.pop("hidden"),
                                                  arguments.pop("weight"),
                                                  arguments.pop("bias"), **arguments), argument)


@PER_MUTATION
@given(st.sampled_from([torch.tensor([0, 7, 1]), torch.tensor([-1, 0, 0]),
                        torch.tensor([0, 1]), torch.zeros(3), torch.tensor([[0, 1, 2]])]))
def test_bad_targets_are_named(targets):
    expect_named_error(LOSS, lambda: item_cross_entropy(H, W, B, targets), "targets")


def direct_call(hidden, weight, bias, chunk, grad, lse, backward):
    """Run by the child of run_isolated: the native op (or its backward), unchecked arguments."""
    if backward:
        outputs = torch.ops.stseq.item_logsumexp_backward(grad, hidden, weight, bias, lse,
                                                          chunk, False)
        return [list(x.shape) for x in outputs]
    return list(torch.ops.stseq.item_logsumexp(hidden, weight, bias, chunk, False).shape)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 5),
                          st.integers(0, 7), st.integers(-2, 9), st.integers(0, 6),
                          st.booleans(), st.sampled_from(("float32", "float16", "float64"))),
                min_size=8, max_size=8))
@hypothesis.settings(max_examples=2)
def test_direct_native_calls_never_crash(shapes):
    cases = []
    for rows, dim, items, bias_size, chunk, lse_size, backward, dtype in shapes:
        kind = getattr(torch, dtype)
        cases.append(dict(hidden=torch.randn(rows, dim, dtype=kind),
                          weight=torch.randn(items, (dim + bias_size) % 6, dtype=kind),
                          bias=torch.randn(bias_size, dtype=kind) if bias_size else None,
                          chunk=chunk, grad=torch.randn(lse_size), lse=torch.randn(lse_size),
                          backward=backward))
    results = run_isolated("test_item_logsumexp_fuzz:direct_call", cases)
    assert len(results) == len(cases)
    for result in results:
        assert result["outcome"] == "returned" or result["type"] in ("ValueError",
                                                                      "RuntimeError")
        record(OP, "no-crash")
