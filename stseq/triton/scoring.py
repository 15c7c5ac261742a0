"""Triton kernels of ``item_logsumexp`` (Cut Cross-Entropy style): the log-sum-exp of each
row's scores over all items, tile by tile, never storing the [M, N] scores.

- ``_forward_kernel``: grid (row blocks); online max/sum over the item blocks; writes lse [M].
- ``_hidden_grad_kernel``: grid (row blocks); recomputes P = exp(S - lse) * grad per item block
  and accumulates d_hidden = P @ W.
- ``_weight_grad_kernel``: grid (item blocks); recomputes P per row block and accumulates
  d_weight = P^T @ hidden and d_bias = sum over rows of P.

Each output tile is written by exactly one program that loops in a fixed order: no atomics,
bitwise reproducible gradients. With ``FILTER`` the backward skips a tile whose softmax values
are all below 2^-24 (float32's resolution next to 1: they cannot change a float32 gradient
sum), as CCE's gradient filter does; without it the backward is exact.

float32 products use IEEE float32 (no TF32) so that float32 parity holds; float16 and bfloat16
inputs are multiplied in their dtype with float32 accumulation. A NaN score makes its row NaN
and a +inf score makes it +inf, as ``torch.logsumexp`` does.
"""

import os

import torch
import triton
import triton.language as tl

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
# (BLOCK_M, BLOCK_N) tiles: small under the interpreter so that tiny tests span several tiles.
BLOCKS = (16, 16) if INTERPRETING else (64, 64)
FILTER_THRESHOLD = 2.0 ** -24
MAX_DIM = 256


@triton.jit
def _scores(h, W, B, offs_n, offs_d, N, D, stride_w, HAS_BIAS: tl.constexpr,
            PRECISION: tl.constexpr):
    """[BLOCK_M, BLOCK_N] float32 scores of the rows ``h`` against items ``offs_n`` (-inf past
    N)."""
    valid_n = offs_n < N
    w = tl.load(W + offs_n[:, None] * stride_w + offs_d[None, :],
                mask=valid_n[:, None] & (offs_d < D)[None, :], other=0.0)
    s = tl.dot(h, tl.trans(w), input_precision=PRECISION)
    if HAS_BIAS:
        s += tl.load(B + offs_n, mask=valid_n, other=0.0).to(tl.float32)[None, :]
    return tl.where(valid_n[None, :], s, -float("inf")), w


