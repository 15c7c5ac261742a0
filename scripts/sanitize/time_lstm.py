"""compute-sanitizer case: stseq.ops.time_lstm, variants 1-3, forward + backward
(see _time_rnn.py)."""

import sys

import _time_rnn
from _case import main


def run(device, dtype):
    return [tensor for variant in (1, 2, 3)
            for tensor in _time_rnn.run(f"time_lstm{variant}", device, dtype)]


if __name__ == "__main__":
    sys.exit(main("time_lstm", run, backend="native"))
