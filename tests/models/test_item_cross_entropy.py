"""The fused full-softmax losses (item_cross_entropy, FullSoftmax) against the materialised
F.linear + F.cross_entropy path, the transition mixture without [M, N], and the sampled
softmax's popularity proposal, log-Q correction and in-batch negatives."""

import pytest
import torch
import torch.nn.functional as F

from stseq.models.transitions import TransitionPrior
from stseq.models.losses import FullSoftmax, SampledSoftmax, item_cross_entropy

M, D, N = 9, 6, 23


def case(dtype=torch.float64, bias=True):
    generator = torch.Generator().manual_seed(7)
    hidden = torch.randn(M, D, generator=generator, dtype=dtype).requires_grad_()
    weight = torch.randn(N, D, generator=generator, dtype=dtype).requires_grad_()
    item_bias = torch.randn(N, generator=generator, dtype=dtype).requires_grad_() if bias else None
    targets = torch.randint(0, N, (M,), generator=generator)
    return hidden, weight, item_bias, targets


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_cross_entropy_and_its_gradients(reduction, label_smoothing, ignore, bias):
    hidden, weight, item_bias, targets = case(bias=bias)
    if ignore:
        targets = targets.clone()
        targets[[1, 4]] = -100
    options = dict(reduction=reduction, label_smoothing=label_smoothing)
    want = F.cross_entropy(F.linear(hidden, weight, item_bias), targets, **options)
    got = item_cross_entropy(hidden, weight, item_bias, targets, chunk_rows=4, **options)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    inputs = [x for x in (hidden, weight, item_bias) if x is not None]
    grad = torch.rand_like(want)
    for a, b in zip(torch.autograd.grad(got, inputs, grad),
                    torch.autograd.grad(want, inputs, grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_every_target_ignored_gives_nan_mean_as_torch():
    hidden, weight, item_bias, targets = case()
    targets = torch.full_like(targets, 3)
    got = item_cross_entropy(hidden, weight, item_bias, targets, ignore_index=3)
    want = F.cross_entropy(F.linear(hidden, weight, item_bias), targets, ignore_index=3)
    assert torch.isnan(got) and torch.isnan(want)


def test_float32_and_the_triton_kernel():
    hidden, weight, item_bias, targets = (x.detach().float() if x.is_floating_point() else x
                                          for x in case())
    want = F.cross_entropy(F.linear(hidden, weight, item_bias), targets, reduction="none")
    for backend in ("native", "triton"):
        got = item_cross_entropy(hidden, weight, item_bias, targets, reduction="none",
                                 backend=backend)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_full_softmax_is_fused_by_default_and_matches_the_materialised_path():
    hidden, weight, item_bias, targets = case(dtype=torch.float32)
    assert FullSoftmax().fused
    fused = FullSoftmax(chunk_rows=4)(hidden, targets, weight, item_bias)
    materialised = FullSoftmax(fused=False)(hidden, targets, weight, item_bias)
    torch.testing.assert_close(fused, materialised)
    inputs = (hidden, weight, item_bias)
    for a, b in zip(torch.autograd.grad(fused.sum(), inputs),
                    torch.autograd.grad(materialised.sum(), inputs)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def prior_with_counts():
    prior = TransitionPrior(N, D)
    generator = torch.Generator().manual_seed(2)
    keys = torch.unique(torch.randint(0, N * N, (120,), generator=generator))  # sorted i * N + j
    prior.keys = keys
    prior.counts = torch.randint(1, 5, (len(keys),), generator=generator).float()
    with torch.no_grad():
        prior.gate.weight.normal_()
    return prior


@pytest.mark.parametrize("training", [False, True])
def test_mixture_loss_without_the_full_logits_matches_the_materialised_one(training):
    hidden, weight, item_bias, targets = case(dtype=torch.float32)
    prior = prior_with_counts()
    previous = prior.keys[torch.arange(M) * 7 % len(prior.keys)] // N  # items with transitions
    previous[0] = N  # the padding item: no prior
    follow = prior.keys[torch.arange(M) * 7 % len(prior.keys)] % N
    targets = torch.where(torch.arange(M) % 2 == 0, follow, targets)  # seen and unseen ones

    def loss(fused):
        mixture = prior.mixture(hidden, previous, targets if training else None)
        return FullSoftmax(fused=fused, chunk_rows=5)(hidden, targets, weight, item_bias,
                                                      mixture)

    fused, materialised = loss(True), loss(False)
    torch.testing.assert_close(fused, materialised, rtol=1e-5, atol=1e-5)
    parameters = (hidden, weight, item_bias, prior.gate.weight, prior.smoothing)
    for a, b in zip(torch.autograd.grad(fused.sum(), parameters),
                    torch.autograd.grad(materialised.sum(), parameters)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_mixture_over_item_ranges_matches_the_full_log_probs():
    hidden, weight, item_bias, _ = (x.detach() if isinstance(x, torch.Tensor) else x
                                    for x in case(dtype=torch.float32))
    prior = prior_with_counts()
    previous = prior.keys[torch.arange(M) * 5 % len(prior.keys)] // N
    logits = F.linear(hidden, weight, item_bias)
    want = prior.mixture(hidden, previous).log_probs(logits)
    mixture = prior.mixture(hidden, previous)
    log_softmax = torch.log_softmax(logits, 1)
    got = torch.cat([mixture.log_probs_range(log_softmax[:, start:start + 6], start)
                     for start in range(0, N, 6)], dim=1)
    torch.testing.assert_close(got, want)


def test_sampled_popularity_proposal_applies_the_log_q_correction():
    hidden, weight, item_bias, targets = (x.detach() if isinstance(x, torch.Tensor) else x
                                          for x in case())
    counts = torch.arange(1, N + 1).double()
    loss = SampledSoftmax(num_negatives=8, proposal="popularity", counts=counts, alpha=0.5)
    torch.manual_seed(11)
    got = loss(hidden, targets, weight, item_bias)
    torch.manual_seed(11)
    q = counts.sqrt() / counts.sqrt().sum()
    negatives = torch.multinomial(q, 8, replacement=True)
    logits = F.linear(hidden, weight, item_bias) - torch.log(8 * q)  # corrected, every item
    for row in range(M):
        others = [int(j) for j in negatives if j != targets[row]]
        candidates = logits[row, [int(targets[row]), *others]]
        torch.testing.assert_close(got[row].double(), -torch.log_softmax(candidates, 0)[0],
                                   rtol=1e-6, atol=1e-6)


def test_sampled_in_batch_negatives_are_the_other_targets():
    hidden, weight, item_bias, targets = (x.detach() if isinstance(x, torch.Tensor) else x
                                          for x in case())
    counts = torch.ones(N)
    loss = SampledSoftmax(num_negatives=3, counts=counts, in_batch=True)
    torch.manual_seed(12)
    got = loss(hidden, targets, weight, item_bias)
    torch.manual_seed(12)
    shared = torch.randint(0, N, (3,))
    # uniform shared draws (3 / N each) plus in-batch draws (M / N each, counts all equal):
    # one correction for every item, so it cancels
    logits = F.linear(hidden, weight, item_bias)
    for row in range(M):
        others = [int(j) for j in torch.cat([shared, targets]) if j != targets[row]]
        candidates = logits[row, [int(targets[row]), *others]]
        torch.testing.assert_close(got[row].double(), -torch.log_softmax(candidates, 0)[0],
                                   rtol=1e-6, atol=1e-6)


def test_sampled_options_need_counts_and_check_them():
    hidden, weight, item_bias, targets = case()
    with pytest.raises(ValueError, match="popularity proposal needs counts"):
        SampledSoftmax(proposal="popularity")(hidden, targets, weight, item_bias)
    with pytest.raises(ValueError, match="in_batch option needs counts"):
        SampledSoftmax(in_batch=True)(hidden, targets, weight, item_bias)
    with pytest.raises(ValueError, match="counts must be"):
        SampledSoftmax(counts=torch.zeros(N))
    with pytest.raises(ValueError, match="proposal must be"):
        SampledSoftmax(proposal="zipf")
    with pytest.raises(ValueError, match="alpha must be"):
        SampledSoftmax(alpha=2.0)


BAD = {
    "target too large": (dict(targets=torch.full((M,), N)), ValueError, "targets must be item"),
    "target negative": (dict(targets=torch.full((M,), -1)), ValueError, "row 0 has -1"),
    "targets float": (dict(targets=torch.zeros(M)), TypeError, "targets must be int64"),
    "targets shape": (dict(targets=torch.zeros(M + 1, dtype=torch.int64)), ValueError,
                      "targets must have shape"),
    "targets list": (dict(targets=[0] * M), TypeError, "targets must be a torch.Tensor"),
    "label_smoothing": (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    "reduction": (dict(reduction="avg"), ValueError, "reduction"),
    "weight shape": (dict(weight=torch.randn(N, D + 1, dtype=torch.float64)), ValueError,
                     "weight"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_named_error(name):
    hidden, weight, item_bias, targets = case()
    arguments = dict(hidden=hidden, weight=weight, bias=item_bias, targets=targets)
    changes, error, words = BAD[name]
    arguments |= changes
    with pytest.raises(error, match=words):
        item_cross_entropy(arguments.pop("hidden"), arguments.pop("weight"),
                           arguments.pop("bias"), arguments.pop("targets"), **arguments)
