r"""pytest-benchmark suite of time_decay_attention against its peers, forward and
forward+backward (the decay gradient included): SDPA with a materialised bias everywhere; on
CUDA also SDPA without bias (the ceiling) and FlexAttention with the equivalent score_mod.

    pytest benchmarks/bench_time_decay_attention.py [--device cuda] \
        --benchmark-group-by=param:shape

CPU runs float32 at the issue's CPU shape; CUDA runs bfloat16 at the issue's H100 shapes.
Each benchmark's extra_info holds the max relative error against its reference (SDPA with the
bias for stseq and Flex; stseq at decay rate 0 and SDPA without bias against each other) and the
peak memory of one call. `stseq bench --ops time_decay_attention` prints the same comparisons
as ratios.
"""

import pytest
import torch

from stseq.bench import measure
from stseq.bench import time_decay_attention as suite

SHAPES = {
    "cpu": {"B32-H4-L200-D32": dict(batch=32, heads=4, seq_len=200, head_dim=32),
            "B32-H4-L200-D32-jagged": dict(batch=32, heads=4, seq_len=200, head_dim=32,
                                           jagged=True)},
    "cuda": {**{f"B64-H4-L{length}-D{dim}": dict(batch=64, heads=4, seq_len=length, head_dim=dim)
                for length in (200, 1024, 4096) for dim in (64, 128)},
             "B64-H4-L1024-D64-jagged": dict(batch=64, heads=4, seq_len=1024, head_dim=64,
                                             jagged=True)},
}
DTYPE = {"cpu": torch.float32, "cuda": torch.bfloat16}
RUNNERS = ("stseq", "sdpa_bias", "sdpa_no_bias", "flex", "stseq_no_decay")


def _runner(name, case, ours):
    """fn(backward) of one runner on a case (``ours``: stseq's layout of it)."""
    if name in ("stseq", "stseq_no_decay"):  # the latter: rate 0, the no-bias ceiling's twin
        inputs = ours if name == "stseq" else suite.at_rate_zero(ours)
        return lambda backward: (suite.stseq_forward_backward if backward
                                 else suite.stseq_forward)(inputs)
    if name == "sdpa_bias":
        return lambda backward: (suite.sdpa_bias_forward_backward if backward
                                 else suite.sdpa_bias_forward)(case)
    if name == "sdpa_no_bias":
        return lambda backward: suite.sdpa_no_bias(case, backward)
    return suite.flex_runner(case)


# What each runner is checked against: the materialised bias, or the other side of the no-bias
# comparison.
EXPECTED = {"stseq": "sdpa_bias", "flex": "sdpa_bias", "sdpa_no_bias": "stseq_no_decay",
            "stseq_no_decay": "sdpa_no_bias"}


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("shape", sorted({name for shapes in SHAPES.values() for name in shapes}))
def test_time_decay_attention(benchmark, device, shape, mode, runner):
    if shape not in SHAPES[device.type]:
        pytest.skip(f"{shape} is a {'CUDA' if device.type == 'cpu' else 'CPU'} shape")
    if device.type == "cpu" and runner in ("sdpa_no_bias", "flex", "stseq_no_decay"):
        pytest.skip("the no-bias and FlexAttention peers run on CUDA (Flex has no CPU backward)")
    spec = SHAPES[device.type][shape]
    batch, heads, length = spec["batch"], spec["heads"], spec["seq_len"]
    if runner == "sdpa_bias" and batch * heads * length * length > 2**31:
        pytest.skip("the materialised [B, H, L, L] bias does not fit")
    case = suite.make_inputs(**spec, dtype=DTYPE[device.type], device=device)
    ours = suite.as_jagged(case) if spec.get("jagged") else case
    backward = mode == "forward+backward"
    run = _runner(runner, case, ours)

    def call():
        result = run(backward)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    result = benchmark(call)
    if runner in EXPECTED and (EXPECTED[runner] != "sdpa_bias"
                               or batch * heads * length * length <= 2**31):
        error = measure.max_relative_error(result, _runner(EXPECTED[runner], case, ours)(backward))
        benchmark.extra_info["max_error"] = error
        assert error <= 5e-2 if DTYPE[device.type] == torch.bfloat16 else error <= 1e-5
    benchmark.extra_info["peak_mib"] = measure.peak_memory_mb(call, device)
