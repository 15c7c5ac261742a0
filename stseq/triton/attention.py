"""Triton kernels of ``time_decay_attention``: flash-style attention whose time-decay bias is
computed inside the kernel from per-token times, never stored as [L, L]. (One file past the
usual length: the three kernels share their tile math and the launchers that feed them, which
read best together.)

- ``_forward_kernel``: grid (B * H, query blocks); online softmax over the key blocks a query
  block can reach; writes out and the log-sum-exp of each query.
- ``_key_value_kernel``: grid (B * H, key blocks); recomputes the probabilities from the saved
  log-sum-exp and accumulates dK, dV over the query blocks, plus this program's partial sums of
  the decay-rate gradient and of the bucket-table gradient (each query/key pair is visited by
  exactly one program here).
- ``_query_kernel``: grid (B * H, query blocks); accumulates dQ over the key blocks.

The partial sums are reduced by a second, small pass (``torch.sum`` over programs): no atomics,
so gradients are bitwise reproducible. Masked pairs (causal, window, padding) never enter the
arithmetic: masked scores and dS are set, not multiplied, and the products with V, dO, K and Q
keep a NaN/inf of a masked row out of the rows that cannot see it (``_dot_visible``). Scores are kept in log2 units (``exp2``); the time gap of
a pair comes from the float32 (hi, lo) split of each token's time since its sequence's first
event, which keeps the gap itself to float32 precision however long the sequence.

Layouts: padded q/k/v [B, H, L, D] with optional lengths [B], or jagged [T, H, D] with
cu_seqlens [B + 1]; every tensor is addressed through strides (last dimension contiguous).
"""

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
# The same constants as seen from inside the kernels.
_LOG2E = tl.constexpr(LOG2E)
_LN2 = tl.constexpr(0.6931471805599453)
# A NaN's weight in _dot_visible's count of a tile's non-finite terms: above any inf count
# (<= BLOCK_N <= 256), and NAN_WEIGHT * 256 + 256 < 2^24 keeps the float32 sums exact.
_NAN_WEIGHT = tl.constexpr(4096.0)
DECAY_FN_CODES = {None: 0, "abs": 1, "log1p": 2, "sqrt": 3}
BUCKETING_CODES = {None: 0, "log": 1, "sqrt": 2}

# The interpreter cannot benchmark configurations: it gets one, small enough for tiny tests
# to span several blocks.
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
# (BLOCK_M, BLOCK_N, num_warps, num_stages) tried by the autotuner on a GPU.
FORWARD_BLOCKS = [(128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 3), (64, 32, 4, 4),
                  (128, 128, 8, 2)]
KEY_VALUE_BLOCKS = [(32, 64, 4, 3), (64, 64, 4, 2), (32, 128, 8, 2), (64, 128, 8, 2)]
QUERY_BLOCKS = [(64, 32, 4, 3), (64, 64, 4, 2), (128, 64, 8, 2), (128, 32, 8, 3)]
INTERPRETER_BLOCK = 16
TUNING_KEY = ["SEQ_BUCKET", "HEAD_DIM", "CAUSAL", "JAGGED", "DECAY_FN", "BUCKETING"]


