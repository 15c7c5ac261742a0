"""Reference attention with a time-decay bias (see ``stseq.ops.time_decay_attention``).

Two pure-PyTorch implementations:

- :func:`time_decay_attention`, the oracle: materialises the [B, H, L, L] bias from float64 time
  gaps and lets autograd differentiate it. Readable, O(L^2) memory; every kernel is tested
  against it.
- :func:`time_decay_attention_forward` / :func:`time_decay_attention_backward`, the path the op
  runs on ``backend="reference"`` (the CPU default): the same math in steps of a few rows and a
  chunk of queries so that no step holds more than ``TILE_ELEMENTS`` scores, with the log-sum-exp
  saved by the forward and the probabilities recomputed by the backward (as the Triton kernels
  do). Memory stays O(L) per sequence plus one tile.

Scores of head h between query i and key j (natural-log units)::

    s_ij = scale * q_i . k_j - rate[h] * phi(gap_ij) + time_bias[h, bucket(gap_ij)]
    gap_ij = |t_i - t_j| / time_unit

with phi one of ``DECAY_FNS`` and ``rate = softplus(decay)``; keys past a sequence's end, after
the query (``causal``) or more than ``window`` positions away are masked out.
"""

import torch
import torch.nn.functional as F

DECAY_FNS = ("abs", "log1p", "sqrt")
BUCKETINGS = ("log", "sqrt")
# HSTU's relative time buckets: floor(ln(gap) / 0.301).
HSTU_BUCKET_SCALE = 1 / 0.301
# Scores held by one step of the chunked path ([rows, H, queries, keys]): bounds its memory
# (16 MiB per buffer in float32) while keeping the steps, each a few dozen small ops, few.
TILE_ELEMENTS = 1 << 22
# Queries per step of the causal or windowed chunked path.
QUERY_CHUNK = 64


def decay_phi(gap, decay_fn):
    """phi(gap) of the decay term: ``gap`` ("abs"), ``log1p(gap)`` or ``sqrt(gap)``; gap >= 0."""
    if decay_fn == "abs":
        return gap
    return torch.log1p(gap) if decay_fn == "log1p" else torch.sqrt(gap)


