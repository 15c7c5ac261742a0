"""item_cross_entropy's native op (losses and gradients in one pass over row chunks) against the
materialised twin F.linear + F.cross_entropy: forward and every gradient for the summed/mean
losses (stored gradients, scaled) and for any other grad_output (recomputed); chunk edges,
ignore_index, label smoothing, NaN/inf, gradcheck, opcheck, torch.compile, determinism,
float16 inputs, autocast, the transition mixture, inputs left untouched and bad arguments."""

import pytest
import torch
import torch.nn.functional as F

from stseq import reference
from stseq.ops import item_cross_entropy, item_logsumexp

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def random_case(rows, items, dim, *, dtype=torch.float64, bias=True, ignored=(), seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=generator, dtype=dtype).requires_grad_()
    weight = torch.randn(items, dim, generator=generator, dtype=dtype).requires_grad_()
    item_bias = (torch.randn(items, generator=generator, dtype=dtype).requires_grad_()
                 if bias else None)
    targets = torch.randint(0, items, (rows,), generator=generator)
    targets[list(ignored)] = -100
    return hidden, weight, item_bias, targets


def losses_and_grads(case, grad, **options):
    hidden, weight, item_bias, targets = case
    inputs = [x for x in (hidden, weight, item_bias) if x is not None]
    losses = item_cross_entropy(hidden, weight, item_bias, targets, **options)
    return (losses.detach(), *torch.autograd.grad(losses, inputs, grad))


def assert_close(got, want, dtype):
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        finite = torch.isfinite(b)
        assert torch.equal(a[~finite & ~torch.isnan(b)], b[~finite & ~torch.isnan(b)])
        scale = b[finite].abs().max().clamp(min=1.0) if finite.any() else 1.0
        assert ((a[finite] - b[finite]).abs() <= TOLERANCE[dtype] * scale).all()


# (rows, items, dim, chunk_rows): chunks that do not divide M, a chunk larger than M, M = 1,
# N = 1, blocks of one row (N large enough that one row fills a block).
SHAPES = [(9, 50, 8, 4), (1, 37, 5, 7), (6, 10, 4, 64), (4, 1, 3, 1), (11, 140_000, 2, 5)]


