"""Reference scorers every model should beat: most-popular and a first-order Markov chain.
Both are fitted on training ``Interactions`` and are scoring functions ``Batch -> [B, N]``."""

import numpy as np
import torch

from stseq.data.splits import ranges


class MostPopular:
    """Scores every item by its number of training events, the same for every user.

    Example::

        popular = MostPopular(split.train)
        stseq.eval.evaluate(popular, split.interactions, split.test)
    """

    def __init__(self, train):
        self.counts = torch.from_numpy(train.item_counts()).float()  # [N]

    def __call__(self, batch):
        return self.counts.to(batch.items.device).expand(len(batch.users), -1)


class MarkovChain:
    """First-order Markov chain: scores item j after last item i by the number of training
    transitions i -> j (consecutive events of a user), plus popularity / (events + 1) < 1 to
    order the items never seen after i (and rows without history) by popularity.

    Example::

        markov = MarkovChain(split.train)
        scores = markov(batch)   # [B, num_items]
    """

    def __init__(self, train):
        self.num_items = train.num_items
        keys, counts = train.transition_counts()
        self.next_items = keys % self.num_items  # CSR rows by previous item
        self.counts = counts.astype(np.float32)
        self.row_offsets = np.searchsorted(keys // self.num_items, np.arange(self.num_items + 1))
        popularity = train.item_counts().astype(np.float32)
        self.backoff = torch.from_numpy(popularity / (popularity.sum() + 1))  # [N], < 1 in total

    def __call__(self, batch):
        last = batch.last_items.cpu().numpy()
        has_last = (batch.lengths > 0).cpu().numpy() & (last < self.num_items)
        rows = np.nonzero(has_last)[0]
        starts = self.row_offsets[last[rows]]
        counts = self.row_offsets[last[rows] + 1] - starts
        scores = self.backoff.expand(len(last), -1).clone()
        flat = ranges(starts, counts)
        scores[torch.from_numpy(np.repeat(rows, counts)),
               torch.from_numpy(self.next_items[flat])] += torch.from_numpy(self.counts[flat])
        return scores.to(batch.items.device)
