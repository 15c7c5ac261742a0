"""Reference windowed spatio-temporal gap embedding (see ``stseq.ops.time_gap_embedding``).

Materialises the [B, L, W, D] looked-up rows on purpose: it is the readable statement of the
math, and autograd provides the table gradients.
"""

import torch

EARTH_RADIUS_KM = 6371.0088


def haversine_km(latitude1, longitude1, latitude2, longitude2):
    """Great-circle distance in kilometres between points given in degrees (float64 math).

    Example::

        haversine_km(torch.tensor(0.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(1.0))
        # tensor(111.1951, dtype=torch.float64)
    """
    lat1, lon1, lat2, lon2 = (torch.deg2rad(x.double()) for x in (latitude1, longitude1,
                                                                    latitude2, longitude2))
    a = torch.sin(0.5 * (lat2 - lat1)) ** 2 + (
        torch.cos(lat1) * torch.cos(lat2) * torch.sin(0.5 * (lon2 - lon1)) ** 2)
    return 2.0 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(a.clamp(0.0, 1.0)))


def _bucketize(gap, num_buckets, scale, bucketing, interpolate):
    """(lo [..] int64 in [0, NB-1], w_hi [..] float64): the bucket of a gap and the weight of the
    bucket above it (0 unless interpolating)."""
    value = torch.log1p(gap) if bucketing == "log" else gap
    position = torch.nan_to_num(scale * value, nan=0.0).clamp(0.0, num_buckets - 1)
    lo = position.floor()
    w_hi = position - lo if interpolate else torch.zeros_like(position)
    return lo.long(), w_hi


def _lookup(table, lo, w_hi, window):
    """Rows of ``table`` ([W, NB, D] per lag or [NB, D] shared) for buckets lo [B, L, W]:
    (1 - w_hi) * table[lo] + w_hi * table[lo + 1] -> [B, L, W, D]; table[lo] alone where
    w_hi = 0 (a NaN/inf in the unused row must not come in as 0 * inf)."""
    num_buckets = table.shape[-2]
    hi = (lo + 1).clamp(max=num_buckets - 1)
    if table.dim() == 3:
        lag = torch.arange(window, device=lo.device)
        rows_lo, rows_hi = table[lag, lo], table[lag, hi]
    else:
        rows_lo, rows_hi = table[lo], table[hi]
    w_hi = w_hi.to(table.dtype).unsqueeze(-1)
    return torch.where(w_hi == 0, rows_lo, (1 - w_hi) * rows_lo + w_hi * rows_hi)


def time_gap_embedding(timestamps, time_weight, *, lengths=None, coordinates=None,
                       distance_weight=None, window=None, time_unit=1.0, time_scale=1.0,
                       distance_scale=1.0, bucketing="log", interpolate=False):
    """Mean over lags k = 1..W of the bucketed time-gap (and distance) embeddings -> [B, L, D].

    Same signature and semantics as :func:`stseq.ops.time_gap_embedding` (arguments already
    checked there).
    """
    batch, seq_len = timestamps.shape
    if window is None:
        window = time_weight.shape[0]
    device = timestamps.device
    position = torch.arange(seq_len, device=device)
    source = position[:, None] - torch.arange(1, window + 1, device=device)  # [L, W]: t - k
    has_lag = source >= 0
    source = source.clamp(min=0)
    if lengths is None:
        lengths = torch.full((batch,), seq_len, device=device)
    is_event = position[None, :] < lengths[:, None]  # [B, L]
    valid = is_event[:, :, None] & has_lag[None]  # [B, L, W]

    # Differences in the timestamps' own dtype (exact for int64), float64 afterwards.
    gap = (timestamps[:, :, None] - timestamps[:, source]).double() / time_unit  # [B, L, W]
    lo, w_hi = _bucketize(gap, time_weight.shape[-2], time_scale, bucketing, interpolate)
    rows = _lookup(time_weight, lo, w_hi, window)  # [B, L, W, D]
    if distance_weight is not None:
        here = coordinates[:, :, None, :].double()  # [B, L, 1, 2]
        there = coordinates[:, source, :].double()  # [B, L, W, 2]
        distance = haversine_km(there[..., 0], there[..., 1], here[..., 0], here[..., 1])
        lo, w_hi = _bucketize(distance, distance_weight.shape[-2], distance_scale, bucketing,
                              interpolate)
        rows = rows + _lookup(distance_weight, lo, w_hi, window)

    rows = torch.where(valid[..., None], rows, torch.zeros((), dtype=rows.dtype, device=device))
    count = valid.sum(-1, keepdim=True)  # [B, L, 1]
    return rows.sum(2) / count.clamp(min=1).to(rows.dtype)
