"""evaluate / recommend on tiny hand-built data: hand-computed values, what the scoring function
sees, exclusion of seen items, sampled labelling, chunking and bad scoring functions."""

import logging
import math

import numpy as np
import pytest
import torch

from stseq.data import Interactions, Targets, global_split, leave_one_out
from stseq.eval import MostPopular, evaluate, recommend

NUM_ITEMS = 6


@pytest.fixture
def data():
    # user 0: 0 1 2 3   user 1: 4 5 0   user 2: 1 2
    return Interactions.from_sequences(
        items=[[0, 1, 2, 3], [4, 5, 0], [1, 2]],
        timestamps=[[10, 20, 30, 40], [5, 15, 25], [50, 60]], num_items=NUM_ITEMS,
        item_ids=np.array(["a", "b", "c", "d", "e", "f"]))


def fixed(scores):
    """A scoring function giving every row ``scores``."""
    table = torch.tensor(scores, dtype=torch.float64)
    return lambda batch: table.expand(len(batch.users), -1)


def test_full_ranking_values_by_hand(data):
    split = leave_one_out(data)  # test targets: item 3 (user 0), 0 (user 1), 2 (user 2)
    scores = [0.6, 0.1, 0.2, 0.9, 0.3, 0.0]  # ranks: item 3 -> 0, item 0 -> 1, item 2 -> 3
    result = evaluate(fixed(scores), data, split.test, ks=(1, 2))
    assert result.num_targets == 3
    assert result["HR@1"] == pytest.approx(1 / 3)
    assert result["HR@2"] == pytest.approx(2 / 3)
    assert result["NDCG@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert result["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 3)
    assert result["Precision@2"] == pytest.approx(2 / 3 / 2)
    assert result.protocol["ranking"] == "full ranking"
    assert result.pessimistic == result.metrics  # no ties


def test_ties_are_reported_both_ways(data):
    split = leave_one_out(data)
    result = evaluate(fixed([1.0] * NUM_ITEMS), data, split.test, ks=(1,))
    assert result["HR@1"] == 1 and result["MRR"] == 1
    assert result.pessimistic["HR@1"] == 0
    assert result.pessimistic["MRR"] == pytest.approx(1 / NUM_ITEMS)
    assert "ties against" in str(result)


def test_scoring_function_sees_histories_not_targets(data):
    split = leave_one_out(data)
    seen = []

    def spy(batch):
        seen.append(batch)
        return torch.zeros(len(batch.users), NUM_ITEMS)

    evaluate(spy, data, split.test, ks=(1,), max_length=2)
    batch = seen[0]
    assert batch.next_items is None
    assert batch.lengths.tolist() == [2, 2, 1]  # the last max_length events before each target
    assert batch.items[0].tolist() == [1, 2]  # user 0's target (item 3, t=40) is absent
    assert batch.query_times.tolist() == [40, 25, 60]


def test_chunking_does_not_change_results(data):
    split = global_split(data, test_time=20, valid_time=20, targets="all")
    scores = fixed([0.3, 0.1, 0.2, 0.9, 0.3, 0.0])
    whole = evaluate(scores, data, split.test, ks=(1, 3), batch_size=100)
    pieces = evaluate(scores, data, split.test, ks=(1, 3), batch_size=1)
    assert whole.metrics == pytest.approx(pieces.metrics)
    assert whole.pessimistic == pytest.approx(pieces.pessimistic)


def test_exclude_seen_is_explicit_and_logged(data, caplog):
    # User 0 has seen 0, 1, 2 before its target 3; the scores prefer exactly those.
    targets = Targets.next_item(data, [0], [3])
    scores = fixed([0.9, 0.8, 0.7, 0.5, 0.1, 0.0])
    assert evaluate(scores, data, targets, ks=(1,))["MRR"] == pytest.approx(1 / 4)
    with caplog.at_level(logging.INFO, logger="stseq.eval"):
        result = evaluate(scores, data, targets, ks=(1,), exclude_seen=True)
    assert result["HR@1"] == 1
    assert result.protocol["exclude_seen"] is True and result.protocol["seen_targets"] == 0
    assert "exclude_seen=True" in caplog.text
    # A target seen before (user 1's item 0 at position 2 is new, but use a repeat):
    repeat = Interactions.from_sequences([[2, 5, 2]], [[1, 2, 3]], num_items=NUM_ITEMS)
    result = evaluate(fixed([0.0, 0, 1.0, 0, 0, 0]), repeat, Targets.next_item(repeat, [0], [2]),
                      ks=(1,), exclude_seen=True)
    assert result["HR@1"] == 0 and result["MRR"] == 0
    assert result.protocol["seen_targets"] == 1


def test_sampled_metrics_are_labelled_and_match_full_when_every_item_is_sampled(data):
    split = leave_one_out(data)
    scores = fixed([0.6, 0.1, 0.2, 0.9, 0.3, 0.0])
    full = evaluate(scores, data, split.test, ks=(2,))
    everything = evaluate(scores, data, split.test, ks=(2,), negatives=NUM_ITEMS - 1)
    assert set(everything.metrics) == {"sampled_" + name for name in full.metrics}
    assert everything.protocol["ranking"].startswith("sampled")
    for name, value in full.metrics.items():
        assert everything["sampled_" + name] == pytest.approx(value)
    few = evaluate(scores, data, split.test, ks=(2,), negatives=2, seed=1)
    assert few["sampled_MRR"] >= full["MRR"]  # fewer competitors can only help
    assert few.metrics == evaluate(scores, data, split.test, ks=(2,), negatives=2, seed=1).metrics


def test_bad_scoring_functions_and_arguments_raise(data):
    split = leave_one_out(data)
    with pytest.raises(ValueError, match=r"\[B, num_items\]"):
        evaluate(lambda b: torch.zeros(len(b.users), NUM_ITEMS - 1), data, split.test)
    with pytest.raises(ValueError, match="NaN for row 1"):
        evaluate(lambda b: torch.tensor([[0.0] * NUM_ITEMS, [math.nan] * NUM_ITEMS,
                                         [0.0] * NUM_ITEMS]), data, split.test)
    with pytest.raises(ValueError, match="ks"):
        evaluate(fixed([0.0] * NUM_ITEMS), data, split.test, ks=(0,))
    with pytest.raises(ValueError, match="negatives"):
        evaluate(fixed([0.0] * NUM_ITEMS), data, split.test, negatives=0)
    with pytest.raises(ValueError, match="empty"):
        evaluate(fixed([0.0] * NUM_ITEMS), data, split.test.select([]))


def test_recommend_returns_ranked_ids_and_scores(data):
    popular = MostPopular(data)  # counts: item 0: 2, 1: 2, 2: 2, 3: 1, 4: 1, 5: 1
    top = recommend(popular, data, [2], k=3)
    assert top.users.tolist() == [2]
    assert top.scores[0].tolist() == [2, 2, 2]
    assert sorted(top.items[0].tolist()) == [0, 1, 2]
    unseen = recommend(popular, data, [2], k=3, exclude_seen=True)  # user 2 saw 1 and 2
    assert unseen.items[0, 0] == 0 and not set(unseen.items[0].tolist()) & {1, 2}
    assert data.item_ids[unseen.items[0, 0]] == "a"
    times = []
    recommend(lambda b: times.append(b.query_times) or torch.zeros(len(b.users), NUM_ITEMS), data,
              k=1, at_time=1000)
    assert times[0].tolist() == [1000, 1000, 1000]
    with pytest.raises(ValueError, match="k must be"):
        recommend(popular, data, k=NUM_ITEMS + 1)
