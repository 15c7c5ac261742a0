"""Self-attentive recommenders on ``stseq.nn.TimeDecayTransformerBlock``.

- ``SASRec`` (Kang and McAuley, ICDM 2018): causal self-attention over item + position
  embeddings. It gives the blocks equal timestamps, so the time-decay term is zero and the
  blocks are plain causal attention (the decay parameters are frozen); with
  ``positions="relative"`` it gives them the positions as timestamps instead, so the decay term
  is a learned decay over the distance in positions.
- ``TimeSASRec`` (TiSASRec-style): the same blocks with the real timestamps (learnable per-head
  decay of the scores with ``log1p(|t_i - t_j| / time_unit)``), the spatio-temporal gap
  embedding (``stseq.nn.TimeGapEmbedding`` over the gaps, and the distances when the data has
  coordinates) added to the inputs, and the query-time encoding fused into the output.
"""

import torch
from torch import nn

import stseq.nn
from stseq.models.fusion import ContextFusion
from stseq.models.query_time import QueryTimeEncoding
from stseq.models.recommender import SequentialRecommender

GAP_BUCKETS = 32
GAP_WINDOW = 8
DISTANCE_BUCKETS = 32
MAX_DISTANCE_KM = 1000.0


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class SelfAttentiveRecommender(SequentialRecommender):
    """Item embeddings (plus position embeddings, see ``positions``) through ``num_layers``
    ``TimeDecayTransformerBlock`` s and a final LayerNorm; ``attention_options`` go to every
    block's attention.

    They train on windows cut at a new random phase every epoch (``window_phase``): on fixed
    windows they fit the cuts (on MovieLens-100K the validation NDCG@10 rose above the test
    figure, the test fell; benchmarks/results/models/sasrec-ablations.md)."""

    POSITIONS = ("absolute", "recency", "none")
    window_phase = "random"

    def __init__(self, num_items, *, num_heads=2, num_layers=2, positions="absolute",
                 attention_options=None, **options):
        super().__init__(num_items, **options)
        _check_choice(positions, "positions", self.POSITIONS)
        self.positions = positions
        self.position_embedding = (nn.Embedding(self.max_length, self.dim)
                                   if positions in ("absolute", "recency") else None)
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.blocks = nn.ModuleList(
            stseq.nn.TimeDecayTransformerBlock(self.dim, num_heads, dropout=self.dropout.p,
                                               backend=self.backend, **(attention_options or {}))
            for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(self.dim)

    def inputs(self, batch):
        """[B, L, D] item embeddings plus the position embeddings."""
        x = self.embed_items(batch.items)
        if self.position_embedding is None:
            return x
        positions = torch.arange(batch.items.shape[1], device=batch.items.device)  # [L]
        if self.positions == "recency":  # 0 at each row's last event
            positions = (batch.lengths[:, None] - 1 - positions).clamp(min=0)  # [B, L]
        return x + self.position_embedding(positions)

    def attend(self, x, timestamps, lengths):
        """[B, L, D] inputs through the blocks -> [B, L, D]."""
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, timestamps, lengths)
        return self.final_norm(x)


class SASRec(SelfAttentiveRecommender):
    """Causal self-attention recommender.

    Args: as ``SequentialRecommender``, plus ``num_heads`` (dim / num_heads in [16, 128]),
    ``num_layers`` and ``positions``, how the model knows the order of events:

    - ``"absolute"`` (the default, the original SASRec's): a learned embedding of the index
      from the window's first event;
    - ``"relative"``: no position embedding; each head's scores decay with the distance in
      positions, ``- softplus(decay[h]) * log1p(|i - j|)`` with a learned rate (the time-decay
      kernel fed positions instead of times), so the model is the same at every offset of the
      window, as a recurrent net is;
    - ``"recency"``: a learned embedding of the index counted back from the row's last event;
    - ``"none"``: only the causal mask tells the order.

    On dense rating data such as MovieLens-100K pass ``transition_prior=False`` (and dim 64):
    there the prior made the validation NDCG@10 peak after one epoch and fall back instead of
    rising steadily; the defaults were tuned with it on the default synthetic (session) data
    (benchmarks/results/models/sasrec-ablations.md).

    Example::

        model = SASRec(num_items=2000, dim=64, num_heads=2, num_layers=2)
        scores = model.score(batch)          # [B, 2000]
    """

    POSITIONS = ("absolute", "recency", "relative", "none")

    def __init__(self, num_items, *, num_heads=2, num_layers=2, positions="absolute",
                 **options):
        _check_choice(positions, "positions", self.POSITIONS)
        relative = positions == "relative"
        super().__init__(num_items, num_heads=num_heads, num_layers=num_layers,
                         positions="none" if relative else positions,
                         attention_options=dict(time_unit=1.0, decay_fn="log1p") if relative
                         else None, **options)
        self.positions = positions
        if not relative:  # the blocks get equal times: the decay term is zero
            for block in self.blocks:
                block.attention.decay.requires_grad_(False)

    def encode(self, batch):
        if self.positions == "relative":  # positions as times: the decay over their distance
            times = torch.arange(batch.items.shape[1], device=batch.items.device)
            times = times.expand_as(batch.items)  # [B, L]
        else:
            times = torch.zeros_like(batch.timestamps)  # [B, L]: the decay term vanishes
        return self.attend(self.inputs(batch), times, batch.lengths)


class TimeSASRec(SelfAttentiveRecommender):
    """Time-decay self-attention with the spatio-temporal gap embedding and the query time.

    Args: as ``SASRec``, plus ``time_unit`` (seconds per unit of the decay's gap) and
    ``decay_fn`` ("log1p", "abs" or "sqrt"). ``positions`` is "absolute" (the default),
    "recency" or "none": not "relative", since the attention's decay is over the time between
    events. With ``geo`` (the default when the data has
    coordinates) the gap embedding also embeds the distances between events and the scores get
    the spatial term of ``SequentialRecommender``.

    Example::

        model = TimeSASRec(num_items=2000, dim=64, geo=True)
        scores = model.score(batch)          # [B, 2000]
    """

    time_aware = True
    uses_coordinates = True

    def __init__(self, num_items, *, num_heads=2, num_layers=2, time_unit=60.0,
                 decay_fn="log1p", **options):
        super().__init__(num_items, num_heads=num_heads, num_layers=num_layers,
                         attention_options=dict(time_unit=time_unit, decay_fn=decay_fn),
                         **options)
        self.gap_embedding = stseq.nn.TimeGapEmbedding(
            GAP_BUCKETS, self.dim, window=GAP_WINDOW,
            distance_buckets=DISTANCE_BUCKETS if self.geo else 0, max_distance=MAX_DISTANCE_KM, interpolate=True, backend=self.backend)
        self.query_time = QueryTimeEncoding(self.dim, backend=self.backend)
        self.fuse = ContextFusion(self.dim, dropout=self.dropout.p)

    def encode(self, batch):
        if self.geo and batch.coordinates is None:
            raise ValueError("this model was built with geo=True but the batch has no "
                             "coordinates")
        gaps = self.gap_embedding(batch.timestamps, batch.lengths,
                                  batch.coordinates if self.geo else None)  # [B, L, D]
        # each position's query knows when its prediction is asked for (the time of the next
        # event, itself in the history of every later position: no leak)
        context = self.query_time(batch.timestamps, batch.next_timestamps)  # [B, L, D]
        hidden = self.attend(self.inputs(batch) + gaps + context, batch.timestamps,
                             batch.lengths)
        return self.fuse(hidden, context)
