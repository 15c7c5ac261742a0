"""``time_gap_embedding``: the fused windowed spatio-temporal gap embedding.

Native op ``torch.ops.stseq.time_gap_embedding`` (C++ CPU, CUDA when built) with a fake impl
for ``torch.compile`` and an autograd formula whose backward is the op
``torch.ops.stseq.time_gap_embedding_backward``; the twin is
``stseq.reference.time_gap_embedding``.
"""

import torch

from stseq import reference
from stseq._native import NATIVE
from stseq.backends import resolve
from stseq.ops.checks import check_choice, check_int, check_positive, check_sequences, check_tensor

BUCKETINGS = ("log", "linear")


def time_gap_embedding(timestamps, time_weight, *, lengths=None, coordinates=None,
                       distance_weight=None, window=None, time_unit=1.0, time_scale=1.0,
                       distance_scale=1.0, bucketing="log", interpolate=False, backend=None):
    """Embed the time (and distance) gaps from each event to its ``window`` predecessors.

    For position t of a row and lag k = 1..W with t - k >= 0::

        gap    = (timestamps[t] - timestamps[t-k]) / time_unit
        bucket = min(NB - 1, floor(time_scale * log1p(gap)))     # bucketing="log"
                 min(NB - 1, floor(time_scale * gap))            # bucketing="linear"
        out[t] = mean over valid k of time_weight[k-1][bucket]   (+ the distance term)

    Args:
        timestamps: [B, L] int64 seconds or float64, non-decreasing within each row.
        time_weight: [W, NB, D] (one table per lag) or [NB, D] (shared by all lags).
        lengths: [B] integer; positions at or past a row's length are padding (output 0).
        coordinates: [B, L, 2] latitude, longitude in degrees; with ``distance_weight``
            ([W, NBd, D] or [NBd, D]) adds the bucketed haversine distance (km) to each lag.
        window: W; taken from ``time_weight`` when it is lag-specific.
        time_unit: seconds per unit of gap. time_scale / distance_scale: bucket positions per
            unit of log1p(gap) (log) or of gap (linear).
        interpolate: blend the two neighbouring buckets by the fractional bucket position, so
            the output is piecewise linear in the gap.
        backend: ``"auto"``, ``"native"`` or ``"reference"`` (see ``stseq.use_backend``).

    Returns:
        [B, L, D] in ``time_weight``'s dtype; zeros where a position has no earlier event or is
        padding. Gradients flow to the tables only (not to timestamps or coordinates).

    Example::

        ts = torch.tensor([[0, 60, 3600, 86400]])
        table = torch.randn(2, 16, 8, requires_grad=True)  # W=2 lags, 16 buckets, D=8
        out = stseq.ops.time_gap_embedding(ts, table)       # [1, 4, 8]
    """
    window = _check_arguments(timestamps, time_weight, lengths, coordinates, distance_weight,
                              window, time_unit, time_scale, distance_scale, bucketing)
    choice = resolve("time_gap_embedding", backend, timestamps.device, native=True, triton=False)
    if choice == "native":
        return torch.ops.stseq.time_gap_embedding(
            timestamps, time_weight, lengths, coordinates, distance_weight, window,
            float(time_unit), float(time_scale), float(distance_scale), bucketing,
            bool(interpolate))
    return reference.time_gap_embedding(
        timestamps, time_weight, lengths=lengths, coordinates=coordinates,
        distance_weight=distance_weight, window=window, time_unit=time_unit,
        time_scale=time_scale, distance_scale=distance_scale, bucketing=bucketing,
        interpolate=interpolate)


def _check_table(weight, name, window, dim, device):
    check_tensor(weight, name, rank=None, shape="[W, NB, D] or [NB, D]", device=device)
    if weight.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape [W, NB, D] (one table per lag) or [NB, D] "
                         f"(shared by all lags), got {tuple(weight.shape)}")
    if not weight.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor, got {weight.dtype}")
    if weight.dim() == 3 and weight.shape[0] != window:
        raise ValueError(f"{name} has {weight.shape[0]} lag tables but window={window}")
    if weight.shape[-2] < 1:
        raise ValueError(f"{name} needs at least one bucket, got shape {tuple(weight.shape)}")
    if weight.shape[-1] != dim:
        raise ValueError(f"{name} has embedding size {weight.shape[-1]} but time_weight has {dim}")


def _check_arguments(timestamps, time_weight, lengths, coordinates, distance_weight, window,
                     time_unit, time_scale, distance_scale, bucketing):
    """Check every argument; return the window W."""
    check_sequences(timestamps, lengths, coordinates)
    check_tensor(time_weight, "time_weight", rank=None, shape="[W, NB, D] or [NB, D]")
    if window is None:
        if time_weight.dim() != 3:
            raise ValueError("window is required when time_weight is a shared [NB, D] table")
        window = time_weight.shape[0]
    check_int(window, "window", 1)
    dim = time_weight.shape[-1]
    _check_table(time_weight, "time_weight", window, dim, timestamps.device)
    if (coordinates is None) != (distance_weight is None):
        raise ValueError("coordinates and distance_weight go together: pass both or neither")
    if distance_weight is not None:
        _check_table(distance_weight, "distance_weight", window, dim, timestamps.device)
        if distance_weight.dtype != time_weight.dtype:
            raise ValueError(f"distance_weight must have the dtype of time_weight "
                             f"({time_weight.dtype}), got {distance_weight.dtype}")
    check_positive(time_unit, "time_unit")
    check_positive(time_scale, "time_scale")
    check_positive(distance_scale, "distance_scale")
    check_choice(bucketing, "bucketing", BUCKETINGS)
    return window


def _register_native():
    @torch.library.register_fake("stseq::time_gap_embedding")
    def _(timestamps, time_weight, lengths, coordinates, distance_weight, window, time_unit,
          time_scale, distance_scale, bucketing, interpolate):
        batch, seq_len = timestamps.shape
        return time_weight.new_empty((batch, seq_len, time_weight.shape[-1]))

    @torch.library.register_fake("stseq::time_gap_embedding_backward")
    def _(grad, timestamps, time_weight, lengths, coordinates, distance_weight, window,
          time_unit, time_scale, distance_scale, bucketing, interpolate):
        distance_shape = distance_weight.shape if distance_weight is not None else (0,)
        return time_weight.new_empty(time_weight.shape), time_weight.new_empty(distance_shape)

    def setup_context(ctx, inputs, output):
        timestamps, time_weight, lengths, coordinates, distance_weight, *ctx.config = inputs
        ctx.save_for_backward(timestamps, time_weight, lengths, coordinates, distance_weight)

    def backward(ctx, grad):
        timestamps, time_weight, lengths, coordinates, distance_weight = ctx.saved_tensors
        grad_time, grad_distance = torch.ops.stseq.time_gap_embedding_backward(
            grad, timestamps, time_weight, lengths, coordinates, distance_weight, *ctx.config)
        return (None, grad_time, None, None,
                grad_distance if distance_weight is not None else None) + (None,) * 6

    torch.library.register_autograd("stseq::time_gap_embedding", backward,
                                    setup_context=setup_context)


if NATIVE is not None:
    _register_native()
