"""Time in stseq, in one place: what a gap is, its unit, and how layers transform it.

- Timestamps are int64 seconds (or float64 seconds); gaps are taken in the timestamps' own
  dtype (exact for int64 epoch seconds) and only then divided, in float64.
- The gap *before* an event (:func:`gaps_before`): ``t[p] - t[p-1]``, 0 at a sequence's first
  event. This is what ``stseq.data.Batch.time_gaps`` holds and what every time-aware layer reads
  at position p in its forward direction.
- The gap *after* an event (:func:`gaps_after`): ``t[p+1] - t[p]``, 0 at the last event. The
  Time-LSTM paper's dt is this one (the gap to the next action). stseq's recommenders read the
  gap before each event instead and give the time of the prediction separately
  (``Batch.next_timestamps``, encoded by ``stseq.models.QueryTimeEncoding``): at the last
  position the next event's time is the query, which is known only at serving time, so feeding
  it through the recurrence would let the state at earlier positions see training targets' times
  and would mix "how long since" with "when is it asked". A reverse (bidirectional) pass reads
  the gap after each event, i.e. the forward direction's gap at p + 1.
- Layers take gaps in seconds plus ``time_unit`` (seconds per unit the layer's parameters see)
  and ``gap_transform`` (:data:`GAP_TRANSFORMS`): ``"none"`` feeds ``gap / time_unit``,
  ``"log1p"`` feeds ``log1p(gap / time_unit)`` (gaps span seconds to months; the log keeps a
  cell's ``dt * w`` terms in range). The attention op reads raw timestamps and its own
  ``time_unit`` and ``decay_fn`` (see ``stseq.ops.time_decay_attention``).

Example::

    ts = torch.tensor([[1_700_000_000, 1_700_000_060, 1_700_003_660]])
    gaps_before(ts)                                       # [[0., 60., 3600.]] float64 seconds
    transform_gaps(gaps_before(ts), 60.0, "log1p")       # log1p([0, 1, 60])
"""

import math

import torch

GAP_TRANSFORMS = ("none", "log1p")


def check_time_unit(time_unit, name="time_unit"):
    """``time_unit`` as a float, or a ValueError naming ``name`` unless it is a finite number
    > 0."""
    if isinstance(time_unit, bool) or not (isinstance(time_unit, (int, float))
                                           and 0 < time_unit < math.inf):
        raise ValueError(f"{name} must be a finite number > 0 (seconds), got {time_unit!r}")
    return float(time_unit)


def check_gap_transform(gap_transform, name="gap_transform"):
    """``gap_transform`` itself, or a ValueError naming ``name`` unless it is one of
    :data:`GAP_TRANSFORMS`."""
    if gap_transform not in GAP_TRANSFORMS:
        raise ValueError(f"{name} must be one of {GAP_TRANSFORMS}, got {gap_transform!r}")
    return gap_transform


def _valid(shape, lengths, device):
    return torch.arange(shape[1], device=device) < lengths[:, None]


def gaps_before(timestamps, lengths=None):
    """[B, L] timestamps -> [B, L] float64 seconds since each event's previous one: 0 at
    position 0 and at positions at or past a row's ``lengths``. The differences are taken in
    the timestamps' own dtype before the conversion to float64."""
    gaps = (timestamps[:, 1:] - timestamps[:, :-1]).double()  # [B, L-1]
    if timestamps.shape[1]:
        gaps = torch.cat([torch.zeros_like(gaps[:, :1]), gaps], 1)
    else:
        gaps = torch.zeros(timestamps.shape, dtype=torch.float64, device=timestamps.device)
    if lengths is not None:
        gaps = torch.where(_valid(gaps.shape, lengths, gaps.device), gaps,
                           torch.zeros((), dtype=gaps.dtype, device=gaps.device))
    return gaps


def gaps_after(timestamps, lengths=None):
    """[B, L] timestamps -> [B, L] float64 seconds until each event's next one: 0 at each row's
    last event (``lengths - 1``) and past it."""
    before = gaps_before(timestamps, lengths)
    after = torch.cat([before[:, 1:], torch.zeros_like(before[:, :1])], 1)
    if lengths is not None:
        last = torch.arange(after.shape[1], device=after.device) < (lengths - 1)[:, None]
        after = torch.where(last, after, torch.zeros((), dtype=after.dtype, device=after.device))
    return after


def transform_gaps(gaps, time_unit=1.0, gap_transform="none"):
    """Gaps in seconds -> float64 ``gaps / time_unit`` (``"none"``) or ``log1p(gaps /
    time_unit)`` (``"log1p"``), computed in float64 whatever the input dtype."""
    gaps = gaps.double() / time_unit
    return torch.log1p(gaps) if gap_transform == "log1p" else gaps
