"""pytest-benchmark suite of time_gap_embedding: native vs the eager reference, forward and
forward+backward, on the issue's target shape and a larger one; on CUDA also a device-to-device
copy of the bytes the op must move (its bandwidth is the op's ceiling).

    pytest benchmarks/bench_time_gap.py [--device cuda] --benchmark-group-by=param:shape

Each benchmark's extra_info holds the max relative parity error against the reference, the
peak memory of one call and the achieved GB/s (bytes the op must move / median time). `stseq
bench --ops time_gap` prints the same cases as ratios.
"""

import functools

import pytest
import torch

from stseq.bench import measure, time_gap

SHAPES = {"B256-L50-W8-NB64-D64": dict(batch=256, seq_len=50, window=8, num_buckets=64, dim=64),
          "B1024-L50-W8-NB64-D64-geo": dict(batch=1024, seq_len=50, window=8, num_buckets=64,
                                            dim=64, distance=True)}
MODES = {"forward": time_gap.forward, "forward+backward": time_gap.forward_backward}


@pytest.mark.parametrize("backend", ["native", "reference", "copy"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_time_gap_embedding(benchmark, device, shape, mode, backend):
    if backend == "copy" and device.type != "cuda":
        pytest.skip("the copy-bandwidth ceiling is measured on CUDA")
    inputs = time_gap.make_inputs(**SHAPES[shape], device=device)
    fn = MODES[mode]
    size = time_gap.traffic_bytes(SHAPES[shape], mode)
    run = (time_gap.copy_peer(lambda: inputs, size, functools.cache(
        lambda: fn(inputs, "reference"))) if backend == "copy"
        else lambda: fn(inputs, backend))

    def call():
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    result = benchmark(call)
    if not benchmark.disabled:
        benchmark.extra_info["gb_per_s"] = size / benchmark.stats.stats.median / 1e9
    benchmark.extra_info["max_error_vs_reference"] = measure.max_relative_error(
        result, fn(inputs, "reference"))
    benchmark.extra_info["peak_mib"] = measure.peak_memory_mb(call, device)
    assert measure.parity_ok(benchmark.extra_info["max_error_vs_reference"], torch.float32)
