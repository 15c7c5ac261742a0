"""compute-sanitizer case: stseq.ops.time_decay_attention on its Triton kernels, forward +
backward, padded with lengths (causal, bucket table) and jagged (not causal)."""

import sys

from _case import main  # noqa: I001  (first: sets TRITON_INTERPRET before stseq loads Triton)
from stseq.bench import time_decay_attention as suite

SHAPES = (dict(batch=2, heads=2, seq_len=37, head_dim=16, num_buckets=8),
          dict(batch=2, heads=2, seq_len=37, head_dim=16, jagged=True, causal=False))


def run(device, dtype):
    results = []
    for shape in SHAPES:
        case = suite.make_inputs(**shape, device=device, dtype=dtype)
        ours = suite.as_jagged(case) if shape.get("jagged") else case
        results += [suite.stseq_forward(ours), *suite.stseq_forward_backward(ours)]
    return results


if __name__ == "__main__":
    sys.exit(main("time_decay_attention", run, backend="triton"))
