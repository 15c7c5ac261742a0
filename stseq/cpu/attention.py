"""The chunked CPU path of attention with a time-decay bias: what ``stseq.ops.attention`` runs
on CPU tensors (``backend="auto"`` or ``"reference"``). Not an oracle: it is tested against the
float64 oracle ``stseq.reference.attention``.

:func:`time_decay_attention_forward` / :func:`time_decay_attention_backward` compute the
oracle's math with sequences sorted by length into groups of similar length (each padded only to
its longest), then in steps of a few rows and a chunk of queries with only the keys they reach,
so that no step holds more than about ``TILE_ELEMENTS`` scores; the backward recomputes the
probabilities (as the Triton kernels do). Memory stays O(L) per sequence plus one tile.

(Longer than a file should be: the group, tile and bias helpers share the workspace and the
exact-masking rules below, and split apart they would pass most of their state around.)
"""

import math

import torch
import torch.nn.functional as F

from stseq.reference.attention import time_bucket

# Scores held by one step ([rows, H, queries, keys]): bounds its memory (2 MiB per buffer in
# float32) and keeps its passes in cache, while keeping the steps, each a dozen or two small
# ops, few.
TILE_ELEMENTS = 1 << 19
# Queries per step of the causal or windowed path.
QUERY_CHUNK = 64
# Scores of padding a group of sequences may add before the path starts a new group (a group
# costs a few dozen ops more).
GROUP_PADDING = 1 << 16
# The bias of a masked score: finite, so that a padded query whose keys are all masked gets
# finite (unused) probabilities instead of NaN, and far enough below any real score that its
# probability is exactly 0 beside one that is not masked.
MASKED = -1e30
# Scores this large could defeat the additive MASKED; with them (or a NaN/inf in any input of a
# group) the path masks exactly: masked scores are set to -inf, not added to (so that a query
# whose every score is -inf gets NaN, as from torch's softmax), and products skip the masked
# pairs (see _exact_masking).
SCORE_BOUND = 1e25


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _length_groups(lengths, heads, causal):
    """Sequences (indices into ``lengths``) in groups of similar length, longest first: sorted by
    decreasing length, a group is closed when padding its members to its longest would pass
    GROUP_PADDING scores. Empty sequences are in no group.

    Example::

        _length_groups([3, 200, 190, 0], heads=4, causal=True)  # [[1, 2], [0]]
    """
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    groups, padding = [], 0
    for index in order:
        length = lengths[index]
        if length == 0:
            break
        if groups:
            longest = lengths[groups[-1][0]]
            padding += heads * (longest ** 2 - length ** 2) // (2 if causal else 1)
        if not groups or padding > GROUP_PADDING:
            groups.append([])
            padding = 0
        groups[-1].append(index)
    return groups


class _PaddedGroup:
    """Rows of a padded batch ([B, H, L, .] tensors, [B, L] times) cut to the longest of them.

    ``lengths``: the rows' lengths, decreasing; ``seq_len``: the first (Lg); ``valid``: [g, Lg]
    real positions, None when every row is Lg long; ``complete``: the group is the whole batch
    as it is (gathers return the inputs themselves and the results are the call's)."""

    def __init__(self, rows, lengths, seq_len, device):
        self.lengths = [lengths[row] for row in rows]
        self.seq_len = self.lengths[0]
        self.valid = _valid_positions(self.lengths, device)
        self.complete = (rows == list(range(len(lengths))) and self.seq_len == seq_len
                         and self.valid is None)
        self.rows = None if self.complete else torch.tensor(rows, device=device)

    def gather(self, x):
        """[B, H, L, ...] -> [g, H, Lg, ...] (a new tensor unless the group is complete)."""
        return x if self.complete else x[:, :, :self.seq_len].index_select(0, self.rows)

    def gather_times(self, times):
        """[B, L] -> [g, Lg]."""
        return times if self.complete else times[:, :self.seq_len].index_select(0, self.rows)

    def scatter(self, dest, x):
        """Write ``x`` [g, H, Lg, ...] into its rows of ``dest`` [B, H, L, ...]."""
        dest[:, :, :self.seq_len].index_copy_(0, self.rows, x)


