"""compute-sanitizer case: stseq.ops.lstm forward + backward (see _rnn.py)."""

import sys

import _rnn
from _case import main

if __name__ == "__main__":
    sys.exit(main("lstm", lambda device, dtype: _rnn.run("lstm", device, dtype),
                  backend="native"))
