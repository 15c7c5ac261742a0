"""nn.Modules users import; they reach kernels only through ``stseq.ops``."""

from stseq.nn.time_gap import TimeGapEmbedding

__all__ = ["TimeGapEmbedding"]
