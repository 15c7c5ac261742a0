"""nn.Modules users import; they reach kernels only through ``stseq.ops``."""

from stseq.nn.time_gap import TimeGapEmbedding

__all__ = ["TimeGapEmbedding"]
from stseq.nn.attention import TimeDecayMultiheadAttention, TimeDecayTransformerBlock  # noqa: E402
__all__ += ["TimeDecayMultiheadAttention", "TimeDecayTransformerBlock"]
from stseq.nn.rnn import GRU, LSTM  # noqa: E402
__all__ += ["GRU", "LSTM"]