def _configs(blocks):
    if INTERPRETING:
        return [triton.Config({"BLOCK_M": INTERPRETER_BLOCK, "BLOCK_N": INTERPRETER_BLOCK},
                              num_warps=1, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in blocks]


def _smallest_key_block():
    return INTERPRETER_BLOCK if INTERPRETING else min(n for _, n, _, _ in KEY_VALUE_BLOCKS)


# ---- shared tile math ----------------------------------------------------------------------


@triton.jit
def _sequence(b, LENGTHS, CU_SEQLENS, seq_len, total, JAGGED: tl.constexpr,
              HAS_LENGTHS: tl.constexpr):
    """(first token, length) of sequence b, clamped so that no access leaves the tensors."""
    if JAGGED:
        start = tl.minimum(tl.maximum(tl.load(CU_SEQLENS + b).to(tl.int64), 0), total)
        end = tl.minimum(tl.maximum(tl.load(CU_SEQLENS + b + 1).to(tl.int64), start), total)
        length = tl.minimum(end - start, seq_len).to(tl.int32)
    else:
        start = tl.zeros([], dtype=tl.int64)
        length = tl.zeros([], dtype=tl.int32) + seq_len
        if HAS_LENGTHS:
            length = tl.minimum(tl.maximum(tl.load(LENGTHS + b).to(tl.int32), 0), seq_len)
    return start, length


@triton.jit
def _log1p(x):
    # log(1 + x) with the rounding of 1 + x corrected (accurate for small x).
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * (x / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _gap(hi_a, lo_a, hi_b, lo_b):
    """|t_a - t_b| [A, B] from the (hi, lo) split of the times [A] and [B]."""
    return tl.abs((hi_a[:, None] - hi_b[None, :]) + (lo_a[:, None] - lo_b[None, :]))


@triton.jit
def _phi(gap, DECAY_FN: tl.constexpr):
    value = gap  # "abs"
    if DECAY_FN == 2:
        value = _log1p(gap)
    if DECAY_FN == 3:
        value = tl.sqrt(gap)
    return value


@triton.jit
def _bucket(gap, bucket_scale, num_buckets, BUCKETING: tl.constexpr):
    if BUCKETING == 1:
        value = _log1p(gap)
    else:
        value = tl.sqrt_rn(gap)
    # Clamped before the conversion (NaN and inf have no int32 value): never outside the table.
    position = value * bucket_scale
    position = tl.where(position < num_buckets - 1, position, num_buckets - 1)  # NaN: last
    return tl.maximum(position, 0.0).to(tl.int32)


@triton.jit
def _bias2(gap, rate2, TABLE_ROW, bucket_scale, num_buckets, DECAY_FN: tl.constexpr,
           BUCKETING: tl.constexpr):
    """The bias of a tile of gaps, in log2 units."""
    bias = tl.zeros(gap.shape, dtype=tl.float32)
    if DECAY_FN != 0:
        bias -= rate2 * _phi(gap, DECAY_FN)
    if BUCKETING != 0:
        bias += tl.load(TABLE_ROW + _bucket(gap, bucket_scale, num_buckets, BUCKETING)) * _LOG2E
    return bias


@triton.jit
def _allowed(rows, cols, length, window, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """[R, C] mask of query positions ``rows`` [R] against key positions ``cols`` [C]."""
    allowed = (rows[:, None] < length) & (cols[None, :] < length)
    if CAUSAL:
        allowed = allowed & (cols[None, :] <= rows[:, None])
    if HAS_WINDOW:
        allowed = allowed & (tl.abs(rows[:, None] - cols[None, :]) <= window)
    return allowed


@triton.jit
def _dot_visible(a, b, visible, DOT_PRECISION: tl.constexpr):
    """a @ b (float32 [M, D]) for a [M, N] that is 0 outside ``visible`` [M, N], where the NaN/inf
    of b [N, D] may meet only the visible entries of a (0 * inf would make NaN). The finite
    values go through one dot; only a tile holding a NaN/inf takes two more (exact 0/1 counts,
    float32): per output, the visible non-finite terms' signed sum ``signs`` (+1 for a * +inf,
    -1 for a * -inf, 0 for 0 * inf or NaN * inf) and ``hits`` (1 per inf, NAN_WEIGHT per NaN).
    IEEE arithmetic gives +-inf when every inf term has one sign (|signs| = the inf count, and
    no NaN), else NaN."""
    b32 = b.to(tl.float32)
    finite = tl.abs(b32) < float("inf")  # False for NaN and +-inf
    out = tl.dot(a, tl.where(finite, b, 0.0).to(b.dtype), input_precision=DOT_PRECISION)
    if tl.min(finite.to(tl.int32)) == 0:
        a32 = a.to(tl.float32)
        sign_a = tl.where(visible, tl.where(a32 > 0.0, 1.0, tl.where(a32 < 0.0, -1.0, 0.0)), 0.0)
        sign_b = tl.where(b32 == float("inf"), 1.0, tl.where(b32 == float("-inf"), -1.0, 0.0))
        code_b = tl.where(finite, 0.0, tl.where(b32 != b32, _NAN_WEIGHT, 1.0))
        signs = tl.dot(sign_a, sign_b, input_precision="ieee")
        hits = tl.dot(visible.to(tl.float32), code_b, input_precision="ieee")
        nans = tl.floor(hits / _NAN_WEIGHT)
        infs = hits - nans * _NAN_WEIGHT
        out = tl.where(signs > 0.0, out + float("inf"), tl.where(signs < 0.0, out - float("inf"),
                                                                  out))
        out = tl.where((nans > 0.0) | (infs > tl.abs(signs)), float("nan"), out)
    return out


@triton.jit
def _key_range(query_start, length, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """[lo, hi) of the key blocks that queries [query_start, query_start + BLOCK_M) reach."""
    lo = 0
    hi = length
    if CAUSAL:
        hi = tl.minimum(length, query_start + BLOCK_M)
    if HAS_WINDOW:
        lo = (tl.maximum(query_start - window, 0) // BLOCK_N) * BLOCK_N
        if not CAUSAL:
            hi = tl.minimum(length, query_start + BLOCK_M + window)
    return lo, tl.where(query_start < length, hi, 0)


@triton.jit
def _query_range(key_start, length, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """[lo, hi) of the query blocks that reach keys [key_start, key_start + BLOCK_N)."""
    lo = 0
    hi = length
    if CAUSAL:
        lo = (key_start // BLOCK_M) * BLOCK_M
    if HAS_WINDOW:
        hi = tl.minimum(length, key_start + BLOCK_N + window)
        if not CAUSAL:
            lo = (tl.maximum(key_start - window, 0) // BLOCK_M) * BLOCK_M
    return lo, tl.where(key_start < length, hi, 0)


# ---- kernels -------------------------------------------------------------------------------


@triton.autotune(configs=_configs(FORWARD_BLOCKS), key=TUNING_KEY)
@triton.jit
def _forward_kernel(
        Q, K, V, TIME_HI, TIME_LO, RATE, TABLE, LENGTHS, CU_SEQLENS, OUT, LSE,
        stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
        stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,
        stride_lb, stride_lh, stride_lt, stride_tb,
        num_heads, seq_len, total, num_buckets, scale2, bucket_scale, window, SEQ_BUCKET,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
        JAGGED: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_WINDOW: tl.constexpr,
        DECAY_FN: tl.constexpr, BUCKETING: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_bh, pid_m = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // num_heads, pid_bh % num_heads
    start, length = _sequence(b, LENGTHS, CU_SEQLENS, seq_len, total, JAGGED, HAS_LENGTHS)
    q_base = Q + b.to(tl.int64) * stride_qb + h * stride_qh + start * stride_qt
    k_base = K + b.to(tl.int64) * stride_kb + h * stride_kh + start * stride_kt
    v_base = V + b.to(tl.int64) * stride_vb + h * stride_vh + start * stride_vt
    t_base = b.to(tl.int64) * stride_tb + start

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rows = offs_m < length
    dims = offs_d < HEAD_DIM
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=rows[:, None] & dims[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
    hi_m = tl.load(TIME_HI + t_base + offs_m, mask=rows, other=0.0)
    lo_m = tl.load(TIME_LO + t_base + offs_m, mask=rows, other=0.0)
    rate2 = 0.0
    if DECAY_FN != 0:
        rate2 = tl.load(RATE + h) * _LOG2E
    table_row = TABLE + h * num_buckets

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = _key_range(pid_m * BLOCK_M, length, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        cols = offs_n < length
        k = tl.load(k_base + offs_n[None, :] * stride_kt + offs_d[:, None],
                    mask=cols[None, :] & dims[:, None], other=0.0)  # [BLOCK_D, BLOCK_N]
        hi_n = tl.load(TIME_HI + t_base + offs_n, mask=cols, other=0.0)
        lo_n = tl.load(TIME_LO + t_base + offs_n, mask=cols, other=0.0)
        s = tl.dot(q, k, input_precision=DOT_PRECISION) * scale2
        s += _bias2(_gap(hi_m, lo_m, hi_n, lo_n), rate2, table_row, bucket_scale, num_buckets,
                    DECAY_FN, BUCKETING)
        allowed = _allowed(offs_m, offs_n, length, window, CAUSAL, HAS_WINDOW)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with no key yet
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :],
                    mask=cols[:, None] & dims[None, :], other=0.0)  # [BLOCK_N, BLOCK_D]
        acc = acc * alpha[:, None] + _dot_visible(p.to(v.dtype), v, allowed, DOT_PRECISION)
        m_i = m_new

    # Every real query attends to itself at least; l_i = 0 there means all its scores were
    # -inf, which makes NaN as in torch's softmax. Padded queries get 0.
    has_key = rows
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse = tl.where(has_key, (m_i + tl.log2(tl.where(has_key, l_i, 1.0))) * _LN2, 0.0)
    # Padded rows of the padded layout get zeros; the jagged layout stops at the sequence's end.
    stored = offs_m < (length if JAGGED else seq_len)
    o_base = OUT + b.to(tl.int64) * stride_ob + h * stride_oh + start * stride_ot
    tl.store(o_base + offs_m[:, None] * stride_ot + offs_d[None, :], out.to(OUT.dtype.element_ty),
             mask=stored[:, None] & dims[None, :])
    l_base = LSE + b.to(tl.int64) * stride_lb + h * stride_lh + start * stride_lt
    tl.store(l_base + offs_m * stride_lt, lse, mask=stored)


@triton.autotune(configs=_configs(KEY_VALUE_BLOCKS), key=TUNING_KEY,
                 restore_value=["RATE_PARTIAL", "TABLE_PARTIAL"])
@triton.jit
def _key_value_kernel(
        Q, K, V, GRAD, LSE, DELTA, TIME_HI, TIME_LO, RATE, TABLE, LENGTHS, CU_SEQLENS,
        GRAD_K, GRAD_V, RATE_PARTIAL, TABLE_PARTIAL,
        stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
        stride_vb, stride_vh, stride_vt, stride_gb, stride_gh, stride_gt,
        stride_lb, stride_lh, stride_lt, stride_tb,
        num_heads, seq_len, total, num_buckets, num_blocks, scale, scale2, bucket_scale, window,
        SEQ_BUCKET, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_B: tl.constexpr,
        CAUSAL: tl.constexpr, JAGGED: tl.constexpr, HAS_LENGTHS: tl.constexpr,
        HAS_WINDOW: tl.constexpr, DECAY_FN: tl.constexpr, BUCKETING: tl.constexpr,
        DOT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_bh, pid_n = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // num_heads, pid_bh % num_heads
    start, length = _sequence(b, LENGTHS, CU_SEQLENS, seq_len, total, JAGGED, HAS_LENGTHS)
    head = b.to(tl.int64)
    q_base = Q + head * stride_qb + h * stride_qh + start * stride_qt
    k_base = K + head * stride_kb + h * stride_kh + start * stride_kt
    v_base = V + head * stride_vb + h * stride_vh + start * stride_vt
    g_base = GRAD + head * stride_gb + h * stride_gh + start * stride_gt
    l_base = head * stride_lb + h * stride_lh + start * stride_lt
    t_base = head * stride_tb + start

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    cols = offs_n < length
    dims = offs_d < HEAD_DIM
    kv_mask = cols[:, None] & dims[None, :]
    k = tl.load(k_base + offs_n[:, None] * stride_kt + offs_d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_base + offs_n[:, None] * stride_vt + offs_d[None, :], mask=kv_mask, other=0.0)
    hi_n = tl.load(TIME_HI + t_base + offs_n, mask=cols, other=0.0)
    lo_n = tl.load(TIME_LO + t_base + offs_n, mask=cols, other=0.0)
    rate2 = 0.0
    if DECAY_FN != 0:
        rate2 = tl.load(RATE + h) * _LOG2E
    table_row = TABLE + h * num_buckets
    offs_b = tl.arange(0, BLOCK_B)

    grad_k = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    grad_v = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    rate_sum = tl.zeros([BLOCK_N], dtype=tl.float32)  # sum over queries of dS * phi
    table_sum = tl.zeros([BLOCK_B], dtype=tl.float32)  # sum of dS per bucket
    lo, hi = _query_range(pid_n * BLOCK_N, length, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        rows = offs_m < length
        q_t = tl.load(q_base + offs_m[None, :] * stride_qt + offs_d[:, None],
                      mask=rows[None, :] & dims[:, None], other=0.0)  # [BLOCK_D, BLOCK_M]
        grad_out = tl.load(g_base + offs_m[:, None] * stride_gt + offs_d[None, :],
                           mask=rows[:, None] & dims[None, :], other=0.0)  # [BLOCK_M, BLOCK_D]
        lse2 = tl.load(LSE + l_base + offs_m * stride_lt, mask=rows, other=0.0) * _LOG2E
        delta = tl.load(DELTA + l_base + offs_m * stride_lt, mask=rows, other=0.0)
        hi_m = tl.load(TIME_HI + t_base + offs_m, mask=rows, other=0.0)
        lo_m = tl.load(TIME_LO + t_base + offs_m, mask=rows, other=0.0)
        gap_t = _gap(hi_n, lo_n, hi_m, lo_m)  # [BLOCK_N, BLOCK_M]
        s_t = tl.dot(k, q_t, input_precision=DOT_PRECISION) * scale2
        s_t += _bias2(gap_t, rate2, table_row, bucket_scale, num_buckets, DECAY_FN, BUCKETING)
        allowed_t = tl.trans(_allowed(offs_m, offs_n, length, window, CAUSAL, HAS_WINDOW))
        p_t = tl.where(allowed_t, tl.exp2(s_t - lse2[None, :]), 0.0)  # P^T [BLOCK_N, BLOCK_M]
        grad_v += _dot_visible(p_t.to(grad_out.dtype), grad_out, allowed_t, DOT_PRECISION)
        grad_p_t = tl.dot(v, tl.trans(grad_out), input_precision=DOT_PRECISION)
        # dS^T, natural-log units; set (not multiplied) to 0 where masked: dP may be NaN there.
        grad_s_t = tl.where(allowed_t, p_t * (grad_p_t - delta[None, :]), 0.0)
        grad_k += _dot_visible(grad_s_t.to(q_t.dtype), tl.trans(q_t), allowed_t, DOT_PRECISION)
        if DECAY_FN != 0:
            rate_sum += tl.sum(grad_s_t * _phi(gap_t, DECAY_FN), 1)
        if BUCKETING != 0:
            # Deterministic histogram: one pass per bucket present in the tile.
            bucket = _bucket(gap_t, bucket_scale, num_buckets, BUCKETING)
            first = tl.min(tl.where(allowed_t, bucket, num_buckets))
            last = tl.max(tl.where(allowed_t, bucket, -1))
            for index in range(first, last + 1):
                in_bucket = tl.sum(tl.where(bucket == index, grad_s_t, 0.0))
                table_sum += tl.where(offs_b == index, in_bucket, 0.0)

    stored = offs_n < (length if JAGGED else seq_len)
    gk_base = GRAD_K + head * stride_kb + h * stride_kh + start * stride_kt
    gv_base = GRAD_V + head * stride_vb + h * stride_vh + start * stride_vt
    store_mask = stored[:, None] & dims[None, :]
    tl.store(gk_base + offs_n[:, None] * stride_kt + offs_d[None, :],
             (grad_k * scale).to(GRAD_K.dtype.element_ty), mask=store_mask)
    tl.store(gv_base + offs_n[:, None] * stride_vt + offs_d[None, :],
             grad_v.to(GRAD_V.dtype.element_ty), mask=store_mask)
    partial = pid_bh.to(tl.int64) * num_blocks + pid_n
    if DECAY_FN != 0:  # d s / d rate = -phi
        tl.store(RATE_PARTIAL + partial, -tl.sum(rate_sum))
    if BUCKETING != 0:
        tl.store(TABLE_PARTIAL + partial * num_buckets + offs_b, table_sum,
                 mask=offs_b < num_buckets)


@triton.autotune(configs=_configs(QUERY_BLOCKS), key=TUNING_KEY)
@triton.jit
def _query_kernel(
        Q, K, V, GRAD, LSE, DELTA, TIME_HI, TIME_LO, RATE, TABLE, LENGTHS, CU_SEQLENS, GRAD_Q,
        stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
        stride_vb, stride_vh, stride_vt, stride_gb, stride_gh, stride_gt,
        stride_lb, stride_lh, stride_lt, stride_tb,
        num_heads, seq_len, total, num_buckets, scale, scale2, bucket_scale, window, SEQ_BUCKET,
        HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
        JAGGED: tl.constexpr, HAS_LENGTHS: tl.constexpr, HAS_WINDOW: tl.constexpr,
        DECAY_FN: tl.constexpr, BUCKETING: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_bh, pid_m = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // num_heads, pid_bh % num_heads
    start, length = _sequence(b, LENGTHS, CU_SEQLENS, seq_len, total, JAGGED, HAS_LENGTHS)
    head = b.to(tl.int64)
    q_base = Q + head * stride_qb + h * stride_qh + start * stride_qt
    k_base = K + head * stride_kb + h * stride_kh + start * stride_kt
    v_base = V + head * stride_vb + h * stride_vh + start * stride_vt
    g_base = GRAD + head * stride_gb + h * stride_gh + start * stride_gt
    l_base = head * stride_lb + h * stride_lh + start * stride_lt
    t_base = head * stride_tb + start

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    rows = offs_m < length
    dims = offs_d < HEAD_DIM
    row_mask = rows[:, None] & dims[None, :]
    q = tl.load(q_base + offs_m[:, None] * stride_qt + offs_d[None, :], mask=row_mask, other=0.0)
    grad_out = tl.load(g_base + offs_m[:, None] * stride_gt + offs_d[None, :], mask=row_mask,
                       other=0.0)
    lse2 = tl.load(LSE + l_base + offs_m * stride_lt, mask=rows, other=0.0) * _LOG2E
    delta = tl.load(DELTA + l_base + offs_m * stride_lt, mask=rows, other=0.0)
    hi_m = tl.load(TIME_HI + t_base + offs_m, mask=rows, other=0.0)
    lo_m = tl.load(TIME_LO + t_base + offs_m, mask=rows, other=0.0)
    rate2 = 0.0
    if DECAY_FN != 0:
        rate2 = tl.load(RATE + h) * _LOG2E
    table_row = TABLE + h * num_buckets

    grad_q = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi = _key_range(pid_m * BLOCK_M, length, window, BLOCK_M, BLOCK_N, CAUSAL, HAS_WINDOW)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        cols = offs_n < length
        col_mask = cols[None, :] & dims[:, None]
        k_t = tl.load(k_base + offs_n[None, :] * stride_kt + offs_d[:, None], mask=col_mask,
                      other=0.0)  # [BLOCK_D, BLOCK_N]
        v_t = tl.load(v_base + offs_n[None, :] * stride_vt + offs_d[:, None], mask=col_mask,
                      other=0.0)
        hi_n = tl.load(TIME_HI + t_base + offs_n, mask=cols, other=0.0)
        lo_n = tl.load(TIME_LO + t_base + offs_n, mask=cols, other=0.0)
        s = tl.dot(q, k_t, input_precision=DOT_PRECISION) * scale2
        s += _bias2(_gap(hi_m, lo_m, hi_n, lo_n), rate2, table_row, bucket_scale, num_buckets,
                    DECAY_FN, BUCKETING)
        allowed = _allowed(offs_m, offs_n, length, window, CAUSAL, HAS_WINDOW)
        p = tl.where(allowed, tl.exp2(s - lse2[:, None]), 0.0)  # [BLOCK_M, BLOCK_N]
        grad_p = tl.dot(grad_out, v_t, input_precision=DOT_PRECISION)
        grad_s = tl.where(allowed, p * (grad_p - delta[:, None]), 0.0)
        grad_q += _dot_visible(grad_s.to(k_t.dtype), tl.trans(k_t), allowed, DOT_PRECISION)

    stored = offs_m < (length if JAGGED else seq_len)
    gq_base = GRAD_Q + head * stride_qb + h * stride_qh + start * stride_qt
    tl.store(gq_base + offs_m[:, None] * stride_qt + offs_d[None, :],
             (grad_q * scale).to(GRAD_Q.dtype.element_ty), mask=stored[:, None] & dims[None, :])


# ---- launchers -----------------------------------------------------------------------------


def _contiguous_rows(x):
    """``x`` with a contiguous last dimension (kernels address the rest through strides)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _strides(x, jagged):
    """(batch, head, token) strides of [B, H, L, .] or jagged [T, H, .] (batch stride 0)."""
    return (0, x.stride(1), x.stride(0)) if jagged else (x.stride(0), x.stride(1), x.stride(2))


class _Launch:
    """Shapes, dummies and compile-time switches shared by the three kernels of one call."""

    def __init__(self, q, time_hi, rate, time_bias, lengths, cu_seqlens, max_seqlen, causal,
                 scale, decay_fn, bucketing, bucket_scale, window):
        self.jagged = cu_seqlens is not None
        if self.jagged:  # no sequence is longer than all the tokens
            self.total, self.heads, self.head_dim = q.shape
            self.batch, self.seq_len = cu_seqlens.shape[0] - 1, max(0, min(max_seqlen,
                                                                            self.total))
        else:
            self.batch, self.heads, self.seq_len, self.head_dim = q.shape
            self.total = self.batch * self.seq_len
        dummy = time_hi
        self.rate = rate.float().contiguous() if rate is not None else dummy
        self.table = time_bias.float().contiguous() if time_bias is not None else dummy
        self.num_buckets = time_bias.shape[1] if time_bias is not None else 1
        self.lengths = lengths if lengths is not None else cu_seqlens
        self.cu_seqlens = cu_seqlens if cu_seqlens is not None else lengths
        if self.lengths is None:
            self.lengths = self.cu_seqlens = torch.zeros(1, dtype=torch.int32, device=q.device)
        self.scale = scale
        self.bucket_scale = bucket_scale
        # A window of L - 1 or more limits nothing; keeping it below L keeps the kernels' int32
        # position arithmetic (query + block + window) from overflowing.
        self.window = min(window or 0, self.seq_len)
        self.constants = dict(
            SEQ_BUCKET=triton.next_power_of_2(max(self.seq_len, 1)), HEAD_DIM=self.head_dim,
            BLOCK_D=max(16, triton.next_power_of_2(self.head_dim)), CAUSAL=causal,
            JAGGED=self.jagged, HAS_LENGTHS=lengths is not None, HAS_WINDOW=window is not None,
            DECAY_FN=DECAY_FN_CODES[decay_fn if rate is not None else None],
            BUCKETING=BUCKETING_CODES[bucketing if time_bias is not None else None],
            DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32")

    @property
    def empty(self):
        return self.batch * self.heads * self.seq_len * self.total == 0

    def grid(self, block):
        # B * H on the first axis: it allows 2^31 - 1 programs, the second only 65535.
        return lambda meta: (self.batch * self.heads, triton.cdiv(self.seq_len, meta[block]))

    def time_stride(self):
        return 0 if self.jagged else self.seq_len


def time_decay_attention_forward(q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens,
                                 max_seqlen, causal, scale, decay_fn, bucketing, bucket_scale,
                                 window):
    """Launch the forward kernel -> (out like q, lse [B, H, L] or [T, H] float32).

    Same contract as ``stseq.cpu.attention.time_decay_attention_forward``.
    q, k, v: float32, bfloat16 or float16 on a CUDA device (or on the CPU
    under ``TRITON_INTERPRET=1``).

    Example::

        out, lse = time_decay_attention_forward(q, k, v, hi, lo, rate, None, None, None, None,
                                                True, 0.125, "abs", "log", 1.0, None)
    """
    launch = _Launch(q, time_hi, rate, time_bias, lengths, cu_seqlens, max_seqlen, causal, scale,
                     decay_fn, bucketing, bucket_scale, window)
    q, k, v = (_contiguous_rows(x) for x in (q, k, v))
    out = torch.zeros(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.zeros(q.shape[:-1], dtype=torch.float32, device=q.device)
    if launch.empty:
        return out, lse
    jagged = launch.jagged
    _forward_kernel[launch.grid("BLOCK_M")](
        q, k, v, time_hi, time_lo, launch.rate, launch.table, launch.lengths, launch.cu_seqlens,
        out, lse, *_strides(q, jagged), *_strides(k, jagged), *_strides(v, jagged),
        *_strides(out, jagged), *_strides(lse, jagged), launch.time_stride(),
        launch.heads, launch.seq_len, launch.total, launch.num_buckets, scale * LOG2E,
        launch.bucket_scale, launch.window, **launch.constants)
    return out, lse


def time_decay_attention_backward(grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias,
                                  lengths, cu_seqlens, max_seqlen, causal, scale, decay_fn,
                                  bucketing, bucket_scale, window):
    """Launch the backward kernels -> (grad_q, grad_k, grad_v, grad_rate [H] or None,
    grad_time_bias [H, NB] or None).

    The dK/dV kernel writes one partial decay-rate sum (and one bucket-table histogram) per
    program; they are summed here, so the result is deterministic.

    Example::

        grads = time_decay_attention_backward(grad, q, k, v, out, lse, hi, lo, rate, None, None,
                                              None, None, True, 0.125, "abs", "log", 1.0, None)
    """
    launch = _Launch(q, time_hi, rate, time_bias, lengths, cu_seqlens, max_seqlen, causal, scale,
                     decay_fn, bucketing, bucket_scale, window)
    # Contiguous, so that each gradient shares the strides of its input.
    grad, q, k, v = (x.contiguous() for x in (grad, q, k, v))
    grad_q, grad_k, grad_v = (torch.zeros_like(x) for x in (q, k, v))
    num_blocks = triton.cdiv(max(launch.seq_len, 1), _smallest_key_block())
    programs = launch.batch * launch.heads
    rate_partial = torch.zeros(programs, num_blocks, dtype=torch.float32, device=q.device)
    table_partial = torch.zeros(programs, num_blocks, launch.num_buckets, dtype=torch.float32,
                                device=q.device)
    if not launch.empty:
        delta = (grad.float() * out.float()).sum(-1)  # like lse: sum_j P_ij dP_ij
        lse, delta = lse.contiguous(), delta.contiguous()
        jagged = launch.jagged
        strides = (*_strides(q, jagged), *_strides(k, jagged), *_strides(v, jagged),
                   *_strides(grad, jagged), *_strides(lse, jagged), launch.time_stride())
        common = (time_hi, time_lo, launch.rate, launch.table, launch.lengths, launch.cu_seqlens)
        _key_value_kernel[launch.grid("BLOCK_N")](
            q, k, v, grad, lse, delta, *common, grad_k, grad_v, rate_partial, table_partial,
            *strides, launch.heads, launch.seq_len, launch.total, launch.num_buckets, num_blocks,
            scale, scale * LOG2E, launch.bucket_scale, launch.window,
            BLOCK_B=triton.next_power_of_2(launch.num_buckets), **launch.constants)
        _query_kernel[launch.grid("BLOCK_M")](
            q, k, v, grad, lse, delta, *common, grad_q, *strides, launch.heads, launch.seq_len,
            launch.total, launch.num_buckets, scale, scale * LOG2E, launch.bucket_scale,
            launch.window, **launch.constants)
    grad_rate = grad_table = None
    if rate is not None:
        grad_rate = rate_partial.view(launch.batch, launch.heads, -1).sum((0, 2)).to(rate.dtype)
    if time_bias is not None:
        grad_table = table_partial.view(launch.batch, launch.heads, -1, launch.num_buckets).sum(
            (0, 2)).to(time_bias.dtype)
    return grad_q, grad_k, grad_v, grad_rate, grad_table
