"""Functional ops. Each checks its arguments, picks a backend (see ``stseq.backends``) and runs
the native kernel, the Triton kernel or the pure-PyTorch reference."""

from stseq.ops.time_gap import time_gap_embedding

__all__ = ["time_gap_embedding"]
from stseq.ops.time_rnn import time_decay_gru, time_lstm, tlstm  # noqa: E402
__all__ += ["time_decay_gru", "time_lstm", "tlstm"]
