"""Chunked full ranking: the running top-k against the materialised stable sort (ties: lower
item id first), the chunked rank counts against relevant_positions, and models' ItemScores
against their [B, N] scores in evaluate and recommend."""

import numpy as np
import pytest
import torch

from stseq.data import leave_one_out, make_batch, synthetic
from stseq.eval import evaluate, recommend, relevant_positions
from stseq.data import DenseItemScores
from stseq.eval.ranking import chunked_counts_above, chunked_topk
from stseq.models import build_model


def materialised_topk(scores, k, exclude=None):
    """The reference: masked_fill(-inf) then a stable descending sort (lower id among ties)."""
    if exclude is not None:
        scores = scores.index_put(exclude, scores.new_tensor(float("-inf")))
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def tied_scores(rows, items, dtype=torch.float32):
    generator = torch.Generator().manual_seed(rows * 31 + items)
    return torch.randint(-3, 4, (rows, items), generator=generator).to(dtype) / 2  # many ties


@pytest.mark.parametrize("items,chunk", [(50, 7), (50, 50), (13, 64), (40, 1), (33, 10)])
@pytest.mark.parametrize("k", [1, 5, 13])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_matches_the_stable_sort_with_ties(items, chunk, k, dtype):
    scores = tied_scores(6, items, dtype)
    values, ids = chunked_topk(scores, k, chunk_size=chunk)
    want_values, want_ids = materialised_topk(scores, k)
    assert torch.equal(ids, want_ids)
    assert torch.equal(values.to(dtype), want_values)
    # the same values as torch.topk (which leaves the order of equal scores unspecified)
    assert torch.equal(values.to(dtype), scores.topk(k, dim=1).values)


def test_topk_special_values():
    scores = torch.tensor([[0.0, -0.0, float("inf"), -float("inf"), 1e-45, -1e-45, 3.0, 0.0]])
    values, ids = chunked_topk(scores, 8, chunk_size=3)
    want_values, want_ids = materialised_topk(scores, 8)
    assert ids.tolist() == want_ids.tolist() == [[2, 6, 4, 0, 1, 7, 5, 3]]
    assert torch.equal(values, want_values)


def test_topk_excludes_pairs_and_fills_with_them_when_too_few_remain():
    scores = tied_scores(3, 20)
    exclude = (torch.tensor([0, 0, 1, 2, 2]), torch.tensor([5, 19, 0, 7, 8]))
    for k in (3, 20):
        values, ids = chunked_topk(scores, k, exclude=exclude, chunk_size=6)
        want_values, want_ids = materialised_topk(scores, k, exclude)
        assert torch.equal(ids, want_ids) and torch.equal(values, want_values)


@pytest.mark.parametrize("chunk", [1, 4, 17, 100])
def test_counts_above_match_relevant_positions(chunk):
    scores = tied_scores(5, 17).double()
    relevant = torch.tensor([[3, 9], [0, -1], [16, 2], [5, 5], [-1, -1]])
    relevant[3, 1] = 6
    candidates = torch.ones(5, 17, dtype=torch.bool)
    rows = torch.arange(5)[:, None].expand_as(relevant)
    candidates[rows[relevant >= 0], relevant[relevant >= 0]] = False
    exclude = (torch.tensor([1, 2, 2, 0]), torch.tensor([4, 11, 11, 3]))  # repeats, relevant
    candidates[exclude] = False
    targets, above, at_or_above = chunked_counts_above(scores, relevant, exclude=exclude,
                                                       chunk_size=chunk)
    assert torch.equal(targets, scores.gather(1, relevant.clamp(min=0)))
    from stseq.eval.metrics import positions_from_counts

    for pessimistic, counts in ((False, above), (True, at_or_above)):
        want = relevant_positions(scores, relevant, candidates, pessimistic=pessimistic)
        assert torch.equal(positions_from_counts(counts, targets, relevant), want)


def test_bad_arguments_raise_named_errors():
    scores = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="k must be"):
        chunked_topk(scores, 6)
    with pytest.raises(ValueError, match="k must be"):
        chunked_topk(scores, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_topk(scores, 2, chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_counts_above(scores, torch.zeros(2, 1, dtype=torch.int64), chunk_size=2.0)
    with pytest.raises(ValueError, match="NaN"):
        chunked_counts_above(torch.full((2, 5), float("nan")), torch.zeros(2, 1,
                                                                           dtype=torch.int64))


@pytest.fixture(scope="module")
def trained():
    data = synthetic(num_users=24, num_items=60, min_length=4, max_length=14, seed=5)
    split = leave_one_out(data.interactions)
    torch.manual_seed(0)
    model = build_model("gru4rec", split.train, dim=16, max_length=12, dropout=0.0)
    model.eval()
    return split, model


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_model_item_scores_match_its_dense_scores(trained, exclude_seen):
    split, model = trained
    assert model.transition_prior is not None  # the mixture's chunked path is exercised
    options = dict(ks=(1, 5), max_length=12, batch_size=7, exclude_seen=exclude_seen)
    dense = evaluate(model.score, split.interactions, split.test, **options)
    chunked = evaluate(model.item_scores, split.interactions, split.test, chunk_size=16,
                       **options)
    for name, value in dense.metrics.items():
        assert chunked.metrics[name] == pytest.approx(value, abs=1e-12)
        assert chunked.pessimistic[name] == pytest.approx(dense.pessimistic[name], abs=1e-12)
    users = np.arange(10)
    want = recommend(model.score, split.interactions, users, k=7, exclude_seen=exclude_seen,
                     max_length=12)
    got = recommend(model.item_scores, split.interactions, users, k=7, chunk_size=9,
                    exclude_seen=exclude_seen, max_length=12)
    assert torch.equal(got.items, want.items)
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-5, atol=1e-5)


def test_model_item_scores_chunks_equal_score(trained):
    split, model = trained
    interactions = split.interactions
    users = np.arange(6)
    batch = make_batch(interactions, users, np.maximum(interactions.lengths[users] - 12, 0),
                       interactions.lengths[users],
                       interactions.timestamps[interactions.offsets[users]
                                               + interactions.lengths[users] - 1])
    with torch.no_grad():
        dense = model.score(batch)
        item_scores = model.item_scores(batch)
        chunks = torch.cat([item_scores.chunk(s, min(60, s + 11)) for s in range(0, 60, 11)], 1)
        picked = item_scores.at(torch.tensor([[0, 59, 7]] * 6))
    torch.testing.assert_close(chunks, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(picked, dense[:, [0, 59, 7]], rtol=1e-5, atol=1e-5)
    assert isinstance(DenseItemScores(dense).chunk(0, 60), torch.Tensor)