@triton.jit
def _forward_kernel(H, W, B, LSE, M, N, D, stride_h, stride_w, HAS_BIAS: tl.constexpr,
                    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    h = tl.load(H + offs_m[:, None] * stride_h + offs_d[None, :],
                mask=(offs_m < M)[:, None] & (offs_d < D)[None, :], other=0.0)  # [BM, BD]
    running_max = tl.full((BLOCK_M,), -float("inf"), tl.float32)
    shift = tl.zeros((BLOCK_M,), tl.float32)
    running_sum = tl.zeros((BLOCK_M,), tl.float32)
    nan_seen = tl.zeros((BLOCK_M,), tl.int32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        s, _ = _scores(h, W, B, offs_n, offs_d, N, D, stride_w, HAS_BIAS, PRECISION)
        nan_seen += tl.sum((s != s).to(tl.int32), axis=1)
        s = tl.where(s == s, s, -float("inf"))
        new_max = tl.maximum(running_max, tl.max(s, axis=1))
        new_shift = tl.where(tl.abs(new_max) == float("inf"), 0.0, new_max)
        scale = tl.exp(shift - new_shift)
        rescaled = tl.where(running_sum == 0.0, 0.0, running_sum * scale)
        running_sum = rescaled + tl.sum(tl.exp(s - new_shift[:, None]), axis=1)
        running_max, shift = new_max, new_shift
    lse = tl.log(running_sum) + shift
    lse = tl.where(nan_seen > 0, float("nan"), lse)
    tl.store(LSE + offs_m, lse, mask=offs_m < M)


@triton.jit
def _probabilities(s, lse, grad, offs_n, N, FILTER: tl.constexpr):
    """(P * grad, keep): the softmax of the scores ``s`` [BM, BN] times each row's grad, 0 past
    N; ``keep`` is False when FILTER is on and every value is below 2^-24 (a NaN keeps)."""
    p = tl.exp(s - lse[:, None])
    p = tl.where((offs_n < N)[None, :], p, 0.0)
    keep = True
    if FILTER:
        keep = tl.max(tl.where(p == p, p, 1.0)) >= 5.9604644775390625e-08
    return p * grad[:, None], keep


@triton.jit
def _hidden_grad_kernel(H, W, B, LSE, GRAD, DH, M, N, D, stride_h, stride_w, stride_dh,
                        HAS_BIAS: tl.constexpr, FILTER: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    valid_m = offs_m < M
    h = tl.load(H + offs_m[:, None] * stride_h + offs_d[None, :],
                mask=valid_m[:, None] & (offs_d < D)[None, :], other=0.0)
    lse = tl.load(LSE + offs_m, mask=valid_m, other=0.0)
    grad = tl.load(GRAD + offs_m, mask=valid_m, other=0.0).to(tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        s, w = _scores(h, W, B, offs_n, offs_d, N, D, stride_w, HAS_BIAS, PRECISION)
        p, keep = _probabilities(s, lse, grad, offs_n, N, FILTER)
        if keep:
            acc += tl.dot(p.to(w.dtype), w, input_precision=PRECISION)
    tl.store(DH + offs_m[:, None] * stride_dh + offs_d[None, :], acc,
             mask=valid_m[:, None] & (offs_d < D)[None, :])


@triton.jit
def _weight_grad_kernel(H, W, B, LSE, GRAD, DW, DB, M, N, D, stride_h, stride_w, stride_dw,
                        HAS_BIAS: tl.constexpr, FILTER: tl.constexpr, PRECISION: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    acc_bias = tl.zeros((BLOCK_N,), tl.float32)
    for start in range(0, M, BLOCK_M):
        offs_m = start + tl.arange(0, BLOCK_M)
        valid_m = offs_m < M
        h = tl.load(H + offs_m[:, None] * stride_h + offs_d[None, :],
                    mask=valid_m[:, None] & (offs_d < D)[None, :], other=0.0)
        lse = tl.load(LSE + offs_m, mask=valid_m, other=0.0)
        grad = tl.load(GRAD + offs_m, mask=valid_m, other=0.0).to(tl.float32)
        s, _ = _scores(h, W, B, offs_n, offs_d, N, D, stride_w, HAS_BIAS, PRECISION)
        p, keep = _probabilities(s, lse, grad, offs_n, N, FILTER)
        p = tl.where(valid_m[:, None], p, 0.0)
        if keep:
            acc += tl.dot(tl.trans(p.to(h.dtype)), h, input_precision=PRECISION)
            acc_bias += tl.sum(p, axis=0)
    valid_n = offs_n < N
    tl.store(DW + offs_n[:, None] * stride_dw + offs_d[None, :], acc,
             mask=valid_n[:, None] & (offs_d < D)[None, :])
    tl.store(DB + offs_n, acc_bias, mask=valid_n)


def _launch_shape(hidden):
    block_m, block_n = BLOCKS
    block_d = max(16, triton.next_power_of_2(hidden.shape[1]))
    precision = "ieee" if hidden.dtype == torch.float32 else None
    return block_m, block_n, block_d, precision


def item_logsumexp_forward(hidden, weight, bias):
    """hidden [M, D], weight [N, D], bias [N] or None (one dtype, D <= 256) -> lse [M] float32."""
    hidden, weight = hidden.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    (rows, dim), items = hidden.shape, weight.shape[0]
    lse = torch.empty(rows, device=hidden.device, dtype=torch.float32)
    block_m, block_n, block_d, precision = _launch_shape(hidden)
    _forward_kernel[(triton.cdiv(rows, block_m),)](
        hidden, weight, weight if bias is None else bias, lse, rows, items, dim,
        hidden.stride(0), weight.stride(0), HAS_BIAS=bias is not None, PRECISION=precision,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    return lse


def item_logsumexp_backward(grad, hidden, weight, bias, lse, gradient_filter):
    """(d_hidden [M, D], d_weight [N, D], d_bias [N]) in the inputs' dtypes."""
    hidden, weight = hidden.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    grad, lse = grad.float().contiguous(), lse.float().contiguous()
    (rows, dim), items = hidden.shape, weight.shape[0]
    grad_hidden = torch.empty(rows, dim, device=hidden.device, dtype=torch.float32)
    grad_weight = torch.empty(items, dim, device=hidden.device, dtype=torch.float32)
    grad_bias = torch.empty(items, device=hidden.device, dtype=torch.float32)
    block_m, block_n, block_d, precision = _launch_shape(hidden)
    common = dict(HAS_BIAS=bias is not None, FILTER=bool(gradient_filter), PRECISION=precision,
                  BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d)
    bias_pointer = weight if bias is None else bias
    _hidden_grad_kernel[(triton.cdiv(rows, block_m),)](
        hidden, weight, bias_pointer, lse, grad, grad_hidden, rows, items, dim,
        hidden.stride(0), weight.stride(0), grad_hidden.stride(0), **common)
    _weight_grad_kernel[(triton.cdiv(items, block_n),)](
        hidden, weight, bias_pointer, lse, grad, grad_weight, grad_bias, rows, items, dim,
        hidden.stride(0), weight.stride(0), grad_weight.stride(0), **common)
    bias_dtype = weight.dtype if bias is None else bias.dtype
    return grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype), grad_bias.to(bias_dtype)
