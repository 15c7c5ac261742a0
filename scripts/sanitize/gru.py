"""compute-sanitizer case: stseq.ops.gru forward + backward (see _rnn.py)."""

import sys

import _rnn
from _case import main

if __name__ == "__main__":
    sys.exit(main("gru", lambda device, dtype: _rnn.run("gru", device, dtype),
                  backend="native"))
