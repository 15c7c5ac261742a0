"""Pure-PyTorch twins of every stseq op: the fallback where no kernel runs and the oracle the
tests compare kernels against. Written for clarity, not speed; imports only torch."""

from stseq.reference.time_gap import haversine_km, time_gap_embedding

__all__ = ["haversine_km", "time_gap_embedding"]
from stseq.reference.time_decay_attention import time_decay_attention  # noqa: E402
__all__ += ["time_decay_attention"]
from stseq.reference.rnn import gru, lstm  # noqa: E402
__all__ += ["gru", "lstm"]
