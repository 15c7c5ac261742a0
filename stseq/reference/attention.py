"""The float64 oracle of attention with a time-decay bias (the op: ``stseq.ops.attention``).

:func:`time_decay_attention` materialises the [B, H, L, L] bias from float64 time gaps and lets
autograd differentiate it. Readable, O(L^2) memory; every kernel and the chunked CPU path
(``stseq.cpu.attention``) are tested against it. Imports only torch.

Scores of head h between query i and key j (natural-log units)::

    s_ij = scale * q_i . k_j - rate[h] * phi(gap_ij) + time_bias[h, bucket(gap_ij)]
    gap_ij = |t_i - t_j| / time_unit

with phi one of the op's ``DECAY_FNS`` and ``rate = softplus(decay)``; keys past a sequence's
end, after the query (``causal``) or more than ``window`` positions away are masked out.
"""

import torch
import torch.nn.functional as F

# HSTU's relative time buckets, floor(ln(gap) / 0.301): the op's default ``bucket_scale``
# (``stseq.ops.attention.HSTU_BUCKET_SCALE``; reference/ imports only torch, so the default is
# spelled here too, and tests/ops/test_time_decay_attention.py checks that they agree).
HSTU_BUCKET_SCALE = 1 / 0.301


def decay_phi(gap, decay_fn):
    """phi(gap) of the decay term: ``gap`` ("abs"), ``log1p(gap)`` or ``sqrt(gap)``; gap >= 0."""
    if decay_fn == "abs":
        return gap
    return torch.log1p(gap) if decay_fn == "log1p" else torch.sqrt(gap)


def time_bucket(gap, num_buckets, bucketing, bucket_scale):
    """Bucket of a gap >= 0: ``min(NB - 1, floor(bucket_scale * f(gap)))``, f = log1p or sqrt;
    NaN (only from a direct call of the op with NaN times) goes to the last bucket, as in the
    Triton kernels."""
    value = torch.log1p(gap) if bucketing == "log" else torch.sqrt(gap)
    position = (bucket_scale * value).floor()
    return torch.where(position < num_buckets - 1, position, num_buckets - 1).clamp(min=0).long()


def _allowed(query_positions, key_positions, lengths, causal, window):
    """[B, Lq, Lk] bool: which keys each query attends to (both inside the row's length, key not
    after the query when causal, at most ``window`` positions apart)."""
    query, key = query_positions[:, None], key_positions[None, :]
    allowed = (query[None] < lengths[:, None, None]) & (key[None] < lengths[:, None, None])
    if causal:
        allowed = allowed & (key <= query)
    if window is not None:
        allowed = allowed & ((query - key).abs() <= window)
    return allowed


def pad_jagged(values, cu_seqlens, max_seqlen):
    """[T, ...] tokens of B sequences -> ([B, max_seqlen, ...] zero-padded, valid [B, max_seqlen]).

    Example::

        padded, valid = pad_jagged(torch.arange(5.0), torch.tensor([0, 2, 5]), 3)
        # padded = [[0, 1, 0], [2, 3, 4]]; padded[valid] gives the tokens back
    """
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    valid = torch.arange(max_seqlen, device=values.device) < lengths[:, None]  # [B, L]
    padded = values.new_zeros(valid.shape + values.shape[1:])
    padded[valid] = values
    return padded, valid


