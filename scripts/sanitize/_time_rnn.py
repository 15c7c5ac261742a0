"""The time-aware recurrent sanitizer case, shared by time_lstm.py, tlstm.py and
time_decay_gru.py: padded with lengths (rows of different lengths), H=40."""

from stseq.bench import time_rnn

SHAPE = dict(batch=5, seq_len=7, input_size=6, hidden=40, lengths=True)


def run(cell, device, dtype):
    """Forward + backward of the cell's op (``time_lstm1`` ... ``time_decay_gru``) on the
    context's backend -> its outputs and the gradients of the input and weights."""
    inputs = time_rnn.make_inputs(cell=cell, **SHAPE, device=device, dtype=dtype)
    return [*time_rnn.forward(inputs, None), *time_rnn.forward_backward(inputs, None)]
