"""time_decay_attention: every combination of optional inputs runs forward and backward on every
backend against the float64 oracle; masked pairs never enter the arithmetic: a NaN, inf or huge
value in a query, key, value or output gradient that a query cannot see (causal, window,
padding, another sequence) reaches neither its output nor any gradient, on the chunked path and
in the Triton kernels (interpreted on CPU), exactly where the oracle and SDPA say."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from stseq import ops, reference

from test_time_decay_attention import TOLERANCE, random_case

LEARNABLE = ("q", "k", "v", "decay", "time_bias")
LAYOUTS = ("full", "lengths", "jagged")
MASKS = ((True, None), (False, 3), (True, 4), (False, None))  # (causal, window)


def learnable(case):
    return [case[name] for name in LEARNABLE if case.get(name) is not None]


def outputs(case, backend, grad_out, **options):
    """(out, gradients of every learnable input) of a backend, or of the oracle (None)."""
    if backend is None:
        out = reference.time_decay_attention(**case, **options)
    else:
        out = ops.time_decay_attention(**case, **options, backend=backend)
    return (out,) + torch.autograd.grad(out, learnable(case), grad_outputs=grad_out)


def float64_twin(case):
    return {name: value.detach().double().requires_grad_()
            if name in LEARNABLE and value is not None else value for name, value in case.items()}


def assert_same_values(actual, expected, dtype):
    """NaN and +-inf at the same elements, the finite elements within the dtype's tolerance of
    the larger of 1 and their largest magnitude (the decay and table gradients sum dS over
    many pairs, |dS| <~ 1, that cancel: their error is relative to the terms, not the sum)."""
    assert torch.equal(actual.isnan(), expected.isnan()), (
        f"NaN at {actual.isnan().sum()} elements, the oracle at {expected.isnan().sum()}")
    for sign in (1, -1):
        assert torch.equal(actual == sign * math.inf, expected == sign * math.inf)
    finite = expected.isfinite()
    error = (actual[finite].double() - expected[finite]).abs().max().item() if finite.any() else 0
    scale = max(1.0, expected[finite].abs().max().item() if finite.any() else 0)
    assert error <= TOLERANCE[dtype] * scale, f"error {error:.2e} at scale {scale:.2e}"


def assert_matches_oracle(case, backend, grad_out, **options):
    results = outputs(case, backend, grad_out, **options)
    expected = outputs(float64_twin(case), None, grad_out.double(), **options)
    for actual, oracle in zip(results, expected, strict=True):
        assert_same_values(actual, oracle, case["q"].dtype)
    return results


def combination_case(layout, decay, table, dtype=torch.float32):
    case = random_case(3, 2, 11, 16, jagged=layout == "jagged", lengths=layout == "lengths",
                       table=table, dtype=dtype)
    if not decay:
        case["decay"] = None
    return case


def grad_like(case, seed=1):
    return torch.randn(case["q"].shape, generator=torch.Generator().manual_seed(seed)).to(
        case["q"].dtype)


COMBINATIONS = list(itertools.product(LAYOUTS, (False, True), (False, True), MASKS))


@pytest.mark.parametrize("layout,decay,table,mask", COMBINATIONS,
                         ids=lambda value: str(value).replace(" ", ""))
def test_every_optional_input_combination_reference_path(layout, decay, table, mask):
    case = combination_case(layout, decay, table, torch.float64)
    causal, window = mask
    assert_matches_oracle(case, "reference", grad_like(case), causal=causal, window=window,
                          bucket_scale=2.5)


@pytest.mark.parametrize("index,combination",
                         list(enumerate(itertools.product(LAYOUTS, (False, True), (False, True)))),
                         ids=lambda value: str(value).replace(" ", ""))
def test_every_optional_input_combination_triton(index, combination):
    # Each decay/time_bias/layout combination once, the masks in turn (the interpreter is slow).
    layout, decay, table = combination
    causal, window = MASKS[index % len(MASKS)]
    case = combination_case(layout, decay, table)
    assert_matches_oracle(case, "triton", grad_like(case), causal=causal, window=window,
                          bucket_scale=2.5)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_backward_with_no_learnable_bias_input(backend):
    # The issue's example: no decay, no time_bias, gradients for q only (it raised "may not
    # alias" because the backward returned one empty tensor for both).
    q = torch.randn(1, 1, 3, 16, requires_grad=True)
    out = ops.time_decay_attention(q, q.detach(), q.detach(), torch.tensor([[0, 1, 2]]), None,
                                   backend=backend)
    out.sum().backward()
    expected = reference.time_decay_attention(q.detach().double().requires_grad_(),
                                              q.detach().double(), q.detach().double(),
                                              torch.tensor([[0, 1, 2]]), None)
    torch.testing.assert_close(out, expected.float())
    assert q.grad.isfinite().all() and q.grad.abs().sum() > 0


# ---- poisoned inputs ----------------------------------------------------------------------

# (layout, causal, window, poisoned (row, position) or jagged token): the position is seen by
# some queries (not all) and hidden from the others, or padding nobody sees.
MASK_CASES = {
    "causal": ("full", True, None, (1, 13)),
    "window": ("full", False, 3, (1, 10)),
    "padding": ("lengths", True, None, (1, 15)),
    "padding-bidirectional": ("lengths", False, None, (1, 15)),
    "jagged": ("jagged", True, None, 14),
}
POISONS = [("k", math.nan), ("k", math.inf), ("v", math.nan), ("v", -math.inf), ("q", math.nan),
           ("grad", math.nan), ("grad", math.inf)]


def poisoned(mask, which, value):
    """(case, grad_out) with ``which`` (q, k, v or the output gradient) set to ``value`` at the
    mask's position in every head and dimension."""
    layout, causal, window, where = MASK_CASES[mask]
    case = random_case(2, 2, 20, 16, jagged=layout == "jagged", lengths=layout == "lengths",
                       table=True, row_lengths=[20, 12] if layout == "lengths" else [7, 20])
    # Gaps in units of ~4 months keep every score O(1): no probability underflows to 0 in
    # float32 while it stays positive in float64 (0 * inf is NaN, tiny * inf is inf).
    case["time_unit"] = 1e7
    grad_out = grad_like(case)
    index = (where[0], slice(None), where[1]) if layout != "jagged" else where
    if which == "grad":
        grad_out[index] = value
    else:
        tensor = case[which].detach().clone()
        tensor[index] = value
        case[which] = tensor.requires_grad_()
    return case, grad_out, dict(causal=causal, window=window)


