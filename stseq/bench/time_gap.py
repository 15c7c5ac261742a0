"""Benchmark cases of ``time_gap_embedding``: native kernel vs the eager reference."""

import math

import torch

from stseq import ops

PEER = "reference (eager PyTorch)"
# The target shape: B=256, L=50, W=8, NB=64, D=64.
QUICK = [dict(batch=256, seq_len=50, window=8, num_buckets=64, dim=64)]
_BASE = dict(window=8, num_buckets=64, dim=64)
FULL = ([dict(_BASE, batch=b, seq_len=l, dim=d)
         for b, l in ((64, 50), (256, 50), (256, 200), (1024, 50)) for d in (32, 128)]
        + [dict(_BASE, batch=256, seq_len=50),
           dict(_BASE, batch=256, seq_len=50, window=16),
           dict(_BASE, batch=256, seq_len=50, interpolate=True),
           dict(_BASE, batch=256, seq_len=50, distance=True),
           dict(_BASE, batch=1024, seq_len=50, distance=True, interpolate=True)])


def make_inputs(*, batch, seq_len, window, num_buckets, dim, distance=False, interpolate=False,
                dtype=torch.float32, device="cpu", seed=0):
    """Epoch-second timestamps with log-normal gaps (minutes to weeks), lengths in [1, L], and
    tables sized for gaps up to a year; coordinates around a few city centres."""
    generator = torch.Generator().manual_seed(seed)

    def table():  # [W, NB, D]
        weight = 0.02 * torch.randn(window, num_buckets, dim, generator=generator)
        return weight.to(device, dtype).requires_grad_()

    gaps = torch.exp(torch.randn(batch, seq_len, generator=generator) * 2.5 + 7.0).round().long()
    timestamps = 1_700_000_000 + gaps.cumsum(1) - gaps[:, :1]
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=generator)
    lengths[0] = seq_len
    inputs = dict(timestamps=timestamps.to(device), lengths=lengths.to(device),
                  time_weight=table(), interpolate=interpolate,
                  time_scale=(num_buckets - 1) / math.log1p(365 * 86400))
    if distance:
        centres = torch.tensor([[40.7, -74.0], [51.5, -0.1], [35.7, 139.7]])
        city = torch.randint(0, 3, (batch, 1), generator=generator)
        coordinates = centres[city] + 0.5 * torch.randn(batch, seq_len, 2, generator=generator)
        inputs.update(coordinates=coordinates.to(device), distance_weight=table(),
                      distance_scale=(num_buckets - 1) / math.log1p(1000.0))
    return inputs


def forward(inputs, backend):
    """One forward call on ``backend`` -> out [B, L, D]."""
    with torch.no_grad():
        return ops.time_gap_embedding(**inputs, backend=backend)


def forward_backward(inputs, backend):
    """Forward + backward of a fixed random projection -> the table gradients."""
    tables = [inputs["time_weight"]] + ([inputs["distance_weight"]]
                                        if "distance_weight" in inputs else [])
    out = ops.time_gap_embedding(**inputs, backend=backend)
    return torch.autograd.grad(out, tables, grad_outputs=torch.ones_like(out) * 0.5)


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn) for every shape and mode of the grid."""
    for shape in grid:
        inputs = make_inputs(**shape, device=device, dtype=dtype)
        label = ",".join(f"{key}={value}" for key, value in shape.items())
        for mode, fn in (("forward", forward), ("forward+backward", forward_backward)):
            yield (f"time_gap_embedding {mode}", label,
                   lambda fn=fn, inputs=inputs: fn(inputs, "native"),
                   lambda fn=fn, inputs=inputs: fn(inputs, "reference"))
