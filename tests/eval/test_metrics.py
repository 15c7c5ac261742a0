"""Ranking metrics against hand-computed cases (ties, several relevant items, unranked relevant
items) and the expected metrics against their definition."""

import math

import pytest
import torch

from stseq.eval.metrics import (expected_metrics, metric_names, ranking_metrics,
                                relevant_positions)

LOG2_3 = math.log2(3)


def metrics(scores, relevant, ks, *, candidates=None, num_relevant=None, pessimistic=False):
    scores = torch.tensor([scores], dtype=torch.float64)
    relevant = torch.tensor([relevant])
    if candidates is None:
        candidates = torch.ones_like(scores, dtype=torch.bool)
        candidates[0, relevant[relevant >= 0]] = False
    count = torch.tensor([num_relevant if num_relevant is not None else len(relevant[0])])
    positions = relevant_positions(scores, relevant, candidates, pessimistic=pessimistic)
    return {name: float(value[0]) for name, value in ranking_metrics(positions, count, ks).items()}


def test_single_relevant_item_by_hand():
    # Item 2 (0.5) has one item scored above it (0.9): position 1.
    got = metrics([0.1, 0.9, 0.5, 0.3], [2], [1, 2])
    assert got["HR@1"] == 0 and got["HR@2"] == 1
    assert got["NDCG@1"] == 0
    assert got["NDCG@2"] == pytest.approx(1 / LOG2_3)
    assert got["Recall@2"] == 1 and got["Precision@2"] == 0.5
    assert got["F1@2"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert got["MRR"] == 0.5
    assert list(got) == metric_names([1, 2])


def test_ties_count_for_the_target_unless_pessimistic():
    # Item 2 ties with items 0 and 3 at 0.5; only item 1 is strictly above it.
    scores = [0.5, 0.9, 0.5, 0.5]
    optimistic = metrics(scores, [2], [2])
    pessimistic = metrics(scores, [2], [2], pessimistic=True)
    assert optimistic["HR@2"] == 1 and optimistic["MRR"] == 0.5
    assert pessimistic["HR@2"] == 0 and pessimistic["MRR"] == 0.25  # position 3
    assert pessimistic["NDCG@2"] == 0


def test_several_relevant_items_by_hand():
    # Relevant items 1 and 3 sit at positions 1 and 3.
    got = metrics([0.9, 0.8, 0.7, 0.6, 0.5], [1, 3], [2, 5])
    assert got["HR@2"] == 1
    assert got["Recall@2"] == 0.5 and got["Precision@2"] == 0.5 and got["F1@2"] == 0.5
    assert got["NDCG@2"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))
    assert got["NDCG@5"] == pytest.approx((1 / LOG2_3 + 1 / math.log2(5)) / (1 + 1 / LOG2_3))
    assert got["Recall@5"] == 1 and got["Precision@5"] == pytest.approx(0.4)
    assert got["MRR"] == 0.5


def test_tied_relevant_items_take_distinct_positions():
    # Two relevant items tie at the top: they fill positions 0 and 1, so NDCG is exactly 1.
    for pessimistic in (False, True):
        got = metrics([1.0, 1.0, 0.0], [0, 1], [2], pessimistic=pessimistic)
        assert got["NDCG@2"] == pytest.approx(1.0)
        assert got["Recall@2"] == 1 and got["MRR"] == 1


def test_unranked_relevant_item_counts_as_missed():
    # Two relevant items, one excluded from the ranking (-1): recall halves, NDCG's ideal
    # still assumes both.
    got = metrics([0.9, 0.1, 0.5], [0, -1], [2], num_relevant=2)
    assert got["HR@2"] == 1 and got["Recall@2"] == 0.5
    assert got["NDCG@2"] == pytest.approx(1 / (1 + 1 / LOG2_3))
    missed = metrics([0.9, 0.1, 0.5], [-1], [2], num_relevant=1)
    assert missed["HR@2"] == 0 and missed["MRR"] == 0


def test_candidates_restrict_the_competition():
    # Sampled ranking: only items 3 and 4 compete; item 1 beats them both.
    candidates = torch.tensor([[False, False, False, True, True]])
    got = metrics([0.9, 0.5, 0.8, 0.1, 0.7], [1], [1], candidates=candidates)
    assert got["HR@1"] == 0 and got["MRR"] == 0.5  # item 4 (0.7) is above it
    candidates = torch.tensor([[False, False, False, True, False]])
    assert metrics([0.9, 0.5, 0.8, 0.1, 0.7], [1], [1], candidates=candidates)["HR@1"] == 1


def test_expected_metrics_of_the_true_ranking_by_hand():
    got = {name: float(v[0]) for name, v in expected_metrics(
        torch.tensor([[0.2, 0.5, 0.3]]), [1, 2]).items()}
    assert got["HR@1"] == pytest.approx(0.5)
    assert got["HR@2"] == pytest.approx(0.8)
    assert got["NDCG@2"] == pytest.approx(0.5 + 0.3 / LOG2_3)
    assert got["MRR"] == pytest.approx(0.5 + 0.3 / 2 + 0.2 / 3)
    assert got["Precision@2"] == pytest.approx(0.4) and got["F1@2"] == pytest.approx(1.6 / 3)


@pytest.mark.parametrize("pessimistic", [False, True])
def test_expected_metrics_average_the_metric_over_every_possible_target(pessimistic):
    """E[metric] = sum_j p_j * metric(j is the target), with the model's ranking (ties included)."""
    g = torch.Generator().manual_seed(3)
    probabilities = torch.rand(4, 7, generator=g, dtype=torch.float64)
    probabilities /= probabilities.sum(1, keepdim=True)
    scores = torch.randint(0, 4, (4, 7), generator=g).double()  # many ties
    expected = expected_metrics(probabilities, [1, 3], scores=scores, pessimistic=pessimistic)
    for row in range(4):
        total = {}
        for item in range(7):
            candidates = torch.ones(1, 7, dtype=torch.bool)
            candidates[0, item] = False
            positions = relevant_positions(scores[row:row + 1], torch.tensor([[item]]), candidates,
                                           pessimistic=pessimistic)
            for name, value in ranking_metrics(positions, torch.tensor([1]), [1, 3]).items():
                total[name] = total.get(name, 0.0) + float(probabilities[row, item] * value[0])
        for name in total:
            assert float(expected[name][row]) == pytest.approx(total[name]), name


def test_ranking_by_the_true_probabilities_is_best():
    g = torch.Generator().manual_seed(4)
    probabilities = torch.softmax(torch.randn(8, 30, generator=g, dtype=torch.float64), 1)
    best = expected_metrics(probabilities, [5])
    other = expected_metrics(probabilities, [5], scores=torch.randn(8, 30, generator=g))
    same = expected_metrics(probabilities, [5], scores=probabilities)
    for name in best:
        assert (best[name] >= other[name] - 1e-12).all()
        assert torch.allclose(best[name], same[name])
