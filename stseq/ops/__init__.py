"""Functional ops. Each checks its arguments, picks a backend (see ``stseq.backends``) and runs
the native kernel, the Triton kernel or the pure-PyTorch reference."""

from stseq.ops.scoring import item_cross_entropy, item_logsumexp
from stseq.ops.rnn import gru, lstm
from stseq.ops.attention import time_decay_attention
from stseq.ops.time_gap import time_gap_embedding
from stseq.ops.time_rnn import time_decay_gru, time_lstm, tlstm

__all__ = ["gru", "item_cross_entropy", "item_logsumexp", "lstm", "time_decay_attention",
           "time_decay_gru", "time_gap_embedding", "time_lstm", "tlstm"]
