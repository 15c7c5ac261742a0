"""nn.Modules users import; they reach kernels only through ``stseq.ops``."""

from stseq.nn.time_gap import TimeGapEmbedding

__all__ = ["TimeGapEmbedding"]
from stseq.nn.time_rnn import TLSTM, TimeDecayGRU, TimeLSTM, time_deltas  # noqa: E402
__all__ += ["TLSTM", "TimeDecayGRU", "TimeLSTM", "time_deltas"]
