"""Context for a hidden state: ``ContextFusion`` mixes context vectors (the query-time
encoding, the user's profile) into it, and ``history_mean`` gives that profile."""

import torch
from torch import nn


class ContextFusion(nn.Module):
    """Mixes context vectors into a hidden state: ``LayerNorm(h + MLP([h; c_1; ...]))``, so the
    context can switch what the state predicts (e.g. in-session transitions vs long-term
    interests).

    Example::

        fuse = ContextFusion(32, num_contexts=2)
        out = fuse(hidden, query_context, profile)   # [B, L, 32]
    """

    def __init__(self, dim, *, num_contexts=1, dropout=0.0):
        super().__init__()
        width = (1 + num_contexts) * dim
        self.num_contexts = num_contexts
        self.mix = nn.Sequential(nn.Linear(width, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, hidden, *contexts):
        """hidden and each context [B, L, D] -> [B, L, D]."""
        if len(contexts) != self.num_contexts:
            raise ValueError(f"expected {self.num_contexts} context tensors, got {len(contexts)}")
        return self.norm(hidden + self.mix(torch.cat([hidden, *contexts], dim=-1)))


def history_mean(x, lengths):
    """[B, L, D] per-position vectors -> [B, L, D] mean over the window's positions up to and
    including each one (the long-term profile of what the user did so far); zero at padding.

    Example::

        profile = history_mean(item_embeddings, batch.lengths)
    """
    valid = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).unsqueeze(-1)
    count = valid.cumsum(1).clamp(min=1).to(x.dtype)
    return (x * valid).cumsum(1) / count * valid
