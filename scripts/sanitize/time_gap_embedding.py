"""compute-sanitizer case: stseq.ops.time_gap_embedding forward + backward, time only and
with the distance table and interpolation, rows of different lengths."""

import sys

from stseq.bench import time_gap
from _case import main

SHAPE = dict(batch=5, seq_len=9, window=3, num_buckets=16, dim=24)


def run(device, dtype):
    results = []
    for extra in ({}, dict(distance=True, interpolate=True)):
        inputs = time_gap.make_inputs(**SHAPE, **extra, device=device, dtype=dtype)
        results += [time_gap.forward(inputs, None), *time_gap.forward_backward(inputs, None)]
    return results


if __name__ == "__main__":
    sys.exit(main("time_gap_embedding", run, backend="native"))
