"""When a prediction is asked for: ``QueryTimeEncoding`` embeds the gap from each event to the
query time and the query's hour of day and day of week."""

import torch
from torch import nn

import stseq.nn

HOUR = 3600
DAY = 86_400
WEEKDAY_OFFSET = 3  # 1970-01-01 was a Thursday: (days + 3) % 7 counts from Monday = 0
QUERY_GAP_BUCKETS = 32
QUERY_GAP_MAX = 30 * DAY  # s: the last query-gap bucket starts here


class QueryTimeEncoding(nn.Module):
    """Embeds when each position's prediction is asked for: the gap from the event to the query
    time (``next_timestamps``), log-bucketed with interpolation by a ``TimeGapEmbedding`` over
    (event, query) pairs, plus the hour of day and day of week (UTC) of the query time.

    Example::

        encode = QueryTimeEncoding(32)
        context = encode(batch.timestamps, batch.next_timestamps)   # [B, L, 32]
    """

    def __init__(self, dim, *, backend="auto"):
        super().__init__()
        self.gap = stseq.nn.TimeGapEmbedding(QUERY_GAP_BUCKETS, dim, window=1,
                                             max_gap=QUERY_GAP_MAX, interpolate=True,
                                             backend=backend)
        self.hour = nn.Embedding(24, dim)
        self.weekday = nn.Embedding(7, dim)
        for table in (self.hour, self.weekday):
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, timestamps, next_timestamps):
        """timestamps, next_timestamps [B, L] int64 seconds -> [B, L, D]."""
        batch, length = timestamps.shape
        pairs = torch.stack([timestamps, next_timestamps], dim=-1).view(-1, 2)  # [B * L, 2]
        gap = self.gap(pairs)[:, 1].view(batch, length, -1)  # [B, L, D]
        hour = torch.div(next_timestamps, HOUR, rounding_mode="floor") % 24
        weekday = (torch.div(next_timestamps, DAY, rounding_mode="floor") + WEEKDAY_OFFSET) % 7
        return gap + self.hour(hour) + self.weekday(weekday)
