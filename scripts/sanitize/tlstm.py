"""compute-sanitizer case: stseq.ops.tlstm forward + backward (see _time_rnn.py)."""

import sys

import _time_rnn
from _case import main

if __name__ == "__main__":
    sys.exit(main("tlstm", lambda device, dtype: _time_rnn.run("tlstm", device, dtype),
                  backend="native"))
