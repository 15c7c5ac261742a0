"""MostPopular and MarkovChain scores on hand-built training data."""

import pytest
import torch

from stseq.data import Interactions, Targets, make_batch
from stseq.eval import MarkovChain, MostPopular


@pytest.fixture
def train():
    # transitions: 0->1 twice, 1->2 twice, 3->0 once; counts: 0:3, 1:3, 2:2, 3:1, 4:0
    return Interactions.from_sequences([[0, 1, 2], [3, 0, 1], [1, 2], [0]],
                                       [[1, 2, 3], [1, 2, 3], [5, 6], [9]], num_items=5)


def batch_after(data, users, positions):
    targets = Targets.next_item(data, users, positions)
    return make_batch(data, targets.users, [0] * len(users), targets.positions, targets.query_times)


def test_most_popular_counts_training_events(train):
    batch = batch_after(train, [0, 1], [1, 2])
    assert MostPopular(train)(batch).tolist() == [[3, 3, 2, 1, 0]] * 2


def test_markov_chain_counts_transitions_and_backs_off_to_popularity(train):
    markov = MarkovChain(train)
    batch = batch_after(train, [0, 1, 2], [1, 1, 1])  # last items 0, 3, 1
    scores = markov(batch)
    backoff = torch.tensor([3, 3, 2, 1, 0]) / 10.0  # popularity / (events + 1)
    assert torch.allclose(scores[0], backoff + torch.tensor([0, 2, 0, 0, 0.0]))
    assert torch.allclose(scores[1], backoff + torch.tensor([1, 0, 0, 0, 0.0]))
    assert torch.allclose(scores[2], backoff + torch.tensor([0, 0, 2, 0, 0.0]))
    # No transition leaves item 2 (window [2, 3) of user 0), and a row without history: both
    # fall back to popularity alone.
    assert torch.allclose(markov(make_batch(train, [0], [2], [3], [10]))[0], backoff)
    assert torch.allclose(markov(make_batch(train, [0], [0], [0], [0]))[0], backoff)
