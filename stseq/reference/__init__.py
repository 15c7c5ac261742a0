"""Pure-PyTorch twins of every stseq op: the fallback where no kernel runs and the oracle the
tests compare kernels against. Written for clarity, not speed; imports only torch."""

from stseq.reference.time_gap import haversine_km, time_gap_embedding

__all__ = ["haversine_km", "time_gap_embedding"]
from stseq.reference.time_rnn import time_decay_gru, time_lstm, tlstm  # noqa: E402
__all__ += ["time_decay_gru", "time_lstm", "tlstm"]
