"""``TimeGapEmbedding``: learnable tables over the time (and distance) gaps to earlier events."""

import math

import torch
from torch import nn

from stseq import ops
from stseq.backends import check_backend
from stseq.ops.checks import check_choice, check_int, check_positive
from stseq.ops.time_gap import BUCKETINGS

SECONDS_PER_YEAR = 365 * 86400


def _bucket_scale(num_buckets, max_value, bucketing, name):
    """Scale that puts ``max_value`` (option ``name``) at the start of the last bucket."""
    if num_buckets == 1:
        return 1.0
    reach = math.log1p(max_value) if bucketing == "log" else max_value
    scale = (num_buckets - 1) / reach
    if not math.isfinite(scale):
        raise ValueError(f"{name} = {max_value!r} is too small to spread {num_buckets} buckets")
    return scale


def _check_options(num_buckets, embedding_dim, window, bucketing, max_gap, time_unit,
                   distance_buckets, max_distance, backend):
    """The constructor's options, each named in its error."""
    check_int(num_buckets, "num_buckets", 1)
    check_int(embedding_dim, "embedding_dim", 1)
    check_int(window, "window", 1)
    check_choice(bucketing, "bucketing", BUCKETINGS)
    check_positive(time_unit, "time_unit", "seconds per time unit")
    if max_gap is not None:
        check_positive(max_gap, "max_gap", "in time_unit")
    check_int(distance_buckets, "distance_buckets", 0)
    check_positive(max_distance, "max_distance", "km")
    check_backend(backend)


class TimeGapEmbedding(nn.Module):
    """Embeds each event by the gaps (time, and optionally distance) to its ``window``
    predecessors: the mean over lags of bucketed table rows, [B, L] timestamps -> [B, L, D].

    Buckets are logarithmic by default and reach ``max_gap`` (in ``time_unit``; one year of
    seconds by default) at the last bucket; gaps beyond it share the last bucket. With
    ``distance_buckets > 0`` the haversine distance (km) between the two events' coordinates is
    bucketed up to ``max_distance`` into its own table and added.

    Args:
        num_buckets: NB, rows per time table.
        embedding_dim: D.
        window: W, number of earlier events each event looks at.
        lag_specific: one table per lag ([W, NB, D], default) or one shared ([NB, D]).
        bucketing: ``"log"`` or ``"linear"``.
        max_gap: gap (in ``time_unit``) at the start of the last bucket.
        time_unit: seconds per time unit.
        interpolate: piecewise-linear in the gap instead of piecewise-constant.
        distance_buckets: NBd, rows per distance table (0: no distance term).
        max_distance: distance (km) at the start of the last distance bucket.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.

    Example::

        embed = stseq.nn.TimeGapEmbedding(64, 32, window=8)
        ts = torch.tensor([[1_700_000_000, 1_700_000_060, 1_700_086_400]])
        out = embed(ts)  # [1, 3, 32]
    """

    def __init__(self, num_buckets, embedding_dim, *, window=8, lag_specific=True,
                 bucketing="log", max_gap=None, time_unit=1.0, interpolate=False,
                 distance_buckets=0, max_distance=1000.0, backend="auto", device=None,
                 dtype=None):
        super().__init__()
        _check_options(num_buckets, embedding_dim, window, bucketing, max_gap, time_unit,
                       distance_buckets, max_distance, backend)
        if max_gap is None:
            max_gap = SECONDS_PER_YEAR / time_unit
        factory = {"device": device, "dtype": dtype}
        self.num_buckets, self.embedding_dim, self.window = num_buckets, embedding_dim, window
        self.bucketing, self.time_unit, self.interpolate = bucketing, time_unit, interpolate
        self.backend = backend
        self.time_scale = _bucket_scale(num_buckets, max_gap, bucketing, "max_gap")
        time_shape = (window, num_buckets, embedding_dim) if lag_specific else (num_buckets,
                                                                               embedding_dim)
        self.time_weight = nn.Parameter(torch.empty(time_shape, **factory))
        self.distance_buckets = distance_buckets
        if distance_buckets > 0:
            self.distance_scale = _bucket_scale(distance_buckets, max_distance, bucketing,
                                                "max_distance")
            shape = time_shape[:-2] + (distance_buckets, embedding_dim)
            self.distance_weight = nn.Parameter(torch.empty(shape, **factory))
        else:
            self.distance_scale = 1.0
            self.register_parameter("distance_weight", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Tables ~ N(0, 0.02^2), as for the item embeddings they are added to."""
        for weight in (self.time_weight, self.distance_weight):
            if weight is not None:
                nn.init.normal_(weight, std=0.02)

    def forward(self, timestamps, lengths=None, coordinates=None):
        """timestamps [B, L] int64 s or float64, lengths [B], coordinates [B, L, 2] degrees
        (required exactly when the module has a distance table) -> [B, L, D]."""
        if (coordinates is None) != (self.distance_weight is None):
            need = "needs coordinates" if coordinates is None else "has no distance table"
            raise ValueError(f"this TimeGapEmbedding {need} (distance_buckets="
                             f"{self.distance_buckets})")
        return ops.time_gap_embedding(
            timestamps, self.time_weight, lengths=lengths, coordinates=coordinates,
            distance_weight=self.distance_weight, window=self.window, time_unit=self.time_unit,
            time_scale=self.time_scale, distance_scale=self.distance_scale,
            bucketing=self.bucketing, interpolate=self.interpolate, backend=self.backend)

    def extra_repr(self):
        return (f"{self.num_buckets}, {self.embedding_dim}, window={self.window}, "
                f"lag_specific={self.time_weight.dim() == 3}, bucketing={self.bucketing!r}, "
                f"interpolate={self.interpolate}, distance_buckets={self.distance_buckets}, "
                f"backend={self.backend!r}")