@pytest.mark.parametrize("rows,items,dim,chunk", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("grad_kind", ["sum", "mean", "random"])
def test_native_matches_cross_entropy_float64(rows, items, dim, chunk, bias, grad_kind):
    case = random_case(rows, items, dim, bias=bias, ignored=[0] if rows > 2 else [])
    reduction = {"sum": "sum", "mean": "mean", "random": "none"}[grad_kind]
    grad = torch.randn(rows, dtype=torch.float64) if grad_kind == "random" else None
    options = dict(reduction=reduction)
    want = losses_and_grads(case, grad, backend="reference", **options)
    got = losses_and_grads(case, grad, backend="native", chunk_rows=chunk, **options)
    assert_close(got, want, torch.float64)


@pytest.mark.parametrize("smoothing", [0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_label_smoothing_and_ignore_index(smoothing, reduction):
    case = random_case(10, 23, 6, ignored=[1, 4])
    grad = torch.rand(10, dtype=torch.float64) if reduction == "none" else None
    options = dict(reduction=reduction, label_smoothing=smoothing)
    want = losses_and_grads(case, grad, backend="reference", **options)
    got = losses_and_grads(case, grad, backend="native", chunk_rows=3, **options)
    assert_close(got, want, torch.float64)


def test_other_ignore_index_and_every_row_ignored():
    hidden, weight, item_bias, targets = random_case(5, 12, 4)
    targets[2] = 7
    for ignore in (7, -1):
        options = dict(ignore_index=ignore, reduction="none")
        grad = torch.randn(5, dtype=torch.float64)
        want = losses_and_grads((hidden, weight, item_bias, targets), grad, backend="reference",
                                **options)
        got = losses_and_grads((hidden, weight, item_bias, targets), grad, backend="native",
                               **options)
        assert_close(got, want, torch.float64)
    every = torch.full_like(targets, 3)
    got = item_cross_entropy(hidden, weight, item_bias, every, ignore_index=3, backend="native")
    assert torch.isnan(got)  # 0 / 0, as F.cross_entropy's mean over no targets


def test_float32_large_scores():
    case = random_case(33, 70, 16, dtype=torch.float32)
    case = ((case[0] * 3).detach().requires_grad_(), *case[1:])  # scores ~ +-50
    for grad in (None, torch.randn(33)):
        reduction = "mean" if grad is None else "none"
        want = losses_and_grads(case, grad, backend="reference", reduction=reduction)
        got = losses_and_grads(case, grad, backend="native", chunk_rows=8, reduction=reduction)
        assert_close(got, want, torch.float32)


def test_nan_and_inf_scores_as_f_cross_entropy():
    hidden, weight, item_bias, targets = random_case(7, 6, 3)
    inf = float("inf")
    bias = item_bias.detach().clone()
    hidden = hidden.detach().clone()
    hidden[1, 0] = float("nan")          # a NaN row
    hidden[2] = torch.tensor([inf, 0.0, 0.0])  # +inf and -inf scores in one row
    hidden[6, 1] = float("nan")          # a NaN row whose target is ignored
    bias[4] = -inf                       # every row scores item 4 at -inf
    targets[3], targets[5], targets[6] = 4, 2, -100  # a -inf target score
    case = [hidden.requires_grad_(), weight, bias.requires_grad_(), targets]
    for reduction, grad in (("sum", None), ("none", torch.randn(7, dtype=torch.float64))):
        want = losses_and_grads(case, grad, backend="reference", reduction=reduction)
        got = losses_and_grads(case, grad, backend="native", chunk_rows=2, reduction=reduction)
        assert_close(got, want, torch.float64)


def test_rows_of_only_minus_inf_give_nan():
    hidden, weight, item_bias, targets = random_case(3, 5, 2)
    bias = torch.full((5,), float("-inf"), dtype=torch.float64, requires_grad=True)
    want = reference.item_cross_entropy(hidden, weight, bias, targets)
    got = item_cross_entropy(hidden, weight, bias, targets, reduction="none", backend="native")
    assert torch.isnan(want).all() and torch.isnan(got).all()


def mixture_case(rows, seed=1):
    """log_keep = log(1 - w) and log_prior = log(w q) (-inf on rows without a prior)."""
    generator = torch.Generator().manual_seed(seed)
    gate = torch.randn(rows, generator=generator, dtype=torch.float64)
    prior = torch.rand(rows, generator=generator, dtype=torch.float64)
    log_prior = torch.nn.functional.logsigmoid(gate) + prior.log()
    log_prior[::3] = float("-inf")
    return (torch.nn.functional.logsigmoid(-gate).requires_grad_(),
            log_prior.requires_grad_())


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_transition_mixture_matches_the_materialised_formula(reduction):
    hidden, weight, item_bias, targets = random_case(10, 40, 6)
    log_keep, log_prior = mixture_case(10)
    inputs = (hidden, weight, item_bias, log_keep, log_prior)
    grad = torch.randn(10, dtype=torch.float64) if reduction == "none" else None
    ce = reference.item_cross_entropy(hidden, weight, item_bias, targets)
    want = -torch.logaddexp(log_keep - ce, log_prior)
    want = want.sum() if reduction == "sum" else want
    got = item_cross_entropy(hidden, weight, item_bias, targets, log_keep=log_keep,
                             log_prior=log_prior, reduction=reduction, chunk_rows=3,
                             backend="native")
    assert_close((got.detach(), *torch.autograd.grad(got, inputs, grad)),
                 (want.detach(), *torch.autograd.grad(want, inputs, grad)), torch.float64)


def test_gradcheck_float64():
    hidden, weight, item_bias, targets = random_case(5, 9, 3, ignored=[2])
    for reduction in ("mean", "none"):  # stored gradients scaled; recomputed
        assert torch.autograd.gradcheck(
            lambda h, w, b: item_cross_entropy(h, w, b, targets, label_smoothing=0.2,
                                               reduction=reduction, chunk_rows=2,
                                               backend="native"),
            (hidden, weight, item_bias))
    log_keep, log_prior = mixture_case(5)
    log_prior = log_prior.detach().clamp(min=-30).requires_grad_()  # finite differences
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda h, w, b, keep, prior: item_cross_entropy(
                h, w, b, targets, log_keep=keep, log_prior=prior, reduction=reduction,
                chunk_rows=2, backend="native"),
            (hidden, weight, item_bias, log_keep, log_prior))


def test_opcheck():
    hidden, weight, item_bias, targets = (x.detach() for x in random_case(6, 11, 4, ignored=[1]))
    mixture = [torch.randn(6, dtype=torch.float64).requires_grad_() for _ in range(2)]
    for bias, log_keep_and_prior, compute_grad in ((None, (None, None), False),
                                                   (item_bias, mixture, True)):
        leaves = [x.clone().requires_grad_() if x is not None else None
                  for x in (hidden, weight, bias)]
        torch.library.opcheck(torch.ops.stseq.item_cross_entropy,
                              (*leaves, targets, *log_keep_and_prior, -100,
                               0.0 if bias is None else 0.1 * (log_keep_and_prior[0] is None),
                               4, compute_grad))


def test_torch_compile_fullgraph():
    hidden, weight, item_bias, targets = random_case(8, 20, 4, dtype=torch.float32)

    def loss(h, w, b):
        return item_cross_entropy(h, w, b, targets, chunk_rows=3, backend="native")

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    want = losses_and_grads((hidden, weight, item_bias, targets), None, backend="native",
                            chunk_rows=3)
    got = compiled(hidden, weight, item_bias)
    grads = torch.autograd.grad(got, (hidden, weight, item_bias))
    assert_close((got.detach(), *grads), want, torch.float32)


def test_bitwise_deterministic():
    case = random_case(40, 3000, 16, dtype=torch.float32)
    first = losses_and_grads(case, torch.randn(40), backend="native", reduction="none",
                             chunk_rows=7)
    second = losses_and_grads(case, torch.randn(40), backend="native", reduction="none",
                              chunk_rows=7)
    assert all(torch.equal(a, b) for a, b in zip(first[:1], second[:1]))
    summed = [losses_and_grads(case, None, backend="native", chunk_rows=7) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*summed))


def test_float16_inputs_accumulate_in_float32():
    case = [x.detach().half().requires_grad_() for x in random_case(9, 30, 8)[:3]]
    targets = random_case(9, 30, 8)[3]
    losses = item_cross_entropy(*case, targets, reduction="none", backend="native")
    assert losses.dtype == torch.float32
    want = reference.item_cross_entropy(*[x.detach().float() for x in case], targets)
    torch.testing.assert_close(losses, want, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(losses.sum(), case)
    assert [g.dtype for g in grads] == [torch.float16] * 3


def test_autocast_runs_both_ops_in_float32_on_the_cpu():
    hidden, weight, item_bias, targets = random_case(6, 15, 4, dtype=torch.float32)
    plain_loss = item_cross_entropy(hidden, weight, item_bias, targets)
    plain_lse = item_logsumexp(hidden, weight, item_bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = item_cross_entropy(hidden, weight, item_bias, targets)
        lse = item_logsumexp(hidden.bfloat16(), weight.bfloat16(), item_bias.bfloat16())
        projected = F.linear(hidden, torch.eye(4))  # bfloat16 under autocast: taken too
        lse_of_bf16 = item_logsumexp(projected, weight, None)
    assert loss.dtype == lse.dtype == lse_of_bf16.dtype == torch.float32
    assert torch.equal(loss, plain_loss)
    log_keep, log_prior = (x.detach().float() for x in mixture_case(6))
    plain_mixed = item_cross_entropy(hidden, weight, item_bias, targets, log_keep=log_keep,
                                     log_prior=log_prior)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = item_cross_entropy(hidden, weight, item_bias, targets, log_keep=log_keep,
                                   log_prior=log_prior)
    assert torch.equal(mixed, plain_mixed) and not torch.equal(mixed, plain_loss)
    torch.testing.assert_close(lse, plain_lse, atol=0.1, rtol=0.02)  # inputs rounded to bf16
    grads = torch.autograd.grad(loss, (hidden, weight, item_bias))
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_inputs_are_not_mutated():
    case = random_case(7, 19, 5, ignored=[3])
    before = [x.detach().clone() for x in case if x is not None]
    losses_and_grads(case, torch.randn(7, dtype=torch.float64), backend="native",
                     reduction="none", label_smoothing=0.3, chunk_rows=2)
    for x, y in zip([x for x in case if x is not None], before):
        assert torch.equal(x.detach(), y)


BAD = {
    "chunk_rows zero": (dict(chunk_rows=0), ValueError, "chunk_rows"),
    "chunk_rows float": (dict(chunk_rows=2.5), ValueError, "chunk_rows"),
    "label_smoothing bool": (dict(label_smoothing=True), ValueError, "label_smoothing"),
    "label_smoothing negative": (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
    "ignore_index float": (dict(ignore_index=1.5), TypeError, "ignore_index"),
    "reduction": (dict(reduction="avg"), ValueError, "reduction"),
    "backend": (dict(backend="gpu"), ValueError, "backend"),
    "log_keep alone": (dict(log_keep=torch.zeros(4)), ValueError, "log_keep and log_prior"),
    "log_prior shape": (dict(log_keep=torch.zeros(4), log_prior=torch.zeros(3)), ValueError,
                        "log_prior must have shape"),
    "mixture smoothing": (dict(log_keep=torch.zeros(4), log_prior=torch.zeros(4),
                               label_smoothing=0.1), ValueError, "label_smoothing"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_arguments_raise_named_errors(name):
    hidden, weight, item_bias, targets = random_case(4, 9, 3)
    changes, error, words = BAD[name]
    with pytest.raises(error, match=words):
        item_cross_entropy(hidden, weight, item_bias, targets, **changes)


def test_native_op_checks_its_arguments():
    hidden, weight, item_bias, targets = (x.detach() for x in random_case(4, 9, 3))
    op = torch.ops.stseq.item_cross_entropy
    with pytest.raises(ValueError, match="targets must be item ids"):
        op(hidden, weight, item_bias, torch.tensor([0, 9, 1, 2]), None, None, -100, 0.0, 2,
           True)
    with pytest.raises(ValueError, match="targets must be a CPU int64"):
        op(hidden, weight, item_bias, targets[:3], None, None, -100, 0.0, 2, True)
    with pytest.raises(ValueError, match="chunk_rows"):
        op(hidden, weight, item_bias, targets, None, None, -100, 0.0, 0, True)
    with pytest.raises(ValueError, match="label_smoothing"):
        op(hidden, weight, item_bias, targets, None, None, -100, 1.5, 2, True)
    with pytest.raises(ValueError, match="log_keep and log_prior go together"):
        op(hidden, weight, item_bias, targets, torch.zeros(4, dtype=torch.float64), None, -100,
           0.0, 2, True)
    stored = op(hidden, weight, item_bias, targets, None, None, -100, 0.0, 2, True)[1:]
    with pytest.raises(ValueError, match="grad must have shape"):
        torch.ops.stseq.item_cross_entropy_backward(torch.ones(3, dtype=torch.float64), hidden,
                                                    weight, item_bias, targets, None, None,
                                                    *stored, -100, 0.0, 2)
