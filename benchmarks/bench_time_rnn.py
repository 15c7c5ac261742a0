"""pytest-benchmark suite of the time-aware recurrent layers (one layer, one direction): the fused
ops against the eager reference loops, and torch.nn.LSTM / torch.nn.GRU at the same shape as
the cost floor (oneDNN on CPU, cuDNN on GPU), forward and forward+backward.

    pytest benchmarks/bench_time_rnn.py [--device cuda] --benchmark-group-by=param:shape,param:mode

The native cases record their max relative parity error against the reference in extra_info
(and fail above the float32 tolerance); every case records the peak memory of one call.
`stseq bench --ops time_rnn time_rnn_floor` prints the same comparisons as ratios.
"""

import pytest
import torch

from stseq.bench import measure, time_rnn

SHAPES = {"B256-L50-I64-H128": time_rnn.TARGET}
CUDA_SHAPES = {"B4096-L50-I256-H256": dict(batch=4096, seq_len=50, input_size=256, hidden=256)}
MODES = {"forward": time_rnn.forward, "forward+backward": time_rnn.forward_backward}


def _shapes(device):
    return dict(SHAPES, **(CUDA_SHAPES if device.type == "cuda" else {}))


def _synchronized(fn, device):
    def call():
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result
    return call


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("cell", time_rnn.CELLS)
@pytest.mark.parametrize("shape", list(SHAPES) + list(CUDA_SHAPES))
def test_time_rnn(benchmark, device, shape, cell, mode, backend):
    if shape not in _shapes(device):
        pytest.skip("CUDA-sized shape")
    inputs = time_rnn.make_inputs(cell=cell, **_shapes(device)[shape], device=device)
    fn = MODES[mode]
    call = _synchronized(lambda: fn(inputs, backend), device)
    result = benchmark(call)
    benchmark.extra_info["peak_mib"] = measure.peak_memory_mb(call, device)
    if backend == "native":
        error = measure.max_relative_error(result, fn(inputs, "reference"))
        benchmark.extra_info["max_error_vs_reference"] = error
        assert measure.parity_ok(error, torch.float32)


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", list(SHAPES) + list(CUDA_SHAPES))
def test_torch_floor(benchmark, device, shape, mode, layer):
    if shape not in _shapes(device):
        pytest.skip("CUDA-sized shape")
    size = _shapes(device)[shape]
    module = getattr(torch.nn, layer)(size["input_size"], size["hidden"], device=device)
    x = torch.randn(size["seq_len"], size["batch"], size["input_size"], device=device,
                    requires_grad=True)

    def forward():
        with torch.no_grad():
            return module(x)[0]

    def forward_backward():
        output = module(x)[0]
        return torch.autograd.grad(output, [x, *module.parameters()],
                                   grad_outputs=torch.ones_like(output) * 0.5)

    call = _synchronized(forward if mode == "forward" else forward_backward, device)
    benchmark(call)
    benchmark.extra_info["peak_mib"] = measure.peak_memory_mb(call, device)