@pytest.mark.parametrize("which,value", POISONS, ids=lambda value: str(value))
@pytest.mark.parametrize("mask", list(MASK_CASES))
def test_poison_reaches_only_what_sees_it_reference_path(mask, which, value):
    case, grad_out, options = poisoned(mask, which, value)
    out, *grads = assert_matches_oracle(case, "reference", grad_out, **options)
    if mask.startswith("padding"):  # nobody sees padding: everything stays finite
        assert all(x.isfinite().all() for x in [out, *grads])
    elif which in ("k", "v"):  # the queries before the poisoned key never see it
        hidden = 10 - 3 if mask == "window" else 13
        if mask != "jagged":
            assert out[1, :, :hidden].isfinite().all() and grads[0][1, :, :hidden].isfinite().all()


TRITON_POISONS = [("causal", "k", math.nan), ("causal", "v", math.nan),
                  ("window", "v", math.inf), ("jagged", "q", math.nan),
                  ("padding", "grad", math.nan), ("padding-bidirectional", "k", -math.inf)]


@pytest.mark.parametrize("mask,which,value", TRITON_POISONS, ids=str)
def test_poison_reaches_only_what_sees_it_triton(mask, which, value):
    case, grad_out, options = poisoned(mask, which, value)
    assert_matches_oracle(case, "triton", grad_out, **options)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_huge_hidden_key_does_not_leak_through_the_mask(backend):
    # A finite key of 1e30 scores ~1e30: added to the chunked path's finite mask (-1e30) it
    # would come out near 0, and the queries before it would attend to it.
    case = random_case(1, 2, 20, 16, lengths=False, table=True)
    clean = outputs(case, backend, grad_like(case))
    key = case["k"].detach().clone()
    key[0, :, 13] = 1e30
    dirty = outputs(dict(case, k=key.requires_grad_()), backend, grad_like(case))
    torch.testing.assert_close(dirty[0][:, :, :13], clean[0][:, :, :13])
    torch.testing.assert_close(dirty[1][:, :, :13], clean[1][:, :, :13])  # grad q


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("value", [math.nan, math.inf], ids=str)
def test_hidden_nonfinite_key_matches_sdpa(backend, value):
    # The example: causal attention with a NaN in key 3 of 4; SDPA (is_causal) gives
    # NaN in row 3 only.
    q, k, v = torch.randn(3, 1, 2, 4, 16, generator=torch.Generator().manual_seed(0)).unbind(0)
    k[0, :, 3] = value
    out = ops.time_decay_attention(q, k, v, torch.zeros(1, 4, dtype=torch.long), None,
                                   backend=backend)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.equal(out.isnan(), expected.isnan()) and expected[0, :, 3].isnan().all()
    torch.testing.assert_close(out[0, :, :3], expected[0, :, :3])


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_query_whose_every_visible_score_is_minus_inf_gives_nan(backend):
    # torch's softmax over scores that are all -inf is NaN; a masked key must not stand in for
    # them (the chunked path's finite mask value did, the kernels returned 0).
    q, k, v = torch.randn(3, 1, 1, 4, 16, generator=torch.Generator().manual_seed(0)).unbind(0)
    q[..., 0] = 1.0
    k[0, 0, 0] = 0.0
    k[0, 0, 0, 0] = -math.inf  # key 0 scores -inf with every query; query 0 sees only key 0
    timestamps = torch.zeros(1, 4, dtype=torch.long)
    out = ops.time_decay_attention(q, k, v, timestamps, None, backend=backend)
    expected = reference.time_decay_attention(q.double(), k.double(), v.double(), timestamps,
                                              None)
    assert out[0, 0, 0].isnan().all() and out[0, 0, 1:].isfinite().all()
    assert_same_values(out, expected, torch.float32)
