"""``TimeDecayMultiheadAttention`` (shaped like ``torch.nn.MultiheadAttention``, plus timestamps)
and the pre-norm ``TimeDecayTransformerBlock`` built on it."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from stseq import ops
from stseq.backends import check_backend
from stseq.ops.checks import check_choice, check_int, check_positive
from stseq.ops.attention import (BUCKETINGS, DECAY_FNS, HEAD_DIMS, HSTU_BUCKET_SCALE,
                                 time_decay_attention_weights)

# Decay rates (per time_unit) of the first and last head at initialisation.
INITIAL_RATES = (1.0, 1.0 / 64)
# torch.nn.MultiheadAttention's names of the packed projection, read by load_state_dict.
TORCH_NAMES = {"in_proj_weight": "in_proj.weight", "in_proj_bias": "in_proj.bias"}


def _inverse_softplus(rate):
    return math.log(math.expm1(rate))


def _check_options(embed_dim, num_heads, dropout, add_bias_kv, add_zero_attn, kdim, vdim,
                   decay_fn, time_unit, num_buckets, bucketing, bucket_scale, window, backend):
    """The constructor's options, each named in its error."""
    check_int(embed_dim, "embed_dim", 1)
    check_int(num_heads, "num_heads", 1)
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads})")
    if not HEAD_DIMS[0] <= embed_dim // num_heads <= HEAD_DIMS[1]:
        fits = [h for h in range(1, embed_dim + 1)
                if embed_dim % h == 0 and HEAD_DIMS[0] <= embed_dim // h <= HEAD_DIMS[1]]
        raise ValueError(f"the head size embed_dim / num_heads = {embed_dim} / {num_heads} = "
                         f"{embed_dim // num_heads} must be in [{HEAD_DIMS[0]}, {HEAD_DIMS[1]}] "
                         f"(the kernel's range); num_heads in {fits} fit embed_dim {embed_dim}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not (
            0.0 <= dropout < 1.0):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    if add_bias_kv or add_zero_attn:
        raise ValueError("add_bias_kv and add_zero_attn are not supported: an extra key would "
                         "have no timestamp")
    for name, dim in (("kdim", kdim), ("vdim", vdim)):
        if dim not in (None, embed_dim):
            raise ValueError(f"{name} must be None or embed_dim ({embed_dim}): the layer is "
                             f"self-attention over one sequence of events, got {dim!r}")
    check_choice(decay_fn, "decay_fn", DECAY_FNS)
    check_positive(time_unit, "time_unit", "seconds per unit of gap")
    check_int(num_buckets, "num_buckets", 0)
    check_choice(bucketing, "bucketing", BUCKETINGS)
    check_positive(bucket_scale, "bucket_scale")
    if window is not None:
        check_int(window, "window", 0)
    check_backend(backend)


def _padding_lengths(key_padding_mask, batch, seq_len):
    """[B] lengths of a [B, L] bool key_padding_mask (True at padding) that marks a suffix of
    each row (checked eagerly, trusted while compiling)."""
    if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
        raise TypeError("key_padding_mask must be a bool tensor [B, L] (True at padding), got "
                        f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}")
    if tuple(key_padding_mask.shape) != (batch, seq_len):
        raise ValueError(f"key_padding_mask must have shape [B, L] = [{batch}, {seq_len}], got "
                         f"{tuple(key_padding_mask.shape)}")
    lengths = seq_len - key_padding_mask.sum(1)
    if not torch.compiler.is_compiling():
        suffix = torch.arange(seq_len, device=lengths.device) >= lengths[:, None]
        if not torch.equal(key_padding_mask, suffix):
            row = int(torch.nonzero((key_padding_mask != suffix).any(1))[0])
            raise ValueError("key_padding_mask must mark a suffix of each row (right padding; "
                             f"the kernel takes lengths): row {row} has padding before an event")
    return lengths


def _is_causal_mask(attn_mask, seq_len):
    """Whether ``attn_mask`` is None (False) or the causal mask (True); any other mask raises.
    A [L, L] or [B * H, L, L] mask, bool (True: not attended) or float (-inf: not attended);
    checked eagerly, trusted while compiling."""
    if attn_mask is None:
        return False
    if attn_mask.dim() not in (2, 3) or tuple(attn_mask.shape[-2:]) != (seq_len, seq_len):
        raise ValueError(f"attn_mask must have shape [L, L] or [B * H, L, L] with L = {seq_len}, "
                         f"got {tuple(attn_mask.shape)}")
    if torch.compiler.is_compiling():
        return True
    above = torch.ones(seq_len, seq_len, dtype=torch.bool, device=attn_mask.device).triu(1)
    if attn_mask.dtype == torch.bool:
        causal = torch.equal(attn_mask, above.expand_as(attn_mask))
    else:
        causal = torch.equal(attn_mask.isneginf(), above.expand_as(attn_mask)) and bool(
            (attn_mask.masked_fill(above, 0.0) == 0).all())
    if not causal:
        raise ValueError("attn_mask must be None or the causal mask (True or -inf above the "
                         "diagonal): the kernel computes its masks from causality, lengths and "
                         "a window (see window=)")
    return True


class TimeDecayMultiheadAttention(nn.Module):
    """Multi-head self-attention over timestamped events whose scores decay with the time
    between events: per head h, ``- softplus(decay[h]) * phi(|t_i - t_j| / time_unit)`` is added
    to each score, computed inside the kernel (see :func:`stseq.ops.time_decay_attention`).

    Shaped like :class:`torch.nn.MultiheadAttention` used for self-attention: the same
    constructor arguments, the same call ``(query, key, value, key_padding_mask, need_weights,
    attn_mask, average_attn_weights, is_causal)`` returning ``(output, weights)``, plus the
    keyword ``timestamps`` [B, L]; ``load_state_dict(mha.state_dict(), strict=False)`` takes its
    projections (``decay`` and ``time_bias`` keep theirs). What differs, because the kernel
    computes its masks from lengths, causality and a window:

    - query, key and value describe one sequence of events (same shape; their projections may
      differ): kdim/vdim other than embed_dim, add_bias_kv and add_zero_attn are refused;
    - attn_mask may only be the causal mask (or pass is_causal=True, or causal=True at
      construction); key_padding_mask may only mark a suffix of each row (right padding);
    - outputs at padded queries are ``out_proj.bias`` (torch attends from them too);
    - dropout drops the attention output before ``out_proj``, not single weights;
    - weights (need_weights=True, torch's default) come from a separate materialised
      [B, H, L, L] computation: pass need_weights=False when training;
    - unbatched input (L, E) is refused: add a batch dimension.

    ``decay`` [H] is learnable; at initialisation the heads' rates are spaced geometrically from
    1 to 1/64 per ``time_unit``, so that heads start at different time scales. With
    ``num_buckets > 0`` a learnable HSTU-style table ``time_bias`` [H, NB] over bucketed gaps is
    added too (zeros at initialisation).

    Args:
        embed_dim: E; num_heads: H, with E / H in [16, 128].
        dropout: dropout on the attention output before ``out_proj``.
        bias: biases of the projections.
        batch_first: inputs [B, L, E] (else [L, B, E], as torch).
        causal: always attend only to earlier (and simultaneous-position) events.
        decay_fn: "abs", "log1p" or "sqrt"; time_unit: seconds per unit of gap.
        num_buckets, bucketing, bucket_scale: the bucketed time-bias table (0: none).
        window: attend only to keys at most this many positions away.
        backend: "auto", "triton" or "reference".

    Example::

        attention = stseq.nn.TimeDecayMultiheadAttention(64, 4, batch_first=True,
                                                         time_unit=3600.0)
        x = torch.randn(2, 50, 64)
        ts = 1_700_000_000 + torch.randint(0, 3600, (2, 50)).cumsum(1)
        padding = torch.arange(50) >= torch.tensor([[50], [31]])  # [B, L], True at padding
        out, _ = attention(x, x, x, key_padding_mask=padding, need_weights=False,
                           is_causal=True, timestamps=ts)          # [2, 50, 64]
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None, *, causal=False, decay_fn="abs", time_unit=1.0, num_buckets=0,
                 bucketing="log", bucket_scale=HSTU_BUCKET_SCALE, window=None, backend="auto"):
        super().__init__()
        _check_options(embed_dim, num_heads, dropout, add_bias_kv, add_zero_attn, kdim, vdim,
                       decay_fn, time_unit, num_buckets, bucketing, bucket_scale, window, backend)
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout, self.batch_first, self.causal = dropout, batch_first, causal
        self.decay_fn, self.time_unit = decay_fn, time_unit
        self.bucketing, self.bucket_scale = bucketing, bucket_scale
        self.window, self.backend = window, backend
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.decay = nn.Parameter(torch.empty(num_heads, **factory))
        if num_buckets > 0:
            self.time_bias = nn.Parameter(torch.empty(num_heads, num_buckets, **factory))
        else:
            self.register_parameter("time_bias", None)
        self.reset_parameters()

    @property
    def in_proj_weight(self):
        """[3E, E], torch.nn.MultiheadAttention's name of ``in_proj.weight``."""
        return self.in_proj.weight

    @property
    def in_proj_bias(self):
        """[3E] or None, torch.nn.MultiheadAttention's name of ``in_proj.bias``."""
        return self.in_proj.bias

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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for torch_name, name in TORCH_NAMES.items():  # a torch.nn.MultiheadAttention's
            if prefix + torch_name in state_dict:
                state_dict[prefix + name] = state_dict.pop(prefix + torch_name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False, *, timestamps,
                lengths=None, cu_seqlens=None, max_seqlen=None):
        """query, key, value [B, L, E] (batch_first) or [L, B, E]: one sequence of events per
        row, at timestamps [B, L] (int64 s or float64); key_padding_mask [B, L] bool (True at
        padding, a suffix of each row) or lengths [B]. Jagged: [T, E] each, timestamps [T],
        cu_seqlens [B + 1] and max_seqlen (required under torch.compile).

        Returns (output like query, weights): weights [B, L, L] averaged over heads (or
        [B, H, L, L]) when need_weights, else None."""
        jagged = cu_seqlens is not None
        same = key is query and value is query
        query, key, value = self._batch_major(query, key, value, jagged)
        if key_padding_mask is not None:
            if lengths is not None or jagged:
                raise ValueError("pass key_padding_mask, lengths or cu_seqlens, not two of them")
            lengths = _padding_lengths(key_padding_mask, *query.shape[:2])
        causal = _is_causal_mask(attn_mask, max_seqlen if jagged else query.shape[1])
        options = dict(causal=bool(self.causal or is_causal or causal),
                       decay_fn=self.decay_fn, time_unit=self.time_unit,
                       time_bias=self.time_bias, bucketing=self.bucketing,
                       bucket_scale=self.bucket_scale, window=self.window)
        q, k, v = self._project(query, key, value, same)
        out = ops.time_decay_attention(q, k, v, timestamps, self.decay, lengths=lengths,
                                       cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                                       backend=self.backend, **options)
        out = out.reshape(query.shape) if jagged else out.transpose(1, 2).reshape(query.shape)
        out = self.out_proj(F.dropout(out, self.dropout, self.training))
        weights = None
        if need_weights:
            if jagged:
                raise ValueError("need_weights=True takes the padded layout; pass "
                                 "need_weights=False with cu_seqlens")
            weights = time_decay_attention_weights(q, k, timestamps, self.decay,
                                                   lengths=lengths, **options)
            weights = weights.mean(1) if average_attn_weights else weights
        return (out if self.batch_first or jagged else out.transpose(0, 1)), weights

    def _batch_major(self, query, key, value, jagged):
        """query, key, value as [B, L, E] (or jagged [T, E]) after checking their shapes."""
        layout = ("[T, E] (jagged, with cu_seqlens)" if jagged
                  else "[B, L, E]" if self.batch_first else "[L, B, E]")
        for name, x in (("query", query), ("key", key), ("value", value)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor {layout}, got "
                                f"{type(x).__name__}")
            if x.dim() == 2 and not jagged:
                raise ValueError(f"unbatched {name} {tuple(x.shape)} is not supported: add a "
                                 f"batch dimension ({name}.unsqueeze("
                                 f"{0 if self.batch_first else 1})), or pass cu_seqlens for the "
                                 f"jagged layout [T, E]")
            if x.dim() != (2 if jagged else 3) or x.shape[-1] != self.embed_dim:
                raise ValueError(f"{name} must have shape {layout} with E = embed_dim = "
                                 f"{self.embed_dim}, got {tuple(x.shape)}")
            if x.shape != query.shape:
                raise ValueError(f"{name} must have the shape of query {tuple(query.shape)}: the "
                                 f"layer attends within one sequence of events, got "
                                 f"{tuple(x.shape)}")
        if jagged or self.batch_first:
            return query, key, value
        return query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)

    def _project(self, query, key, value, same):
        """The heads of q, k, v: three [B, H, L, D] (or jagged [T, H, D]); one packed product
        when query, key and value are one tensor."""
        heads = (self.num_heads, self.head_dim)
        if same:
            q, k, v = self.in_proj(query).unflatten(-1, (3, *heads)).unbind(-3)
        else:
            biases = self.in_proj.bias.chunk(3) if self.in_proj.bias is not None else [None] * 3
            q, k, v = (F.linear(x, weight, b).unflatten(-1, heads) for x, weight, b in
                       zip((query, key, value), self.in_proj.weight.chunk(3), biases))
        if query.dim() == 2:
            return q, k, v
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def extra_repr(self):
        buckets = self.time_bias.shape[1] if self.time_bias is not None else 0
        return (f"{self.embed_dim}, {self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}, causal={self.causal}, "
                f"decay_fn={self.decay_fn!r}, time_unit={self.time_unit}, "
                f"num_buckets={buckets}, window={self.window}, backend={self.backend!r}")


class TimeDecayTransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + attention(norm(x))`` then ``x + ffn(norm(x))``, with
    :class:`TimeDecayMultiheadAttention` (batch first, causal unless ``causal=False``) as the
    attention.

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
        check_choice(activation, "activation", ("gelu", "relu"))
        factory = {"device": device, "dtype": dtype}
        hidden = dim_feedforward or 4 * embed_dim
        attention.setdefault("causal", True)
        self.attention_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, **factory)
        self.attention = TimeDecayMultiheadAttention(embed_dim, num_heads, batch_first=True,
                                                     **attention, **factory)
        self.feedforward_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps, **factory)
        self.feedforward = nn.Sequential(
            nn.Linear(embed_dim, hidden, **factory),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim, **factory))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, timestamps, lengths=None, *, cu_seqlens=None, max_seqlen=None):
        """x [B, L, E] with timestamps [B, L] and lengths [B], or jagged x [T, E] with
        timestamps [T], cu_seqlens [B + 1] and max_seqlen -> like x."""
        normed = self.attention_norm(x)
        attended, _ = self.attention(normed, normed, normed, need_weights=False,
                                     timestamps=timestamps, lengths=lengths,
                                     cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feedforward(self.feedforward_norm(x)))
