"""``TimeDecayMultiheadAttention`` and the pre-norm ``TimeDecayTransformerBlock`` built on it."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from stseq import ops
from stseq.backends import BACKENDS
from stseq.reference.time_decay_attention import HSTU_BUCKET_SCALE

# Decay rates (per time_unit) of the first and last head at initialisation.
INITIAL_RATES = (1.0, 1.0 / 64)


def _inverse_softplus(rate):
    return math.log(math.expm1(rate))


class TimeDecayMultiheadAttention(nn.Module):
    """Multi-head self-attention over timestamped events whose scores decay with the time
    between events: per head h, ``- softplus(decay[h]) * phi(|t_i - t_j| / time_unit)`` is added
    to each score, computed inside the kernel (see :func:`stseq.ops.time_decay_attention`).

    Projections as in :class:`torch.nn.MultiheadAttention` (one packed ``in_proj`` and an
    ``out_proj``). ``decay`` [H] is learnable; at initialisation the heads' rates are spaced
    geometrically from 1 to 1/64 per ``time_unit``, so that heads start at different time
    scales. With ``num_buckets > 0`` a learnable HSTU-style table ``time_bias`` [H, NB] over
    bucketed gaps is added too (zeros at initialisation).

    Args:
        embed_dim: E; num_heads: H, with E / H in [16, 128].
        dropout: dropout on the attention output before ``out_proj`` (the fused kernel never
            materialises the attention weights, so they are not dropped one by one).
        bias: biases of the projections.
        causal: attend only to earlier (and simultaneous-position) events.
        decay_fn: "abs", "log1p" or "sqrt"; time_unit: seconds per unit of gap.
        num_buckets, bucketing, bucket_scale: the bucketed time-bias table (0: none).
        window: attend only to keys at most this many positions away.
        backend: "auto", "triton" or "reference".

    Example::

        attention = stseq.nn.TimeDecayMultiheadAttention(64, 4, time_unit=3600.0)
        x = torch.randn(2, 50, 64)
        ts = 1_700_000_000 + torch.randint(0, 3600, (2, 50)).cumsum(1)
        out = attention(x, ts, lengths=torch.tensor([50, 31]))  # [2, 50, 64]
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, *, causal=True,
                 decay_fn="abs", time_unit=1.0, num_buckets=0, bucketing="log",
                 bucket_scale=HSTU_BUCKET_SCALE, window=None, backend="auto", device=None,
                 dtype=None):
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads "
                             f"({num_heads})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if num_buckets < 0:
            raise ValueError(f"num_buckets must be >= 0, got {num_buckets}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.causal, self.decay_fn = dropout, causal, decay_fn
        self.time_unit, self.bucketing, self.bucket_scale = time_unit, bucketing, bucket_scale
        self.window, self.backend = window, backend
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.decay = nn.Parameter(torch.empty(num_heads, **factory))
        if num_buckets > 0:
            self.time_bias = nn.Parameter(torch.empty(num_heads, num_buckets, **factory))
        else:
            self.register_parameter("time_bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform packed projection and zero biases (as nn.MultiheadAttention), decay
        rates geometric from 1 to 1/64 across heads, zero time-bias table."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        self.out_proj.reset_parameters()
        for layer in (self.in_proj, self.out_proj):
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        first, last = INITIAL_RATES
        steps = max(self.num_heads - 1, 1)
        rates = [first * (last / first) ** (h / steps) for h in range(self.num_heads)]
        with torch.no_grad():
            self.decay.copy_(torch.tensor([_inverse_softplus(r) for r in rates]))
            if self.time_bias is not None:
                self.time_bias.zero_()

    def forward(self, x, timestamps, lengths=None, *, cu_seqlens=None, max_seqlen=None):
        """x [B, L, E] with timestamps [B, L] (int64 s or float64) and optional lengths [B];
        or jagged x [T, E] with timestamps [T], cu_seqlens [B + 1] and max_seqlen (required
        under torch.compile) -> like x. Outputs at padded positions are ``out_proj.bias``."""
        heads, head_dim = self.num_heads, self.head_dim
        if x.dim() not in (2, 3) or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must have shape [B, L, {self.embed_dim}] or "
                             f"[T, {self.embed_dim}] (jagged), got {tuple(x.shape)}")
        packed = self.in_proj(x)
        if x.dim() == 3:  # [B, L, 3E] -> three [B, H, L, D]
            q, k, v = packed.view(*x.shape[:2], 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        else:  # [T, 3E] -> three [T, H, D]
            q, k, v = packed.view(x.shape[0], 3, heads, head_dim).unbind(1)
        out = ops.time_decay_attention(
            q, k, v, timestamps, self.decay, causal=self.causal, lengths=lengths,
            cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, decay_fn=self.decay_fn,
            time_unit=self.time_unit, time_bias=self.time_bias, bucketing=self.bucketing,
            bucket_scale=self.bucket_scale, window=self.window, backend=self.backend)
        out = out.transpose(1, 2).reshape(x.shape) if x.dim() == 3 else out.reshape(x.shape)
        return self.out_proj(F.dropout(out, self.dropout, self.training))

    def extra_repr(self):
        buckets = self.time_bias.shape[1] if self.time_bias is not None else 0
        return (f"{self.embed_dim}, {self.num_heads}, dropout={self.dropout}, "
                f"causal={self.causal}, decay_fn={self.decay_fn!r}, time_unit={self.time_unit}, "
                f"num_buckets={buckets}, window={self.window}, backend={self.backend!r}")


class TimeDecayTransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attention(norm(x))`` then ``x + ffn(norm(x))``, with
    :class:`TimeDecayMultiheadAttention` as the attention.

    Args:
        embed_dim, num_heads: as the attention.
        dim_feedforward: hidden size of the feed-forward network (4 * embed_dim by default).
        dropout: on both residual branches and inside the feed-forward network.
        activation: "gelu" or "relu".
        layer_norm_eps: epsilon of the two LayerNorms.
        **attention: keyword arguments of :class:`TimeDecayMultiheadAttention` (causal,
            decay_fn, time_unit, num_buckets, window, backend, ...).

    Example::

        block = stseq.nn.TimeDecayTransformerBlock(64, 4, time_unit=86400.0)
        ts = 1_700_000_000 + torch.randint(0, 86400, (2, 50)).cumsum(1)
        out = block(torch.randn(2, 50, 64), ts)  # [2, 50, 64]
    """

    def __init__(self, embed_dim, num_heads, dim_feedforward=None, dropout=0.1,
                 activation="gelu", layer_norm_eps=1e-5, *, device=None, dtype=None,
                 **attention):
        super().__init__()
        if activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {activation!r}")
        factory = {"device": device, "dtype": dtype}
        hidden = dim_feedforward or 4 * embed_dim
        self.attention_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, **factory)
        self.attention = TimeDecayMultiheadAttention(embed_dim, num_heads, **attention, **factory)
        self.feedforward_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, **factory)
        self.feedforward = nn.Sequential(
            nn.Linear(embed_dim, hidden, **factory),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim, **factory))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, timestamps, lengths=None, *, cu_seqlens=None, max_seqlen=None):
        """x [B, L, E] or jagged [T, E], as :meth:`TimeDecayMultiheadAttention.forward`."""
        attended = self.attention(self.attention_norm(x), timestamps, lengths,
                                  cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feedforward(self.feedforward_norm(x)))
