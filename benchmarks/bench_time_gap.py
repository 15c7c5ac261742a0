"""pytest-benchmark suite of time_gap_embedding: native vs the eager reference, forward and
forward+backward, on the issue's target shape and a larger one.

    pytest benchmarks/bench_time_gap.py [--device cuda] --benchmark-group-by=param:shape

Each benchmark's extra_info holds the max relative parity error against the reference and the
peak memory of one call. `stseq bench --ops time_gap` prints the same cases as ratios.
"""

import pytest
import torch

from stseq.bench import measure, time_gap

SHAPES = {"B256-L50-W8-NB64-D64": dict(batch=256, seq_len=50, window=8, num_buckets=64, dim=64),
          "B1024-L50-W8-NB64-D64-geo": dict(batch=1024, seq_len=50, window=8, num_buckets=64,
                                            dim=64, distance=True)}
MODES = {"forward": time_gap.forward, "forward+backward": time_gap.forward_backward}


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_time_gap_embedding(benchmark, device, shape, mode, backend):
    inputs = time_gap.make_inputs(**SHAPES[shape], device=device)
    fn = MODES[mode]

    def call():
        result = fn(inputs, backend)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    result = benchmark(call)
    benchmark.extra_info["max_error_vs_reference"] = measure.max_relative_error(
        result, fn(inputs, "reference"))
    benchmark.extra_info["peak_mib"] = measure.peak_memory_mb(call, device)
    assert measure.parity_ok(benchmark.extra_info["max_error_vs_reference"], torch.float32)
