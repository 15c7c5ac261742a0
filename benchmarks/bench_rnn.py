"""pytest-benchmark suite of stseq.nn.LSTM / stseq.nn.GRU against torch.nn.LSTM / torch.nn.GRU
(oneDNN/MKL on CPU, cuDNN on GPU), forward and forward+backward, padded and packed, on the
issue's target shape (B=256, L=50, input 64, H=128) and, on CUDA, a large batch in bfloat16.

    pytest benchmarks/bench_rnn.py [--device cuda] --benchmark-group-by=param:shape

Each benchmark's extra_info holds the max relative parity error against the other
implementation and the peak memory of one call. ``stseq bench --ops rnn`` runs the whole grid
and prints ratios.
"""

import pytest
import torch

from stseq.bench import measure, rnn

SHAPES = {
    "lstm-B256-L50-I64-H128": dict(cell="lstm", batch=256, seq_len=50, input_size=64, hidden=128),
    "gru-B256-L50-I64-H128": dict(cell="gru", batch=256, seq_len=50, input_size=64, hidden=128),
    "lstm-B256-L50-I64-H128-packed": dict(cell="lstm", batch=256, seq_len=50, input_size=64,
                                          hidden=128, packed=True),
    "lstm-B4096-L200-I256-H256-bf16": dict(cell="lstm", batch=4096, seq_len=200, input_size=256,
                                           hidden=256, dtype=torch.bfloat16, device="cuda"),
}
MODES = {"forward": rnn.forward, "forward+backward": rnn.forward_backward}


@pytest.mark.parametrize("implementation", ["stseq", "peer"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rnn(benchmark, device, shape, mode, implementation):
    config = dict(SHAPES[shape])
    if config.pop("device", device.type) != device.type:
        pytest.skip(f"{shape} runs on {SHAPES[shape]['device']} only")
    dtype = config.pop("dtype", torch.float32)
    case = rnn.make_case(**config, device=device, dtype=dtype)
    fn = MODES[mode]
    other = "peer" if implementation == "stseq" else "stseq"

    def call():
        result = rnn.run(implementation, fn, case)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    result = benchmark(call)
    benchmark.extra_info["max_error_vs_other"] = measure.max_relative_error(
        result, rnn.run(other, fn, case))
    benchmark.extra_info["peak_mib"] = measure.peak_memory_mb(call, device)
    assert measure.parity_ok(benchmark.extra_info["max_error_vs_other"], dtype)
