"""Argument checks shared by the ops that take event sequences.

Option checks (numbers, ints, choices) serve the ops and the modules' constructors alike.
Static checks (type, rank, dtype, device) always run. Data checks (lengths in range, timestamps
finite and non-decreasing within each sequence, their gaps representable, coordinates in
range) read the values: they run eagerly with a single device synchronisation and are skipped
while ``torch.compile`` traces (the native kernels stay memory-safe on any values). Every error
is a ``ValueError`` naming the argument and, for data errors, the row and position.
"""

import math

import torch

TIMESTAMP_DTYPES = (torch.int64, torch.float64)
INT64_MAX = 2**63 - 1
# float64 resolves one second up to 2^53 s (about 285 million years) from 0.
FLOAT64_SECONDS = 2.0**53


def timestamp_range_faults(timestamps, first, valid):
    """Masks like ``timestamps`` of the values whose gaps cannot be represented: float64 beyond
    +-2^53 s (the gaps lose whole seconds), and int64 whose gap to their sequence's first event
    ``first`` (broadcastable to ``timestamps``) passes 2^63 - 1 (the subtraction would wrap).
    Only ``valid`` positions count; the arithmetic itself never overflows."""
    if timestamps.dtype.is_floating_point:
        return (timestamps.abs() > FLOAT64_SECONDS) & valid
    # t - first > INT64_MAX <=> first < t - INT64_MAX, computable for t >= 0; for t < 0 the gap
    # to any first <= t is at most t - INT64_MIN <= INT64_MAX. (first > t is a decrease.)
    return (timestamps >= 0) & (first < timestamps.clamp(min=0) - INT64_MAX) & valid


def timestamp_range_error(where, value, first):
    """The ValueError of a value flagged by :func:`timestamp_range_faults` at ``where`` (e.g.
    "row 2, position 5")."""
    if isinstance(value, float):
        return ValueError(f"timestamps must be within +-2^53 s, where float64 still resolves one "
                          f"second; {where} has {value} (pass int64 seconds)")
    return ValueError(f"timestamps must span at most 2^63 - 1 s within a sequence (their gaps "
                      f"are int64); {where} has {value}, more than that after the sequence's "
                      f"first event {first}")