def time_decay_attention(q, k, v, timestamps, decay, *, causal=True, lengths=None, cu_seqlens=None,
                         max_seqlen=None, scale=None, decay_fn="abs", time_unit=1.0,
                         time_bias=None, bucketing="log", bucket_scale=HSTU_BUCKET_SCALE,
                         window=None):
    """The oracle: attention with the time-decay bias materialised as [B, H, L, L].

    Same signature and semantics as :func:`stseq.ops.time_decay_attention` (arguments already
    checked there). Gaps are taken in the timestamps' own dtype (exact for int64) and divided
    in float64; padded queries give zeros. Masked pairs (causal, window, padding) never enter
    the arithmetic: both factors of every product are masked before they meet (products over
    [B, H, L, L, D]), so a NaN or inf in a key or value that a query cannot see reaches neither
    that query's output nor any gradient.

    Example::

        q = k = v = torch.randn(1, 2, 5, 16)
        out = time_decay_attention(q, k, v, torch.tensor([[0, 60, 120, 3600, 7200]]),
                                   torch.zeros(2), time_unit=3600.0)  # [1, 2, 5, 16]
    """
    if cu_seqlens is not None:  # jagged [T, H, D]: pad, attend, drop the padding
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if len(cu_seqlens) > 1 else 0

        def pad(x):
            return pad_jagged(x, cu_seqlens, max_seqlen)[0]

        out = time_decay_attention(
            pad(q).transpose(1, 2), pad(k).transpose(1, 2), pad(v).transpose(1, 2),
            pad(timestamps), decay, causal=causal, lengths=cu_seqlens[1:] - cu_seqlens[:-1],
            scale=scale, decay_fn=decay_fn, time_unit=time_unit, time_bias=time_bias,
            bucketing=bucketing, bucket_scale=bucket_scale, window=window)
        return out.transpose(1, 2)[pad_jagged(timestamps, cu_seqlens, max_seqlen)[1]]
    allowed, bias, scale = _pairs(q, timestamps, decay, causal, lengths, scale, decay_fn,
                                  time_unit, time_bias, bucketing, bucket_scale, window)
    scores = scale * _masked_pair_product(q[:, :, :, None], k[:, :, None], allowed) + bias
    weights = _softmax_over_allowed(scores, allowed)  # [B, H, L, L]
    return _masked_pair_product(weights[..., None], v[:, :, None], allowed, reduce=-2)


def attention_weights(q, k, timestamps, decay, *, causal=True, lengths=None, scale=None,
                      decay_fn="abs", time_unit=1.0, time_bias=None, bucketing="log",
                      bucket_scale=HSTU_BUCKET_SCALE, window=None):
    """The attention probabilities [B, H, L, L] of the padded layout (q, k [B, H, L, D]; other
    arguments as :func:`time_decay_attention`), materialised with one matrix product: 0 at
    masked pairs and in the rows of padded queries.

    Example::

        q = k = torch.randn(1, 2, 5, 16)
        weights = attention_weights(q, k, torch.tensor([[0, 60, 120, 3600, 7200]]),
                                    torch.zeros(2), time_unit=3600.0)  # [1, 2, 5, 5]
    """
    allowed, bias, scale = _pairs(q, timestamps, decay, causal, lengths, scale, decay_fn,
                                  time_unit, time_bias, bucketing, bucket_scale, window)
    return _softmax_over_allowed(scale * q @ k.transpose(-1, -2) + bias, allowed)


def _pairs(q, timestamps, decay, causal, lengths, scale, decay_fn, time_unit, time_bias,
           bucketing, bucket_scale, window):
    """(allowed [B, 1, L, L] bool, bias [B, H, L, L] or a 0 scalar, scale) of a padded batch."""
    batch, heads, seq_len, head_dim = q.shape
    scale = head_dim ** -0.5 if scale is None else scale
    if lengths is None:
        lengths = torch.full((batch,), seq_len, device=q.device)
    position = torch.arange(seq_len, device=q.device)
    allowed = _allowed(position, position, lengths, causal, window)[:, None]  # [B, 1, L, L]
    gap = (timestamps[:, :, None] - timestamps[:, None, :]).abs().double() / time_unit  # [B, L, L]
    bias = torch.zeros((), dtype=q.dtype, device=q.device)
    if decay is not None:
        rate = F.softplus(decay).to(q.dtype)  # [H]
        bias = bias - rate[:, None, None] * decay_phi(gap, decay_fn)[:, None].to(q.dtype)
    if time_bias is not None:
        bucket = time_bucket(gap, time_bias.shape[1], bucketing, bucket_scale)  # [B, L, L]
        bias = bias + time_bias[:, bucket].transpose(0, 1).to(q.dtype)  # [B, H, L, L]
    return allowed, bias, scale


def _softmax_over_allowed(scores, allowed):
    """Softmax of [B, H, L, L] scores over the allowed keys; rows with none (padded queries)
    are 0."""
    has_key = allowed.any(-1, keepdim=True)
    scores = torch.where(allowed, scores, float("-inf"))
    weights = torch.softmax(torch.where(has_key, scores, 0.0), -1)
    return torch.where(allowed, weights, 0.0)


def _masked_pair_product(a, b, allowed, reduce=-1):
    """sum over ``reduce`` of a * b ([B, H, L, L, D] by broadcasting) with both factors zeroed
    at the pairs outside ``allowed`` [B, 1, L, L] before they meet: neither the product nor its
    gradients see a masked value."""
    pair = allowed[..., None]
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    return (torch.where(pair, a, zero) * torch.where(pair, b, zero)).sum(reduce)
