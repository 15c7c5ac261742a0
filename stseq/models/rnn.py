"""Recurrent recommenders: GRU4Rec and an LSTM recommender over item embeddings (time-agnostic),
and time-aware ones on Time-LSTM, T-LSTM and the time-decay GRU, fed the gap before each event
in seconds (the layers read ``log1p(gap / time_unit)``, ``gap_transform="log1p"``; see
``stseq.time``) and told when the prediction is asked for
(``QueryTimeEncoding`` of the gap to the query time, its hour and weekday).
"""

import stseq.nn
from stseq.models.fusion import ContextFusion, history_mean
from stseq.models.query_time import QueryTimeEncoding
from stseq.models.recommender import SequentialRecommender


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (Hidasi et al., ICLR 2016) with full-softmax training: a ``stseq.nn.GRU`` over
    the item embeddings; the state after each event scores every item. As in the time-aware
    recommenders, the states are fused with the long-term profile (the mean item embedding of
    the window so far), so the two differ only in their use of time.

    Args: as ``SequentialRecommender``, plus ``num_layers``.

    Example::

        model = GRU4Rec(num_items=2000, dim=64)
        scores = model.score(batch)          # [B, 2000]
    """

    layer_name = "GRU"

    def __init__(self, num_items, *, num_layers=1, **options):
        super().__init__(num_items, **options)
        layer = getattr(stseq.nn, self.layer_name)
        self.rnn = layer(self.dim, self.dim, num_layers, batch_first=True,
                         dropout=self.dropout.p if num_layers > 1 else 0.0, backend=self.backend)
        self.fuse = ContextFusion(self.dim, dropout=self.dropout.p)

    def encode(self, batch):
        items = self.embed_items(batch.items)  # [B, L, D]
        output, _ = self.rnn(self.dropout(items), lengths=batch.lengths)
        return self.fuse(self.dropout(output), history_mean(items, batch.lengths))


class LSTMRecommender(GRU4Rec):
    """GRU4Rec's architecture with a ``stseq.nn.LSTM``.

    Example::

        model = LSTMRecommender(num_items=2000, dim=64)
    """

    layer_name = "LSTM"


class TimeAwareRNNRecommender(SequentialRecommender):
    """A time-aware recurrent layer (``layer_name`` in stseq.nn) over the item embeddings plus
    the query-time encoding, fed the gaps before each event in seconds (the layer reads
    ``log1p(gap / time_unit)``); its states are fused
    with the query-time encoding again and with the long-term profile (the mean item embedding
    of the window so far) before scoring, so that a query after a long gap can fall back on
    the user's lasting interests; and (``geo``, the default on data with coordinates) the
    scores get the spatial term.

    Args: as ``SequentialRecommender``, plus ``num_layers``, ``time_unit`` (seconds) and
    ``layer_options`` for the layer (e.g. ``{"variant": 2}`` of TimeLSTM).
    """

    time_aware = True
    uses_coordinates = True
    layer_name = None

    def __init__(self, num_items, *, num_layers=1, time_unit=60.0, layer_options=None,
                 **options):
        super().__init__(num_items, **options)
        layer = getattr(stseq.nn, self.layer_name)
        self.time_unit = time_unit
        self.rnn = layer(self.dim, self.dim, num_layers=num_layers, batch_first=True,
                         dropout=self.dropout.p if num_layers > 1 else 0.0,
                         time_unit=time_unit, gap_transform="log1p", backend=self.backend,
                         **(layer_options or {}))
        self.query_time = QueryTimeEncoding(self.dim, backend=self.backend)
        self.fuse = ContextFusion(self.dim, num_contexts=2, dropout=self.dropout.p)

    def encode(self, batch):
        # the step at position p also reads when its prediction is asked for (the time of the
        # next event, which every later step has in its history anyway: no leak)
        context = self.query_time(batch.timestamps, batch.next_timestamps)  # [B, L, D]
        items = self.embed_items(batch.items)  # [B, L, D]
        x = self.dropout(items + context)
        # seconds since the previous event; the layer reads log1p(gap / time_unit)
        output, _ = self.rnn(x, batch.time_gaps.double(), lengths=batch.lengths)
        return self.fuse(self.dropout(output), context, history_mean(items, batch.lengths))


class TimeLSTMRecommender(TimeAwareRNNRecommender):
    """Time-LSTM (Zhu et al., IJCAI 2017) recommender; ``variant`` 1, 2 or 3 (default 3, the
    paper's best).

    Example::

        model = TimeLSTMRecommender(num_items=2000, variant=3)
    """

    layer_name = "TimeLSTM"

    def __init__(self, num_items, *, variant=3, **options):
        super().__init__(num_items, layer_options={"variant": variant}, **options)


class TLSTMRecommender(TimeAwareRNNRecommender):
    """T-LSTM (Baytas et al., KDD 2017) recommender.

    Example::

        model = TLSTMRecommender(num_items=2000)
    """

    layer_name = "TLSTM"


class TimeDecayGRURecommender(TimeAwareRNNRecommender):
    """Recommender on the GRU-D-style time-decay GRU: the state decays with the gap before
    each step.

    Example::

        model = TimeDecayGRURecommender(num_items=2000)
    """

    layer_name = "TimeDecayGRU"

