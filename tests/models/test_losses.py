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


class TableOffsets:
    """``offsets`` of a dense [M, N] table of extra scores."""

    def __init__(self, table):
        self.table = table

    def __call__(self, columns):
        return self.table.gather(1, columns)

    def add_to(self, logits):
        return logits + self.table


@pytest.mark.parametrize("loss", [FullSoftmax(), SampledSoftmax(6), BinaryCrossEntropy(3)],
                         ids=["ce", "sampled", "bce"])
def test_offsets_add_to_every_scored_item(inputs, loss):
    # the same loss as with a scoring layer that adds the table itself: hidden gets M one-hot
    # columns, weight the table's columns, so logits = hidden @ weight.T + bias + table
    hidden, targets, weight, bias = inputs
    table = torch.randn(M, N, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(7)
    actual = loss(hidden, targets, weight, bias, TableOffsets(table))
    torch.manual_seed(7)
    expected = loss(torch.cat([hidden, torch.eye(M)], 1), targets,
                    torch.cat([weight, table.T], 1), bias)
    torch.testing.assert_close(actual, expected)