def time_bucket(gap, num_buckets, bucketing, bucket_scale):
    """Bucket of a gap >= 0: ``min(NB - 1, floor(bucket_scale * f(gap)))``, f = log1p or sqrt."""
    value = torch.log1p(gap) if bucketing == "log" else torch.sqrt(gap)
    return (bucket_scale * value).floor().clamp(max=num_buckets - 1).long()


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
    in float64; padded queries give zeros.

    Example::

        q = k = v = torch.randn(1, 2, 5, 16)
        out = time_decay_attention(q, k, v, torch.tensor([[0, 60, 120, 3600, 7200]]),
                                   torch.zeros(2), time_unit=3600.0)  # [1, 2, 5, 16]
    """
    if cu_seqlens is not None:  # jagged [T, H, D]: pad, attend, drop the padding
        def pad(x):
            return pad_jagged(x, cu_seqlens, max_seqlen)[0]

        out = time_decay_attention(
            pad(q).transpose(1, 2), pad(k).transpose(1, 2), pad(v).transpose(1, 2),
            pad(timestamps), decay, causal=causal, lengths=cu_seqlens[1:] - cu_seqlens[:-1],
            scale=scale, decay_fn=decay_fn, time_unit=time_unit, time_bias=time_bias,
            bucketing=bucketing, bucket_scale=bucket_scale, window=window)
        return out.transpose(1, 2)[pad_jagged(timestamps, cu_seqlens, max_seqlen)[1]]
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
    scores = scale * q @ k.transpose(-1, -2) + bias  # [B, H, L, L]
    has_key = allowed.any(-1, keepdim=True)  # padded queries attend to nothing
    scores = torch.where(allowed, scores, float("-inf"))
    scores = torch.where(has_key, scores, 0.0)
    weights = torch.where(allowed, torch.softmax(scores, -1), 0.0)
    return weights @ v


# ---- the chunked path ----------------------------------------------------------------------


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _steps(batch, heads, seq_len, lengths, causal, window):
    """(b0, b1, q0, q1, k0, k1): rows, queries and the keys they reach, in steps of about
    TILE_ELEMENTS scores; queries in chunks of QUERY_CHUNK when causal or windowed (so the keys
    no query of the chunk reaches are skipped), rows past every length skipped."""
    chunk = max(1, min(seq_len, QUERY_CHUNK) if causal or window is not None else seq_len)
    rows = max(1, min(batch, TILE_ELEMENTS // max(1, heads * chunk * seq_len)))
    for b0 in range(0, batch, rows):
        b1 = min(batch, b0 + rows)
        longest = max(lengths[b0:b1])
        for q0 in range(0, longest, chunk):
            q1 = min(longest, q0 + chunk)
            k0 = 0 if window is None else max(0, q0 - window)
            k1 = q1 if causal else longest
            if window is not None:
                k1 = min(k1, q1 + window)
            yield b0, b1, q0, q1, k0, k1


class _Bias:
    """The bias of the chunked path: times, masks and parameters prepared once per call, then
    added to the scores step by step. Padded keys get -inf; padded queries are left to the
    caller (their rows are zeroed once at the end instead of masked in every step)."""

    def __init__(self, time_hi, time_lo, lengths, rate, time_bias, causal, decay_fn, bucketing,
                 bucket_scale, window, dtype):
        self.hi, self.lo = time_hi.to(dtype), time_lo.to(dtype)  # [B, L]
        self.key_mask = None  # [B, L]: 0 or -inf
        if lengths is not None:
            positions = torch.arange(time_hi.shape[1], device=time_hi.device)
            self.key_mask = torch.where(positions < lengths[:, None], 0.0, float("-inf")).to(
                dtype)
        self.rate = rate.to(dtype).view(1, -1, 1, 1) if rate is not None else None
        self.table = time_bias.to(dtype) if time_bias is not None else None
        self.causal, self.window, self.decay_fn = causal, window, decay_fn
        self.bucketing, self.bucket_scale = bucketing, bucket_scale
        self.position_masks = {}

    def _position_mask(self, q0, q1, k0, k1):
        """[Q, K] 0 or -inf from causality and the window (None: nothing masked), cached."""
        if not self.causal and self.window is None:
            return None
        if (q0, q1, k0, k1) not in self.position_masks:
            device = self.hi.device
            query = torch.arange(q0, q1, device=device)[:, None]
            key = torch.arange(k0, k1, device=device)[None, :]
            allowed = key <= query if self.causal else torch.ones((), dtype=torch.bool,
                                                                   device=device)
            if self.window is not None:
                allowed = allowed & ((query - key).abs() <= self.window)
            self.position_masks[q0, q1, k0, k1] = torch.where(allowed, 0.0, float("-inf")).to(
                self.hi.dtype)
        return self.position_masks[q0, q1, k0, k1]

    def add(self, scores, step):
        """Add the bias of one step to its scores [b, H, Q, K] in place; returns
        (phi [b, Q, K] or None, bucket [b, Q, K] or None)."""
        b0, b1, q0, q1, k0, k1 = step
        hi, lo = self.hi[b0:b1], self.lo[b0:b1]
        # Differences of the (hi, lo) split: exact to the rounding of the gap itself.
        gap = ((hi[:, q0:q1, None] - hi[:, None, k0:k1])
               + (lo[:, q0:q1, None] - lo[:, None, k0:k1])).abs_()  # [b, Q, K]
        phi = bucket = None
        if self.rate is not None:
            phi = decay_phi(gap, self.decay_fn)
            scores.addcmul_(phi[:, None], self.rate, value=-1)
        if self.table is not None:
            bucket = time_bucket(gap, self.table.shape[1], self.bucketing, self.bucket_scale)
            scores += self.table[:, bucket].transpose(0, 1)
        position_mask = self._position_mask(q0, q1, k0, k1)
        if position_mask is not None:
            scores += position_mask
        if self.key_mask is not None:
            scores += self.key_mask[b0:b1, None, None, k0:k1]
        return phi, bucket


def _prepare(tensors, lengths, seq_len):
    """``tensors`` ([B, H, L, .]) in the compute dtype with positions past each row's length
    zeroed (padding never reaches a sum); the valid positions [B, 1, L, 1] (None without
    lengths) and lengths as a list."""
    dtype = _compute_dtype(tensors[0].dtype)
    tensors = [x.to(dtype).contiguous() for x in tensors]
    if lengths is None:
        return tensors, None, [seq_len] * tensors[0].shape[0]
    valid = (torch.arange(seq_len, device=lengths.device) < lengths[:, None])[:, None, :, None]
    return [torch.where(valid, x, 0.0) for x in tensors], valid, lengths.tolist()


def _with_column(x, column):
    """[N, R, D], [N, R] -> [N, R, D + 1]: one more column for a matrix product to add."""
    return torch.cat([x, column.unsqueeze(-1)], -1)


def _forward_padded(q, k, v, time_hi, time_lo, rate, time_bias, lengths, causal, scale, decay_fn,
                    bucketing, bucket_scale, window):
    batch, heads, seq_len, head_dim = q.shape
    (q_, k_, v_), valid, lengths_list = _prepare([q, k, v], lengths, seq_len)
    dtype = q_.dtype
    q_ = q_ * scale
    bias = _Bias(time_hi, time_lo, lengths, rate, time_bias, causal, decay_fn, bucketing,
                 bucket_scale, window, dtype)
    out = torch.zeros_like(q_)  # [B, H, L, D]
    lse = torch.zeros(batch, heads, seq_len, 1, dtype=dtype, device=q.device)
    for step in _steps(batch, heads, seq_len, lengths_list, causal, window):
        b0, b1, q0, q1, k0, k1 = step
        shape = ((b1 - b0) * heads, -1, head_dim)
        scores = torch.bmm(q_[b0:b1, :, q0:q1].reshape(shape),
                           k_[b0:b1, :, k0:k1].reshape(shape).transpose(1, 2))  # [b * H, Q, K]
        bias.add(scores.view(b1 - b0, heads, q1 - q0, k1 - k0), step)
        top = scores.amax(-1, keepdim=True)  # [b * H, Q, 1]; -inf (then NaN) on padding
        weights = scores.sub_(top).exp_()
        total = weights.sum(-1, keepdim=True)
        values = torch.bmm(weights, v_[b0:b1, :, k0:k1].reshape(shape))  # [b * H, Q, D]
        out[b0:b1, :, q0:q1] = (values / total).view(b1 - b0, heads, q1 - q0, head_dim)
        lse[b0:b1, :, q0:q1] = (top + total.log()).view(b1 - b0, heads, q1 - q0, 1)
    if valid is not None:  # padded queries (never masked in the steps) give 0
        out, lse = torch.where(valid, out, 0.0), torch.where(valid, lse, 0.0)
    return out.to(q.dtype), lse[..., 0]


def _backward_padded(grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias, lengths,
                     causal, scale, decay_fn, bucketing, bucket_scale, window):
    batch, heads, seq_len, head_dim = q.shape
    (q_, k_, v_, grad_, out_), valid, lengths_list = _prepare([q, k, v, grad, out], lengths,
                                                              seq_len)
    dtype = q_.dtype
    q_ = q_ * scale
    bias = _Bias(time_hi, time_lo, lengths, rate, time_bias, causal, decay_fn, bucketing,
                 bucket_scale, window, dtype)
    delta = (grad_ * out_).sum(-1)  # [B, H, L]: sum_j P_ij dP_ij
    lse = lse.to(dtype)
    if valid is not None:  # padded queries: lse = inf makes their probabilities 0
        lse = torch.where(valid[..., 0], lse, float("inf"))
    # Extra columns so that one product gives scale q.k - lse and another dP - delta.
    q_lse = _with_column(q_, -lse)  # [B, H, L, D + 1]
    grad_delta = _with_column(grad_, -delta)
    ones = torch.ones(batch, heads, seq_len, dtype=dtype, device=q.device)
    k_one, v_one = _with_column(k_, ones), _with_column(v_, ones)
    grad_q, grad_k, grad_v = (torch.zeros_like(q_) for _ in range(3))  # [B, H, L, D]
    grad_rate = torch.zeros(heads, dtype=dtype, device=q.device) if rate is not None else None
    grad_bias = torch.zeros_like(bias.table).view(-1) if time_bias is not None else None
    for step in _steps(batch, heads, seq_len, lengths_list, causal, window):
        b0, b1, q0, q1, k0, k1 = step
        shape, shape_one = ((b1 - b0) * heads, -1, head_dim), ((b1 - b0) * heads, -1, head_dim + 1)
        keys, grads = k_[b0:b1, :, k0:k1].reshape(shape), grad_[b0:b1, :, q0:q1].reshape(shape)
        weights = torch.bmm(q_lse[b0:b1, :, q0:q1].reshape(shape_one),
                            k_one[b0:b1, :, k0:k1].reshape(shape_one).transpose(1, 2))
        phi, bucket = bias.add(weights.view(b1 - b0, heads, q1 - q0, k1 - k0), step)
        weights = weights.exp_()  # P [b * H, Q, K]
        grad_v[b0:b1, :, k0:k1] += torch.bmm(weights.transpose(1, 2), grads).view(
            b1 - b0, heads, k1 - k0, head_dim)
        grad_scores = torch.bmm(grad_delta[b0:b1, :, q0:q1].reshape(shape_one),
                                v_one[b0:b1, :, k0:k1].reshape(shape_one).transpose(1, 2)
                                ).mul_(weights)  # P (dP - delta) [b * H, Q, K]
        grad_q[b0:b1, :, q0:q1] = torch.bmm(grad_scores, keys).view(
            b1 - b0, heads, q1 - q0, head_dim)
        grad_k[b0:b1, :, k0:k1] += torch.bmm(grad_scores.transpose(1, 2),
                                             q_[b0:b1, :, q0:q1].reshape(shape)).view(
            b1 - b0, heads, k1 - k0, head_dim)
        per_row = grad_scores.view(b1 - b0, heads, -1)  # [b, H, Q * K]
        if rate is not None:  # d s / d rate = -phi
            grad_rate -= torch.bmm(per_row, phi.view(b1 - b0, -1, 1)).sum(0).view(heads)
        if time_bias is not None:
            index = bucket[:, None] + bias.table.shape[1] * torch.arange(
                heads, device=q.device).view(1, -1, 1, 1)  # [b, H, Q, K]
            grad_bias.index_add_(0, index.reshape(-1), per_row.reshape(-1))
    return (grad_q.mul_(scale).to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype),
            grad_rate.to(rate.dtype) if rate is not None else None,
            grad_bias.view_as(time_bias).to(time_bias.dtype) if time_bias is not None else None)


def _padded_args(cu_seqlens, max_seqlen, tensors, times):
    """Jagged [T, H, .] tensors and [T] times -> [B, H, L, .] and [B, L], lengths, valid."""
    padded = [pad_jagged(x, cu_seqlens, max_seqlen)[0].transpose(1, 2) for x in tensors]
    padded_times = [pad_jagged(x, cu_seqlens, max_seqlen) for x in times]
    valid = padded_times[0][1]
    return padded, [t for t, _ in padded_times], cu_seqlens[1:] - cu_seqlens[:-1], valid


def time_decay_attention_forward(q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens,
                                 max_seqlen, causal, scale, decay_fn, bucketing, bucket_scale,
                                 window):
    """Chunked forward -> (out like q, lse [B, H, L] or [T, H]: the natural-log normaliser of
    each query's scores, 0 on padding).

    q, k, v: [B, H, L, D] (or [T, H, D] with cu_seqlens [B + 1] and max_seqlen); time_hi,
    time_lo: [B, L] (or [T]) float32 split of each token's time since its sequence's first event
    in ``time_unit``s (hi + lo); rate: [H] = softplus(decay) or None; time_bias: [H, NB] or None;
    window: int or None. The same contract as the Triton launcher
    ``stseq.triton.time_decay_attention.time_decay_attention_forward``.

    Example::

        q = k = v = torch.randn(1, 2, 4, 16)
        hi, lo = torch.tensor([[0.0, 1.0, 2.0, 5.0]]), torch.zeros(1, 4)
        out, lse = time_decay_attention_forward(q, k, v, hi, lo, torch.ones(2), None, None,
                                                None, None, True, 0.25, "abs", "log", 1.0, None)
    """
    if cu_seqlens is None:
        return _forward_padded(q, k, v, time_hi, time_lo, rate, time_bias, lengths, causal, scale,
                               decay_fn, bucketing, bucket_scale, window)
    padded, times, lengths, valid = _padded_args(cu_seqlens, max_seqlen, (q, k, v),
                                                 (time_hi, time_lo))
    out, lse = _forward_padded(*padded, *times, rate, time_bias, lengths, causal, scale, decay_fn,
                               bucketing, bucket_scale, window)
    return out.transpose(1, 2)[valid], lse.transpose(1, 2)[valid]  # [T, H, D], [T, H]


def time_decay_attention_backward(grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias,
                                  lengths, cu_seqlens, max_seqlen, causal, scale, decay_fn,
                                  bucketing, bucket_scale, window):
    """Chunked backward -> (grad_q, grad_k, grad_v, grad_rate [H] or None, grad_time_bias
    [H, NB] or None); arguments as :func:`time_decay_attention_forward` plus its outputs and
    the gradient of ``out``.

    Example::

        grads = time_decay_attention_backward(torch.ones_like(out), q, k, v, out, lse, hi, lo,
                                              torch.ones(2), None, None, None, None, True, 0.25,
                                              "abs", "log", 1.0, None)
    """
    if cu_seqlens is None:
        return _backward_padded(grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias,
                                lengths, causal, scale, decay_fn, bucketing, bucket_scale, window)
    padded, times, lengths, valid = _padded_args(cu_seqlens, max_seqlen,
                                                 (grad, q, k, v, out, lse), (time_hi, time_lo))
    grad_q, grad_k, grad_v, grad_rate, grad_bias = _backward_padded(
        *padded, *times, rate, time_bias, lengths, causal, scale, decay_fn, bucketing,
        bucket_scale, window)
    return (*(x.transpose(1, 2)[valid] for x in (grad_q, grad_k, grad_v)), grad_rate, grad_bias)