def check_positive(value, name, unit=""):
    """``value`` is a finite real number > 0 (``unit`` names what it counts, e.g. "seconds")."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value > 0):
        unit = f" ({unit})" if unit else ""
        raise ValueError(f"{name} must be a finite number > 0{unit}, got {value!r}")


def check_int(value, name, minimum, maximum=None):
    """``value`` is an int (not a bool) in [minimum, maximum]."""
    if (not isinstance(value, int) or isinstance(value, bool) or value < minimum
            or (maximum is not None and value > maximum)):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


def check_choice(value, name, choices):
    """``value`` is one of the strings ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_tensor(value, name, *, rank, shape, device=None):
    """``value`` is a tensor of ``rank`` dims (any rank if None; ``shape`` describes them) on
    ``device``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(value).__name__}")
    if rank is not None and value.dim() != rank:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if device is not None and value.device != device:
        raise ValueError(f"{name} is on {value.device} but timestamps are on {device}; "
                         "move them to one device")


def check_lengths(lengths, batch):
    """``lengths`` is a 1-D integer tensor with ``batch`` entries (its device and values are
    checked by the caller: values together with the data, in one synchronisation, with
    :func:`lengths_range_error`)."""
    check_tensor(lengths, "lengths", rank=1, shape="[B]")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if lengths.shape[0] != batch:
        raise ValueError(f"lengths must have B={batch} entries, got {lengths.shape[0]}")


def lengths_range_error(lengths, bad, seq_len):
    """The ValueError for the first row of ``bad`` [B] (lengths outside [0, L])."""
    row = int(torch.nonzero(bad)[0])
    return ValueError(f"lengths must be in [0, L={seq_len}]; lengths[{row}] = "
                      f"{int(lengths[row])}")


def _first(mask):
    """(row, position) of the first True in a [B, L] mask."""
    row, position = torch.nonzero(mask)[0].tolist()
    return row, position


def check_sequences(timestamps, lengths=None, coordinates=None):
    """Check a batch of padded event sequences; return ``(B, L)``.

    timestamps [B, L] int64 seconds or float64; lengths [B] integer (positions at or past a
    row's length are padding and never checked); coordinates [B, L, 2] float (latitude,
    longitude in degrees).
    """
    check_tensor(timestamps, "timestamps", rank=2, shape="[B, L]")
    if timestamps.dtype not in TIMESTAMP_DTYPES:
        raise ValueError("timestamps must be int64 (seconds) or float64, got "
                         f"{timestamps.dtype}; convert with .long() or .double()")
    batch, seq_len = timestamps.shape
    device = timestamps.device
    if lengths is not None:
        check_tensor(lengths, "lengths", rank=1, shape="[B]", device=device)
        check_lengths(lengths, batch)
    if coordinates is not None:
        check_tensor(coordinates, "coordinates", rank=3, shape="[B, L, 2]", device=device)
        if tuple(coordinates.shape) != (batch, seq_len, 2):
            raise ValueError(f"coordinates must have shape [B, L, 2] = [{batch}, {seq_len}, 2] "
                             f"(latitude, longitude in degrees), got {tuple(coordinates.shape)}")
        if not coordinates.dtype.is_floating_point:
            raise ValueError(f"coordinates must be a floating-point tensor, got {coordinates.dtype}")
    if not torch.compiler.is_compiling() and timestamps.device.type != "meta":  # values exist
        _check_sequence_values(timestamps, lengths, coordinates)
    return batch, seq_len


def _check_sequence_values(timestamps, lengths, coordinates):
    batch, seq_len = timestamps.shape
    positions = torch.arange(seq_len, device=timestamps.device)
    if lengths is None:
        bad_lengths = torch.zeros(0, dtype=torch.bool, device=timestamps.device)
        valid = torch.ones(batch, seq_len, dtype=torch.bool, device=timestamps.device)
    else:
        bad_lengths = (lengths < 0) | (lengths > seq_len)
        valid = positions < lengths[:, None]  # [B, L]
    nonfinite = ~torch.isfinite(timestamps) & valid if timestamps.dtype.is_floating_point else None
    decreasing = (timestamps[:, 1:] < timestamps[:, :-1]) & valid[:, 1:]  # [B, L-1]
    out_of_range = timestamp_range_faults(timestamps, timestamps[:, :1], valid)  # [B, L]
    conditions = [bad_lengths, decreasing, out_of_range] + ([nonfinite] if nonfinite is not None
                                                            else [])
    if coordinates is not None:
        latitude, longitude = coordinates[..., 0], coordinates[..., 1]
        coord_nonfinite = ~torch.isfinite(coordinates).all(-1) & valid
        bad_latitude = ((latitude < -90) | (latitude > 90)) & valid
        bad_longitude = ((longitude < -180) | (longitude > 180)) & valid
        conditions += [coord_nonfinite, bad_latitude, bad_longitude]
    if not torch.stack([c.any() for c in conditions]).any().item():  # one synchronisation
        return
    if bad_lengths.any():
        raise lengths_range_error(lengths, bad_lengths, seq_len)
    if nonfinite is not None and nonfinite.any():
        row, position = _first(nonfinite)
        raise ValueError(f"timestamps must be finite; row {row} has "
                         f"{timestamps[row, position].item()} at position {position}")
    if decreasing.any():
        row, position = _first(decreasing)
        before, after = timestamps[row, position].item(), timestamps[row, position + 1].item()
        raise ValueError("timestamps must be non-decreasing within each sequence; row "
                         f"{row} decreases at position {position + 1} ({before} -> {after})")
    if out_of_range.any():
        row, position = _first(out_of_range)
        raise timestamp_range_error(f"row {row}, position {position}",
                                    timestamps[row, position].item(), timestamps[row, 0].item())
    if coord_nonfinite.any():
        row, position = _first(coord_nonfinite)
        raise ValueError(f"coordinates must be finite; row {row}, position {position} has "
                         f"{coordinates[row, position].tolist()}")
    if bad_latitude.any():
        row, position = _first(bad_latitude)
        raise ValueError("coordinates latitude must be in [-90, 90] degrees; row "
                         f"{row}, position {position} has {latitude[row, position].item()}")
    row, position = _first(bad_longitude)
    raise ValueError("coordinates longitude must be in [-180, 180] degrees; row "
                     f"{row}, position {position} has {longitude[row, position].item()}")
