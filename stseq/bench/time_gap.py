"""Benchmark cases of ``time_gap_embedding``: native kernel vs the eager reference; on CUDA also
against a device-to-device copy moving the same bytes (its speedup column is then the fraction
of the copy bandwidth reached; the shape label gives the bytes, so GB/s = MB / ms / 1000)."""

import functools
import math

import torch

from stseq import ops

PEER = "reference (eager PyTorch)"
COPY_PEER = "D2D copy of the same bytes (read + write)"
# The target shape: B=256, L=50, W=8, NB=64, D=64; on CUDA also one large enough
# (~0.2 GB moved) for the copy-bandwidth comparison. Shapes with a device run there only.
QUICK = [dict(batch=256, seq_len=50, window=8, num_buckets=64, dim=64),
         dict(batch=4096, seq_len=200, window=8, num_buckets=64, dim=64, device="cuda")]
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


def traffic_bytes(shape, mode, dtype=torch.float32):
    """Bytes the op must read and write at ``shape``: timestamps (and coordinates) in, [B, L, D]
    out; forward+backward adds them in again and the [B, L, D] gradient (the tables and their
    gradients are small and stay in cache)."""
    positions = shape["batch"] * shape["seq_len"]
    per_position = 8 + 16 * bool(shape.get("distance")) + shape["dim"] * dtype.itemsize
    return positions * per_position * (2 if mode == "forward+backward" else 1)


def copy_peer(inputs, size, expected):
    """A peer that copies ``size`` bytes device to device (``size // 2`` read, as many written)
    and answers with ``expected()`` (the reference's result, computed once), so that the
    parity column still compares stseq with the reference."""
    source = torch.empty(size // 2, dtype=torch.uint8, device=inputs()["timestamps"].device)
    destination = torch.empty_like(source)
    destination.copy_(source)
    return lambda: (destination.copy_(source), expected())[1]


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn, peer) for every shape and mode of the grid; inputs are
    built on first use, so the list itself can be made without the device (a dry run)."""
    for shape in grid:
        if shape.get("device", device.type) != device.type:
            continue
        shape = {key: value for key, value in shape.items() if key != "device"}
        inputs = functools.cache(lambda shape=shape: make_inputs(**shape, device=device,
                                                                 dtype=dtype))
        label = ",".join(f"{key}={value}" for key, value in shape.items())
        for mode, fn in (("forward", forward), ("forward+backward", forward_backward)):
            name = f"time_gap_embedding {mode}"

            def ours(fn=fn, inputs=inputs):
                return fn(inputs(), "native")

            def reference(fn=fn, inputs=inputs):
                return fn(inputs(), "reference")

            yield name, label, ours, reference, PEER
            if device.type == "cuda":
                size = traffic_bytes(shape, mode, dtype)
                copy = functools.cache(lambda inputs=inputs, size=size, expected=functools.cache(
                    reference): copy_peer(inputs, size, expected))
                yield (name, f"{label},MB={size / 1e6:.1f}", ours,
                       lambda copy=copy: copy()(), COPY_PEER)