class _JaggedGroup:
    """Sequences of a jagged batch ([T, H, .] tensors, [T] times) padded to the longest of them;
    attributes as :class:`_PaddedGroup` (``complete`` is always False)."""

    def __init__(self, sequences, offsets, lengths, device):
        self.lengths = [lengths[index] for index in sequences]
        self.seq_len = self.lengths[0]
        self.valid = _valid_positions(self.lengths, device)
        self.complete = False
        count = torch.tensor(self.lengths, device=device)[:, None]  # [g, 1]
        start = torch.tensor([offsets[index] for index in sequences], device=device)[:, None]
        # [g, Lg] token of each position; padding repeats the last token (then zeroed).
        self.tokens = start + torch.minimum(torch.arange(self.seq_len, device=device), count - 1)
        self.real_positions = None if self.valid is None else torch.nonzero(
            self.valid.flatten())[:, 0]
        tokens = self.tokens.flatten()
        self.real_tokens = tokens if self.valid is None else tokens[self.real_positions]

    def gather(self, x):
        """[T, H, ...] -> [g, H, Lg, ...] (a transposed view of a new tensor)."""
        return x.index_select(0, self.tokens.flatten()).unflatten(0, self.tokens.shape
                                                                  ).transpose(1, 2)

    def gather_times(self, times):
        """[T] -> [g, Lg]."""
        return times[self.tokens]

    def scatter(self, dest, x):
        """Write the real positions of ``x`` [g, H, Lg, ...] into ``dest`` [T, H, ...]."""
        x = x.transpose(1, 2).flatten(0, 1)  # [g * Lg, H, ...]
        if self.real_positions is not None:
            x = x.index_select(0, self.real_positions)
        dest.index_copy_(0, self.real_tokens, x)


def _valid_positions(lengths, device):
    """[g, max(lengths)] bool: positions inside each length (decreasing); None if all full."""
    if lengths[-1] == lengths[0]:
        return None
    return torch.arange(lengths[0], device=device) < torch.tensor(lengths, device=device)[:, None]


def _groups(q, lengths, cu_seqlens, causal):
    """The batch's sequences in groups of similar length (see :func:`_length_groups`). Lengths
    and offsets are clamped into the tensors, as the Triton kernels clamp them (the op's
    callers check them; a direct call of the op must not read garbage)."""
    heads = q.shape[1]
    if cu_seqlens is not None:
        offsets = cu_seqlens.clamp(0, q.shape[0]).cummax(0).values.tolist()
        sizes = [end - start for start, end in zip(offsets, offsets[1:])]
        return [_JaggedGroup(sequences, offsets, sizes, q.device)
                for sequences in _length_groups(sizes, heads, causal)]
    batch, _, seq_len, _ = q.shape
    sizes = [seq_len] * batch if lengths is None else lengths.clamp(0, seq_len).tolist()
    return [_PaddedGroup(rows, sizes, seq_len, q.device)
            for rows in _length_groups(sizes, heads, causal)]


def _contiguous(x, dtype):
    """``x`` as a contiguous ``dtype`` tensor: ``x`` itself when it is one, else one copy."""
    if x.dtype == dtype and x.is_contiguous():
        return x
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def _gather(group, tensors, dtype):
    """Each [B, H, L, D] (or [T, H, D]) tensor's rows of ``group`` as contiguous [g, H, Lg, D]
    in ``dtype``, padding zeroed (so that it never reaches a sum)."""
    gathered = [_contiguous(group.gather(x), dtype) for x in tensors]
    if group.valid is None:
        return gathered
    padding = ~group.valid[:, None, :, None]
    return [x.masked_fill_(padding, 0.0) for x in gathered]  # new tensors: not the inputs


