"""compute-sanitizer case: stseq.ops.time_decay_gru forward + backward (see _time_rnn.py)."""

import sys

import _time_rnn
from _case import main

if __name__ == "__main__":
    sys.exit(main("time_decay_gru",
                  lambda device, dtype: _time_rnn.run("time_decay_gru", device, dtype),
                  backend="native"))
