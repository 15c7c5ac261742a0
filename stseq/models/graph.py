"""A session-graph recommender in the style of SR-GNN (Wu et al., AAAI 2019), made causal and
time-aware so that every position of a sequence predicts its next item.

SR-GNN builds a graph whose nodes are the distinct items of a session and whose edges are its
consecutive transitions, runs a gated graph network over it and reads the session out with soft
attention anchored at the last item. Here the nodes are the events of the window; the prefix
graph of position i is represented causally:

- in-edges of event i: from the predecessor of every occurrence j <= i of item_i (SR-GNN's
  merged item node collects the in-edges of all its occurrences);
- out-edges of event i: to the successor of every earlier occurrence j < i of item_i;
- every edge (j - 1 -> j) carries a learnable weight ``sigmoid(table[bucket(t_j - t_{j-1})])``
  of its time gap (a one-lag ``stseq.nn.TimeGapEmbedding``), and each node averages its
  incoming messages by edge count.

Node states are updated by a ``stseq.nn.GRU`` step per propagation step (the gated graph
update), then each position reads out its last ``window`` events with SR-GNN's attention and
is fused with the query-time encoding.
"""

import torch
import torch.nn.functional as F
from torch import nn

import stseq.nn
from stseq.models.fusion import ContextFusion
from stseq.models.query_time import QUERY_GAP_MAX, QueryTimeEncoding
from stseq.models.recommender import SequentialRecommender

EDGE_BUCKETS = 16


class SessionGraph(SequentialRecommender):
    """SR-GNN-style gated graph network over the user's recent events with time-gap-weighted
    edges.

    Args: as ``SequentialRecommender``, plus ``steps`` (propagation steps) and ``window``
    (events each position reads out).

    Example::

        model = SessionGraph(num_items=2000, dim=64, steps=1, window=10)
        scores = model.score(batch)          # [B, 2000]
    """

    time_aware = True
    uses_coordinates = True

    def __init__(self, num_items, *, steps=1, window=10, **options):
        super().__init__(num_items, **options)
        if steps < 1 or window < 1:
            raise ValueError(f"steps and window must be >= 1, got {steps}, {window}")
        dim = self.dim
        self.steps, self.window = steps, window
        self.edge_weight = stseq.nn.TimeGapEmbedding(EDGE_BUCKETS, 1, window=1,
                                                     max_gap=QUERY_GAP_MAX, interpolate=True,
                                                     backend=self.backend)
        self.incoming = nn.Linear(dim, dim)
        self.outgoing = nn.Linear(dim, dim)
        self.update = stseq.nn.GRU(2 * dim, dim, batch_first=True, backend=self.backend)
        self.attention_last = nn.Linear(dim, dim)
        self.attention_node = nn.Linear(dim, dim, bias=False)
        self.attention_vector = nn.Linear(dim, 1, bias=False)
        self.readout = nn.Linear(2 * dim, dim)
        self.query_time = QueryTimeEncoding(dim, backend=self.backend)
        self.fuse = ContextFusion(dim, dropout=self.dropout.p)

    def adjacency(self, batch):
        """(incoming, outgoing) [B, L, L] causal adjacency, weighted by time gap and divided by
        each node's edge count."""
        items, lengths = batch.items, batch.lengths
        length = items.shape[1]
        position = torch.arange(length, device=items.device)
        valid = position < lengths[:, None]  # [B, L]
        same = ((items[:, :, None] == items[:, None, :]) & valid[:, :, None] & valid[:, None, :]
                & (position[None, :] <= position[:, None])[None])  # [B, i, j]: j <= i, same item
        weight = torch.sigmoid(self.edge_weight(batch.timestamps, lengths)[..., 0])  # [B, L]
        # in-edge from k = j - 1 for every occurrence j <= i of item_i (j >= 1)
        incoming = F.pad(same[:, :, 1:] * weight[:, None, 1:], (0, 1))  # [B, i, k]
        # out-edge to k = j + 1 for every earlier occurrence j < i of item_i
        earlier = same & (position[None, :] < position[:, None])[None]  # [B, i, j]
        outgoing = F.pad(earlier[:, :, :-1] * weight[:, None, 1:], (1, 0))  # [B, i, k]
        return tuple(a / (a > 0).sum(-1, keepdim=True).clamp(min=1) for a in (incoming, outgoing))

    def encode(self, batch):
        batch_size, length = batch.items.shape
        nodes = self.dropout(self.embed_items(batch.items))  # [B, L, D]
        incoming, outgoing = self.adjacency(batch)
        for _ in range(self.steps):
            messages = torch.cat([incoming @ self.incoming(nodes),
                                  outgoing @ self.outgoing(nodes)], dim=-1)  # [B, L, 2D]
            state = nodes.reshape(1, batch_size * length, self.dim)
            updated, _ = self.update(messages.reshape(batch_size * length, 1, 2 * self.dim),
                                     state)
            nodes = updated.view(batch_size, length, self.dim)
        return self.fuse(self.read_out(nodes), self.query_time(batch.timestamps,
                                                               batch.next_timestamps))

    def read_out(self, nodes):
        """SR-GNN's soft-attention readout of each position's last ``window`` events:
        [B, L, D] -> [B, L, D]."""
        window = self.window
        recent = F.pad(nodes, (0, 0, window - 1, 0)).unfold(1, window, 1)  # [B, L, D, W]
        recent = recent.transpose(2, 3)  # [B, L, W, D]; slot W - 1 is the position itself
        keys = F.pad(self.attention_node(nodes), (0, 0, window - 1, 0)).unfold(1, window, 1)
        scores = self.attention_vector(torch.sigmoid(
            self.attention_last(nodes)[:, :, None, :] + keys.transpose(2, 3)))[..., 0]  # [B,L,W]
        slot = torch.arange(window, device=nodes.device)
        position = torch.arange(nodes.shape[1], device=nodes.device)
        exists = (position[:, None] - (window - 1) + slot[None, :]) >= 0  # [L, W]
        scores = scores * exists.to(scores.dtype)
        session = (scores[..., None] * recent).sum(2)  # [B, L, D]
        return self.readout(torch.cat([nodes, session], dim=-1))
