"""pytest-benchmark suite of the recommenders' training step (loss forward + backward of one
batch): each trainable model with its stseq.nn layers on the default kernels vs the same model
and weights on the eager reference twins.

    pytest benchmarks/bench_models.py [--device cuda] --benchmark-group-by=param:name

Each benchmark's extra_info holds the max relative parity error of the gradients against the
other backend. ``stseq bench --ops models`` prints the same cases as ratios.
"""

import pytest
import torch

from stseq.bench import measure, models

SHAPE = dict(batch=128, seq_len=50, dim=128)


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("name", models.TRAINABLE)
def test_training_step(benchmark, device, name, backend):
    fast, slow, batch = models.make_case(model=name, **SHAPE, device=device)
    model, other = (fast, slow) if backend == "auto" else (slow, fast)

    def call():
        grads = models.training_step(model, batch, torch.float32)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return grads

    grads = benchmark.pedantic(call, rounds=5, warmup_rounds=1)
    error = measure.max_relative_error(grads, models.training_step(other, batch, torch.float32))
    benchmark.extra_info["max_error_vs_other_backend"] = error
    assert measure.parity_ok(error, torch.float32, models.TOLERANCES)
