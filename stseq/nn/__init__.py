"""nn.Modules users import; they reach kernels only through ``stseq.ops``."""

from stseq.nn.attention import TimeDecayMultiheadAttention, TimeDecayTransformerBlock
from stseq.nn.rnn import GRU, LSTM
from stseq.nn.time_gap import TimeGapEmbedding
from stseq.nn.time_rnn import TLSTM, TimeDecayGRU, TimeLSTM, time_deltas

__all__ = ["GRU", "LSTM", "TLSTM", "TimeDecayGRU", "TimeDecayMultiheadAttention",
           "TimeDecayTransformerBlock", "TimeGapEmbedding", "TimeLSTM", "time_deltas"]
