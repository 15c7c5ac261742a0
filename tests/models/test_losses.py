"""The training losses against direct computations."""

import pytest
import torch
import torch.nn.functional as F

from stseq.models.losses import BinaryCrossEntropy, FullSoftmax, SampledSoftmax, build_loss

M, D, N = 7, 5, 11


@pytest.fixture
def inputs():
    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(M, D, generator=generator)
    weight = torch.randn(N, D, generator=generator)
    bias = torch.randn(N, generator=generator)
    targets = torch.randint(0, N, (M,), generator=generator)
    return hidden, targets, weight, bias


def test_full_softmax_is_cross_entropy_over_all_items(inputs):
    hidden, targets, weight, bias = inputs
    expected = F.cross_entropy(hidden @ weight.T + bias, targets, reduction="none")
    torch.testing.assert_close(FullSoftmax()(*inputs), expected)


def test_sampled_softmax_over_the_drawn_negatives(inputs):
    hidden, targets, weight, bias = inputs
    torch.manual_seed(5)
    actual = SampledSoftmax(num_negatives=6)(*inputs)
    torch.manual_seed(5)
    negatives = torch.randint(0, N, (6,))
    logits = hidden @ weight.T + bias  # [M, N]
    for row in range(M):
        others = [int(j) for j in negatives if j != targets[row]]  # accidental hits dropped
        candidates = logits[row, [int(targets[row]), *others]]
        torch.testing.assert_close(actual[row], -torch.log_softmax(candidates, 0)[0])


def test_binary_cross_entropy_with_negatives(inputs):
    hidden, targets, weight, bias = inputs
    torch.manual_seed(6)
    actual = BinaryCrossEntropy(num_negatives=3)(*inputs)
    torch.manual_seed(6)
    negatives = torch.randint(0, N, (M, 3))
    logits = hidden @ weight.T + bias
    for row in range(M):
        expected = -F.logsigmoid(logits[row, targets[row]])
        for j in negatives[row]:
            if j != targets[row]:
                expected = expected - F.logsigmoid(-logits[row, j])
        torch.testing.assert_close(actual[row], expected)


def test_build_loss():
    assert isinstance(build_loss(), FullSoftmax)
    assert build_loss("sampled").num_negatives == 100
    assert build_loss("bce", num_negatives=4).num_negatives == 4
    with pytest.raises(ValueError, match="loss must be one of"):
        build_loss("hinge")
    with pytest.raises(ValueError, match="num_negatives must be >= 1"):
        build_loss("sampled", num_negatives=0)


class TableMixture:
    """A mixture with a dense [M, N] table: log((1 - w) softmax(logits) + w table[columns])."""

    def __init__(self, table, w):
        self.table, self.w = table, w

    def log_probs(self, logits, columns=None):
        q = self.table if columns is None else torch.where(
            columns >= 0, self.table.gather(1, columns.clamp(min=0)), 0.0)
        return ((1 - self.w) * torch.softmax(logits, -1) + self.w * q).log()

    def log_probs_at(self, log_softmax, columns):
        return ((1 - self.w) * log_softmax.exp() + self.w * self.table.gather(1, columns)).log()


def test_losses_take_the_mixture_over_their_candidates(inputs):
    hidden, targets, weight, bias = inputs
    table = torch.softmax(torch.randn(M, N, generator=torch.Generator().manual_seed(4)), 1)
    mixture = TableMixture(table, 0.3)
    logits = hidden @ weight.T + bias  # [M, N]
    full = FullSoftmax()(*inputs, mixture)
    expected = -((0.7 * torch.softmax(logits, 1) + 0.3 * table).log()).gather(
        1, targets[:, None])[:, 0]
    torch.testing.assert_close(full, expected)
    torch.manual_seed(5)
    sampled = SampledSoftmax(num_negatives=6)(*inputs, mixture)
    torch.manual_seed(5)
    negatives = torch.randint(0, N, (6,))
    for row in range(M):
        others = [int(j) for j in negatives if j != targets[row]]  # accidental hits dropped
        candidates = [int(targets[row]), *others]
        p = 0.7 * torch.softmax(logits[row, candidates], 0) + 0.3 * table[row, candidates]
        torch.testing.assert_close(sampled[row], -p[0].log())
    torch.manual_seed(6)
    bce = BinaryCrossEntropy(num_negatives=3)(*inputs, mixture)
    torch.manual_seed(6)
    negatives = torch.randint(0, N, (M, 3))
    for row in range(M):
        others = [int(j) for j in negatives[row] if j != targets[row]]
        candidates = [int(targets[row]), *others]
        p = 0.7 * torch.softmax(logits[row, candidates], 0) + 0.3 * table[row, candidates]
        torch.testing.assert_close(bce[row], -p[0].log() - torch.log1p(-p[1:]).sum())
