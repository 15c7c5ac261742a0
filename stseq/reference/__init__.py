"""Pure-PyTorch twins of every stseq op: the fallback where no kernel runs and the oracle the
tests compare kernels against. Written for clarity, not speed; imports only torch."""

from stseq.reference.scoring import item_cross_entropy, item_logsumexp
from stseq.reference.rnn import gru, lstm
from stseq.reference.attention import time_decay_attention
from stseq.reference.time_gap import haversine_km, time_gap_embedding
from stseq.reference.time_rnn import time_decay_gru, time_lstm, tlstm

__all__ = ["gru", "haversine_km", "item_cross_entropy", "item_logsumexp", "lstm",
           "time_decay_attention", "time_decay_gru", "time_gap_embedding", "time_lstm", "tlstm"]