def _steps(heads, lengths, causal, window):
    """(b0, b1, q0, q1, k0, k1): rows, queries and the keys they reach over a group (lengths
    decreasing), in steps of at most about TILE_ELEMENTS scores; queries in chunks of
    QUERY_CHUNK when causal or windowed (keys no query of the chunk reaches are skipped), rows
    whose length the chunk passes skipped, queries and keys cut to each block's longest row."""
    seq_len = lengths[0]
    chunk = QUERY_CHUNK
    if not causal and window is None:
        chunk = max(QUERY_CHUNK, TILE_ELEMENTS // (heads * seq_len))
    chunk = min(seq_len, chunk)
    for q0 in range(0, seq_len, chunk):
        active = sum(1 for length in lengths if length > q0)  # a prefix: lengths decrease
        q1 = min(seq_len, q0 + chunk)
        k0 = 0 if window is None else max(0, q0 - window)
        k1 = q1 if causal else seq_len
        if window is not None:
            k1 = min(k1, q1 + window)
        rows = max(1, TILE_ELEMENTS // (heads * (q1 - q0) * (k1 - k0)))
        for b0 in range(0, active, rows):
            longest = lengths[b0]
            yield b0, min(active, b0 + rows), q0, min(q1, longest), k0, min(k1, longest)


def _block(x, b0, b1, p0, p1):
    """x[b0:b1, :, p0:p1] of [g, H, L, D] as [b * H, P, D] (a view)."""
    return x[b0:b1, :, p0:p1].view(-1, p1 - p0, x.shape[-1])


class _Workspace:
    """Buffers that every step of a call reuses, each allocated once with room for the call's
    largest tile (``size`` elements): a fresh tile per step would cost page faults where large
    allocations are mapped from the system each time."""

    def __init__(self, size, dtype, device):
        self.size, self.dtype, self.device, self.buffers = size, dtype, device, {}

    def get(self, name, shape):
        """An uninitialised ``shape`` tensor from buffer ``name`` (grown past ``size`` if it
        must be)."""
        numel = math.prod(shape)
        if name not in self.buffers or self.buffers[name].numel() < numel:
            self.buffers[name] = torch.empty(max(self.size, numel), dtype=self.dtype,
                                             device=self.device)
        return self.buffers[name][:numel].view(shape)


def _product(a, b, workspace):
    """a @ b of [N, M, K] and [N, K, D] into the workspace's "product" buffer (then added or
    copied into a strided block: bmm into a strided block runs one small product at a time)."""
    return torch.bmm(a, b, out=workspace.get("product", (a.shape[0], a.shape[1], b.shape[2])))


def _workspace(groups, heads, causal, window, dtype, device):
    """The workspace of a call over ``groups``."""
    size = max((heads * (b1 - b0) * (q1 - q0) * (k1 - k0) for group in groups
                for b0, b1, q0, q1, k0, k1 in _steps(heads, group.lengths, causal, window)),
               default=0)
    return _Workspace(size, dtype, device)


class _Bias:
    """The bias of one group's scores, tile by tile: time decay, bucket table and masks
    (causal, window, keys past a row's length; padded queries are left to the caller).

    time_hi, time_lo: [g, Lg] gathered times; lengths: the group's, decreasing;
    position_masks: a dict caching the [1, Q, K] causal/window masks across groups."""

    def __init__(self, time_hi, time_lo, lengths, rate, time_bias, options, position_masks,
                 workspace):
        dtype = workspace.dtype
        self.hi, self.lo = time_hi.to(dtype), time_lo.to(dtype)  # [g, Lg]
        self.lengths = lengths
        self.length_tensor = torch.tensor(lengths, device=time_hi.device)
        self.negative_rate = -rate.to(dtype).view(1, -1, 1, 1) if rate is not None else None
        self.table = time_bias.to(dtype) if time_bias is not None else None
        # [NB, H]: one row per bucket, for an embedding lookup.
        self.table_by_bucket = self.table.t().contiguous() if time_bias is not None else None
        self.causal, self.decay_fn, self.bucketing, self.bucket_scale, self.window = options
        self.position_masks, self.workspace = position_masks, workspace

    def _position_mask(self, q0, q1, k0, k1):
        """[1, Q, K] 0 or MASKED from causality and the window (None: nothing masked), cached."""
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
            self.position_masks[q0, q1, k0, k1] = torch.zeros(
                1, q1 - q0, k1 - k0, dtype=self.hi.dtype, device=device).masked_fill_(
                ~allowed, MASKED)
        return self.position_masks[q0, q1, k0, k1]

    def _mask(self, step):
        """[b or 1, 1, Q, K] 0 or MASKED (twice where both masks apply), or None where nothing
        in the step is masked."""
        b0, b1, q0, q1, k0, k1 = step
        mask = self._position_mask(q0, q1, k0, k1)
        # Keys past a row's end, where some row ends before the step's keys do (a causal
        # query inside its row reaches none of them: only padded queries, whose results are
        # dropped and whose gradients are 0, would see them).
        if not self.causal and self.lengths[b1 - 1] < k1:
            key = torch.arange(k0, k1, device=self.hi.device)
            key_mask = torch.zeros(b1 - b0, 1, k1 - k0, dtype=self.hi.dtype,
                                   device=self.hi.device).masked_fill_(
                key >= self.length_tensor[b0:b1, None, None], MASKED)  # [b, 1, K]
            mask = key_mask if mask is None else torch.add(
                key_mask, mask, out=self.workspace.get("mask", (b1 - b0, q1 - q0, k1 - k0)))
        return None if mask is None else mask[:, None]

    def allowed(self, step, heads):
        """[b * H, Q, K] bool: the pairs of the step that attend (causal, window, query and key
        inside the row's length); for the exact masking."""
        b0, b1, q0, q1, k0, k1 = step
        device = self.hi.device
        query = torch.arange(q0, q1, device=device)[:, None]
        key = torch.arange(k0, k1, device=device)[None, :]
        length = self.length_tensor[b0:b1, None, None]
        allowed = (query < length) & (key < length)  # [b, Q, K]
        if self.causal:
            allowed = allowed & (key <= query)
        if self.window is not None:
            allowed = allowed & ((query - key).abs() <= self.window)
        return allowed[:, None].expand(-1, heads, -1, -1).reshape(-1, q1 - q0, k1 - k0)

    def _gap(self, step):
        """[b, Q, K] |t_i - t_j| / time_unit from the (hi, lo) split: exact to the rounding of
        the gap itself."""
        b0, b1, q0, q1, k0, k1 = step
        hi, lo = self.hi[b0:b1], self.lo[b0:b1]
        shape = (b1 - b0, q1 - q0, k1 - k0)
        gap = torch.sub(hi[:, q0:q1, None], hi[:, None, k0:k1],
                        out=self.workspace.get("gap", shape))
        low = torch.sub(lo[:, q0:q1, None], lo[:, None, k0:k1],
                        out=self.workspace.get("gap_low", shape))
        return gap.add_(low).abs_()

    def tile(self, step, heads):
        """-> (bias [b, H, Q, K] in the workspace's "scores" buffer; phi [b, 1, Q, K] or None;
        bucket [b, Q, K] or None)."""
        b0, b1, q0, q1, k0, k1 = step
        bias = self.workspace.get("scores", (b1 - b0, heads, q1 - q0, k1 - k0))
        mask, phi, bucket = self._mask(step), None, None
        if self.negative_rate is not None or self.table is not None:
            gap = self._gap(step)
        if self.table is not None:
            bucket = time_bucket(gap, self.table.shape[1], self.bucketing, self.bucket_scale)
        if self.negative_rate is not None:
            phi = (gap if self.decay_fn == "abs" else gap.log1p_() if self.decay_fn == "log1p"
                   else gap.sqrt_())[:, None]
            if mask is None:
                torch.mul(phi, self.negative_rate, out=bias)
            else:
                torch.addcmul(mask, phi, self.negative_rate, out=bias)
        elif mask is None:
            bias.zero_()
        else:
            bias.copy_(mask)
        if self.table is not None:
            bias += F.embedding(bucket, self.table_by_bucket).permute(0, 3, 1, 2)  # [b, H, Q, K]
        return bias, phi, bucket


def _exact_masking(q, k, others, rate, time_bias, scale, time_hi):
    """Whether a group needs the exact masking: a NaN/inf in any of its inputs (q, k, and the
    ``others``: v, and the output gradient in backward), or scores that could reach
    SCORE_BOUND (bounded by scale * D * max|q| * max|k| + max rate * (max gap + 1) +
    max|time_bias|, phi(gap) <= gap + 1 for every decay_fn). One host synchronisation."""
    def peak(x):  # max |x| (NaN if x holds one); aminmax: one pass, no |x| copy
        if x is None or x.numel() == 0:
            return torch.zeros((), dtype=torch.float64, device=q.device)
        return torch.stack(torch.aminmax(x)).double().abs().amax()

    bound = scale * q.shape[-1] * peak(q) * peak(k) + peak(time_bias)
    if rate is not None:
        bound = bound + peak(rate) * (peak(time_hi) + 1)
    finite = torch.stack([peak(x) for x in others]).isfinite().all()
    return not bool(finite & (bound < SCORE_BOUND))


def _masked_product(a, b, allowed, workspace):
    """a @ b ([N, M, K] @ [N, K, D]) where ``a`` is 0 outside ``allowed`` [N, M, K] and the NaN/inf
    of ``b`` may meet only the allowed entries of ``a`` (0 * inf would make NaN): the product of
    the finite values, plus the non-finite values' terms taken over the allowed pairs only."""
    finite = torch.isfinite(b)
    if finite.all():
        return _product(a, b, workspace)
    out = torch.bmm(a, torch.where(finite, b, 0.0))
    keys = torch.nonzero(~finite.all(-1).all(0))[:, 0]  # rows of b holding a NaN/inf
    meet = allowed[:, :, keys, None] & ~finite[:, None, keys]  # [N, M, J, D]
    terms = torch.where(meet, a[:, :, keys, None] * b[:, None, keys], 0.0)
    return out.add_(terms.sum(2))


def _forward_group(group, q, k, v, time_hi, time_lo, rate, time_bias, scale, options,
                   position_masks, workspace):
    """One group's (out [g, H, Lg, D], lse [g, H, Lg]) in the compute dtype, 0 at padding."""
    q_, k_, v_ = _gather(group, (q, k, v), workspace.dtype)
    rows, heads, seq_len, head_dim = q_.shape
    bias = _Bias(group.gather_times(time_hi), group.gather_times(time_lo), group.lengths, rate,
                 time_bias, options, position_masks, workspace)
    exact = _exact_masking(q_, k_, (v_,), rate, time_bias, scale, bias.hi)
    out = torch.empty_like(q_)  # [g, H, Lg, D]; positions no step writes are padding
    lse = torch.empty(rows, heads, seq_len, 1, dtype=q_.dtype, device=q.device)
    for step in _steps(heads, group.lengths, options[0], options[4]):
        b0, b1, q0, q1, k0, k1 = step
        scores = bias.tile(step, heads)[0].view(-1, q1 - q0, k1 - k0).baddbmm_(
            _block(q_, b0, b1, q0, q1), _block(k_, b0, b1, k0, k1).transpose(1, 2), alpha=scale)
        allowed = bias.allowed(step, heads) if exact else None  # [b * H, Q, K]
        if exact:
            scores.masked_fill_(~allowed, -math.inf)  # a query whose scores are all -inf: NaN
        top = scores.amax(-1, keepdim=True)  # [b * H, Q, 1]
        weights = torch.softmax(scores, -1, out=workspace.get("weights", scores.shape))
        # The largest probability is 1 / sum(exp(scores - top)).
        lse[b0:b1, :, q0:q1] = (top - weights.amax(-1, keepdim=True).log_()).view(
            b1 - b0, heads, q1 - q0, 1)
        values = _block(v_, b0, b1, k0, k1)
        _block(out, b0, b1, q0, q1).copy_(
            _masked_product(weights.masked_fill_(~allowed, 0.0), values, allowed, workspace)
            if exact else _product(weights, values, workspace))
    if group.valid is not None:
        padding = ~group.valid[:, None, :, None]
        out.masked_fill_(padding, 0.0)
        lse.masked_fill_(padding, 0.0)
    return out, lse[..., 0]


def _with_column(x, column):
    """[N, R, D], [N, R] -> [N, R, D + 1]: one more column for a matrix product to add."""
    return torch.cat([x, column.unsqueeze(-1)], -1)


def _backward_group(group, grad, q, k, v, out, time_hi, time_lo, rate, time_bias, scale,
                    options, position_masks, workspace, grad_rate, grad_table):
    """One group's (grad_q, grad_k, grad_v) [g, H, Lg, D] in the compute dtype; adds its share
    of the rate's [H] and the table's [H * NB] gradients to ``grad_rate`` and ``grad_table``.

    Each step holds every key its queries reach, so it recomputes the probabilities with one
    softmax (the forward's log-sum-exp is not needed); padded queries have a zero gradient and
    so add nothing."""
    grad_, q_, k_, v_, out_ = _gather(group, (grad, q, k, v, out), workspace.dtype)
    rows, heads, seq_len, head_dim = q_.shape
    delta = (grad_ * out_).sum(-1)  # [g, H, Lg]: sum_j P_ij dP_ij
    # One more column so that one product gives dP - delta.
    grad_delta = _with_column(grad_, -delta)
    v_one = _with_column(v_, torch.ones(rows, heads, seq_len, dtype=q_.dtype, device=q.device))
    bias = _Bias(group.gather_times(time_hi), group.gather_times(time_lo), group.lengths, rate,
                 time_bias, options, position_masks, workspace)
    exact = _exact_masking(q_, k_, (v_, grad_), rate, time_bias, scale, bias.hi)

    def product(a, b, allowed):  # a @ b, over the allowed pairs only when exact
        return _masked_product(a, b, allowed, workspace) if exact else _product(a, b, workspace)

    grad_q, grad_k, grad_v = (torch.zeros_like(q_) for _ in range(3))  # [g, H, Lg, D]
    for step in _steps(heads, group.lengths, options[0], options[4]):
        b0, b1, q0, q1, k0, k1 = step
        tile, phi, bucket = bias.tile(step, heads)
        scores = tile.view(-1, q1 - q0, k1 - k0).baddbmm_(
            _block(q_, b0, b1, q0, q1), _block(k_, b0, b1, k0, k1).transpose(1, 2), alpha=scale)
        allowed = bias.allowed(step, heads) if exact else None  # [b * H, Q, K]
        if exact:
            scores.masked_fill_(~allowed, -math.inf)  # a query whose scores are all -inf: NaN
        weights = torch.softmax(scores, -1, out=workspace.get("weights", scores.shape))  # P
        if exact:
            weights.masked_fill_(~allowed, 0.0)
        allowed_t = allowed.transpose(1, 2) if exact else None
        _block(grad_v, b0, b1, k0, k1).add_(product(weights.transpose(1, 2),
                                                    _block(grad_, b0, b1, q0, q1), allowed_t))
        grad_scores = torch.bmm(_block(grad_delta, b0, b1, q0, q1),
                                _block(v_one, b0, b1, k0, k1).transpose(1, 2), out=scores
                                ).mul_(weights)  # P (dP - delta) [b * H, Q, K]
        if exact:
            grad_scores.masked_fill_(~allowed, 0.0)
        # Each query's keys are all in its step: its gradient is written once.
        _block(grad_q, b0, b1, q0, q1).copy_(product(grad_scores, _block(k_, b0, b1, k0, k1),
                                                     allowed))
        _block(grad_k, b0, b1, k0, k1).add_(product(grad_scores.transpose(1, 2),
                                                    _block(q_, b0, b1, q0, q1), allowed_t),
                                            alpha=scale)
        per_row = grad_scores.view(b1 - b0, heads, -1)  # [b, H, Q * K]
        if grad_rate is not None:  # d s / d rate = -phi
            grad_rate -= torch.bmm(per_row, phi.reshape(b1 - b0, -1, 1)).sum(0).view(heads)
        if grad_table is not None:
            index = bucket[:, None] + bias.table.shape[1] * torch.arange(
                heads, device=q.device).view(1, -1, 1, 1)  # [b, H, Q, K]
            grad_table += torch.bincount(index.reshape(-1), weights=per_row.reshape(-1),
                                         minlength=grad_table.numel())
    return grad_q.mul_(scale), grad_k, grad_v


def time_decay_attention_forward(q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens,
                                 max_seqlen, causal, scale, decay_fn, bucketing, bucket_scale,
                                 window):
    """Chunked forward -> (out like q, lse [B, H, L] or [T, H]: the natural-log normaliser of
    each query's scores, 0 on padding).

    q, k, v: [B, H, L, D] (or [T, H, D] with cu_seqlens [B + 1] and max_seqlen); time_hi,
    time_lo: [B, L] (or [T]) float32 split of each token's time since its sequence's first event
    in ``time_unit``s (hi + lo); rate: [H] = softplus(decay) or None; time_bias: [H, NB] or None;
    window: int or None. The same contract as the Triton launcher
    ``stseq.triton.attention.time_decay_attention_forward``.

    Sequences are sorted by length and taken in groups of similar length, each padded only to
    its longest (see :func:`_length_groups`).

    Example::

        q = k = v = torch.randn(1, 2, 4, 16)
        hi, lo = torch.tensor([[0.0, 1.0, 2.0, 5.0]]), torch.zeros(1, 4)
        out, lse = time_decay_attention_forward(q, k, v, hi, lo, torch.ones(2), None, None,
                                                None, None, True, 0.25, "abs", "log", 1.0, None)
    """
    options, position_masks = (causal, decay_fn, bucketing, bucket_scale, window), {}
    groups = _groups(q, lengths, cu_seqlens, causal)
    dtype = _compute_dtype(q.dtype)
    arguments = (time_hi, time_lo, rate, time_bias, scale, options, position_masks,
                 _workspace(groups, q.shape[1], causal, window, dtype, q.device))
    if len(groups) == 1 and groups[0].complete:
        out, lse = _forward_group(groups[0], q, k, v, *arguments)
        return out.to(q.dtype), lse
    out = torch.zeros(q.shape, dtype=dtype, device=q.device)
    lse = torch.zeros(q.shape[:-1], dtype=dtype, device=q.device)
    for group in groups:
        group_out, group_lse = _forward_group(group, q, k, v, *arguments)
        group.scatter(out, group_out)
        group.scatter(lse, group_lse)
    return out.to(q.dtype), lse


def time_decay_attention_backward(grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias,
                                  lengths, cu_seqlens, max_seqlen, causal, scale, decay_fn,
                                  bucketing, bucket_scale, window):
    """Chunked backward -> (grad_q, grad_k, grad_v, grad_rate [H] or None, grad_time_bias
    [H, NB] or None); arguments as :func:`time_decay_attention_forward` plus its outputs and
    the gradient of ``out`` (``lse`` is part of the contract the Triton kernels share; this path
    recomputes the probabilities without it).

    Example::

        grads = time_decay_attention_backward(torch.ones_like(out), q, k, v, out, lse, hi, lo,
                                              torch.ones(2), None, None, None, None, True, 0.25,
                                              "abs", "log", 1.0, None)
    """
    options, position_masks = (causal, decay_fn, bucketing, bucket_scale, window), {}
    dtype = _compute_dtype(q.dtype)
    grad_rate = torch.zeros(q.shape[1], dtype=dtype, device=q.device) if rate is not None else None
    grad_table = (torch.zeros(time_bias.numel(), dtype=dtype, device=q.device)
                  if time_bias is not None else None)
    groups = _groups(q, lengths, cu_seqlens, causal)
    arguments = (grad, q, k, v, out, time_hi, time_lo, rate, time_bias, scale, options,
                 position_masks, _workspace(groups, q.shape[1], causal, window, dtype, q.device),
                 grad_rate, grad_table)
    if len(groups) == 1 and groups[0].complete:
        grad_q, grad_k, grad_v = _backward_group(groups[0], *arguments)
    else:
        grad_q, grad_k, grad_v = (torch.zeros(q.shape, dtype=dtype, device=q.device)
                                  for _ in range(3))
        for group in groups:
            for dest, part in zip((grad_q, grad_k, grad_v), _backward_group(group, *arguments)):
                group.scatter(dest, part)
    return (grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype),
            grad_rate.to(rate.dtype) if rate is not None else None,
            grad_table.view_as(time_bias).to(time_bias.dtype) if time_bias is not None else None)
