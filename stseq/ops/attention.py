"""``time_decay_attention``: attention with a learnable time-decay bias computed in the kernel.

Triton op ``torch.ops.stseq.time_decay_attention`` (registered here with
``torch.library.custom_op``, a fake impl for ``torch.compile`` and an autograd formula whose
backward is the op ``torch.ops.stseq.time_decay_attention_backward``). Its ``implementation``
argument runs the Triton kernels (``stseq.triton.attention``) or the chunked CPU path
(``stseq.cpu.attention``, what the "reference" backend runs for this op); both return the output
and the log-sum-exp of each query, and both recompute the probabilities in backward. The oracle
both are tested against is ``stseq.reference.attention``. The op's options (``DECAY_FNS``,
``BUCKETINGS``, ``HSTU_BUCKET_SCALE``) are defined here.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from stseq.backends import current_backend, resolve
from stseq.ops.checks import (TIMESTAMP_DTYPES, check_choice, check_int, check_positive,
                              check_sequences, check_tensor, timestamp_range_error,
                              timestamp_range_faults)
from stseq.cpu.attention import time_decay_attention_backward, time_decay_attention_forward
from stseq.reference.attention import attention_weights

OP = "time_decay_attention"
DECAY_FNS = ("abs", "log1p", "sqrt")
BUCKETINGS = ("log", "sqrt")
# HSTU's relative time buckets: floor(ln(gap) / 0.301).
HSTU_BUCKET_SCALE = 1 / 0.301
HEAD_DIMS = (16, 128)
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Seconds; 2^63 s / 1e-18 s ~ 9e36 time units, inside float32's range (3.4e38).
MIN_TIME_UNIT = 1e-18


def time_decay_attention(q, k, v, timestamps, decay, *, causal=True, lengths=None,
                         cu_seqlens=None, max_seqlen=None, scale=None, decay_fn="abs",
                         time_unit=1.0, time_bias=None, bucketing="log",
                         bucket_scale=HSTU_BUCKET_SCALE, window=None, backend=None):
    """Scaled dot-product attention whose scores are biased by the time between events.

    Per head h, query i and key j of one sequence::

        gap    = |t_i - t_j| / time_unit
        s_ij   = scale * q_i . k_j - softplus(decay[h]) * phi(gap)        # phi: decay_fn
                 + time_bias[h, min(NB - 1, floor(bucket_scale * f(gap)))]  # if time_bias
        out_i  = sum_j softmax_j(s_ij) v_j     over keys j <= i (causal), |i - j| <= window

    with phi = identity ("abs"), log1p or sqrt and f = log1p ("log") or sqrt ("sqrt"). The
    bias is computed inside the kernel from per-token times: no [L, L] tensor is materialised.

    Args:
        q, k, v: [B, H, L, D] (padded) or [T, H, D] (jagged, with ``cu_seqlens``); one floating
            dtype; D in [16, 128].
        timestamps: [B, L] or [T], int64 seconds or float64, non-decreasing within a sequence.
            Each sequence's first event is subtracted in int64/float64 before any float32 math.
        decay: [H] learnable decay (rate = softplus(decay) >= 0), or None for no decay term.
        causal: mask keys after the query.
        lengths: [B] integer (padded layout); queries and keys past a row's length are padding
            (their outputs are 0).
        cu_seqlens: [B + 1] integer offsets of the sequences in the jagged layout (0 first, T
            last); max_seqlen: their longest length (computed when None, which syncs).
        scale: score scale, 1 / sqrt(D) by default.
        decay_fn: "abs", "log1p" or "sqrt".
        time_unit: seconds per unit of gap.
        time_bias: [H, NB] learnable table of a bucketed relative time bias (HSTU-style), or
            None; bucketing "log" or "sqrt"; bucket_scale: buckets per unit of f(gap) (the
            default 1 / 0.301 is HSTU's).
        window: attend only to keys at most this many positions away (None: no limit).
        backend: "auto" (Triton on CUDA, the chunked CPU path on CPU), "triton" or
            "reference" (see ``stseq.use_backend``).

    Returns:
        out like q. Gradients flow to q, k, v, decay and time_bias.

    Example::

        q, k, v = torch.randn(3, 2, 4, 50, 32).unbind(0)          # [B, H, L, D]
        ts = 1_700_000_000 + torch.randint(0, 3600, (2, 50)).cumsum(1)
        decay = torch.zeros(4, requires_grad=True)
        out = stseq.ops.time_decay_attention(q, k, v, ts, decay, time_unit=3600.0)
    """
    max_seqlen = _check_arguments(q, k, v, timestamps, decay, lengths, cu_seqlens, max_seqlen,
                                  scale, decay_fn, time_unit, time_bias, bucketing, bucket_scale,
                                  window)
    implementation = _implementation(backend, q)
    time_hi, time_lo = relative_times(timestamps, time_unit, lengths=lengths,
                                      cu_seqlens=cu_seqlens, float64=q.dtype == torch.float64)
    accumulate = torch.float64 if q.dtype == torch.float64 else torch.float32
    rate = F.softplus(decay.to(accumulate)) if decay is not None else None
    out, _ = torch.ops.stseq.time_decay_attention(
        q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens, max_seqlen,
        bool(causal), float(q.shape[-1] ** -0.5 if scale is None else scale), decay_fn, bucketing,
        float(bucket_scale), -1 if window is None else window, implementation)
    return out


def time_decay_attention_weights(q, k, timestamps, decay, *, causal=True, lengths=None,
                                 scale=None, decay_fn="abs", time_unit=1.0, time_bias=None,
                                 bucketing="log", bucket_scale=HSTU_BUCKET_SCALE, window=None):
    """The probabilities [B, H, L, L] that :func:`time_decay_attention` (padded layout, same
    arguments less v) weights the values with, materialised: O(L^2) memory, for inspection
    (``need_weights``) rather than training. 0 at masked pairs and for padded queries.

    Example::

        q, k = torch.randn(2, 2, 4, 50, 32).unbind(0)             # [B, H, L, D]
        ts = 1_700_000_000 + torch.randint(0, 3600, (2, 50)).cumsum(1)
        weights = time_decay_attention_weights(q, k, ts, torch.zeros(4))  # [2, 4, 50, 50]
    """
    _check_arguments(q, k, k, timestamps, decay, lengths, None, None, scale, decay_fn, time_unit,
                     time_bias, bucketing, bucket_scale, window)
    return attention_weights(q, k, timestamps, decay, causal=causal, lengths=lengths,
                             scale=scale, decay_fn=decay_fn, time_unit=time_unit,
                             time_bias=time_bias, bucketing=bucketing,
                             bucket_scale=bucket_scale, window=window)


def relative_times(timestamps, time_unit, *, lengths=None, cu_seqlens=None, float64=False):
    """Each token's time since its sequence's first event, in ``time_unit``s, as a float32 pair
    (hi, lo) with hi + lo equal to it to about 2^-48 relative: (hi_i - hi_j) + (lo_i - lo_j) is
    the gap of two tokens to float32 precision of the gap itself. The subtraction is done in
    int64 (exact) or float64; padding gets 0. With ``float64`` (float64 q, k, v: the chunked
    path) hi is the float64 time itself and lo 0, so that gaps keep float64 precision.

    timestamps [B, L] (with lengths [B]) or [T] (with cu_seqlens [B + 1]) -> two [B, L] / [T].

    Example::

        hi, lo = relative_times(torch.tensor([[1_700_000_000, 1_700_000_001]]), 1.0)
        # hi = [[0., 1.]], lo = [[0., 0.]]
    """
    if cu_seqlens is None:
        elapsed = (timestamps - timestamps[:, :1]).double() / time_unit  # [B, L]
        if lengths is not None:
            valid = torch.arange(timestamps.shape[1], device=timestamps.device) < lengths[:, None]
            elapsed = torch.where(valid, elapsed, 0.0)
    else:
        token = torch.arange(timestamps.shape[0], device=timestamps.device)
        sequence = torch.searchsorted(cu_seqlens[1:], token, right=True)  # [T]
        elapsed = (timestamps - timestamps[cu_seqlens[sequence]]).double() / time_unit
    if float64:
        return elapsed, torch.zeros_like(elapsed)
    hi = elapsed.float()
    return hi, (elapsed - hi.double()).float()


def _implementation(backend, q):
    """"triton" or "reference" for ``q``. ``auto`` runs Triton on CUDA only: on the CPU the
    Triton interpreter is a test vehicle, and the chunked CPU path (``stseq.cpu.attention``,
    run for "reference") is the fast one."""
    choice = resolve(OP, backend, q.device, native=False, triton=True)
    automatic = backend in (None, "auto") and current_backend() == "auto"
    if choice == "triton" and automatic and (q.device.type != "cuda"
                                             or q.dtype not in TRITON_DTYPES):
        return "reference"
    if choice == "triton" and q.dtype not in TRITON_DTYPES:
        raise ValueError(f"the Triton kernels of {OP} take float32, bfloat16 or float16 q, k, v; "
                         f"got {q.dtype} (use backend='reference')")
    return choice


# ---- argument checks -----------------------------------------------------------------------


def _check_qkv(q, k, v, jagged):
    layout = "[T, H, D] (jagged, with cu_seqlens)" if jagged else "[B, H, L, D]"
    check_tensor(q, "q", rank=None, shape=layout)
    if q.dim() != (3 if jagged else 4):
        raise ValueError(f"q must have shape {layout}, got {tuple(q.shape)}")
    if not q.dtype.is_floating_point:
        raise ValueError(f"q must be a floating-point tensor, got {q.dtype}")
    for name, x in (("k", k), ("v", v)):
        check_tensor(x, name, rank=None, shape=layout)
        if x.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {tuple(q.shape)}, got "
                             f"{tuple(x.shape)}")
        if x.dtype != q.dtype:
            raise ValueError(f"q, k and v must share one dtype; q is {q.dtype} but {name} is "
                             f"{x.dtype}")
        if x.device != q.device:
            raise ValueError(f"{name} is on {x.device} but q is on {q.device}")
    if not HEAD_DIMS[0] <= q.shape[-1] <= HEAD_DIMS[1]:
        raise ValueError(f"head dim D = q.shape[-1] must be in [{HEAD_DIMS[0]}, {HEAD_DIMS[1]}], "
                         f"got {q.shape[-1]}")


def _check_parameters(decay, time_bias, heads, device):
    if decay is not None:
        check_tensor(decay, "decay", rank=1, shape="[H]", device=device)
        if decay.shape[0] != heads or not decay.dtype.is_floating_point:
            raise ValueError(f"decay must be a floating-point [H] = [{heads}] tensor, got "
                             f"{tuple(decay.shape)} {decay.dtype}")
    if time_bias is not None:
        check_tensor(time_bias, "time_bias", rank=2, shape="[H, NB]", device=device)
        if time_bias.shape[0] != heads or time_bias.shape[1] < 1:
            raise ValueError(f"time_bias must have shape [H, NB] = [{heads}, >= 1], got "
                             f"{tuple(time_bias.shape)}")
        if not time_bias.dtype.is_floating_point:
            raise ValueError(f"time_bias must be a floating-point tensor, got {time_bias.dtype}")


def _check_options(scale, decay_fn, time_unit, bucketing, bucket_scale, window):
    if scale is not None:
        check_positive(scale, "scale")
    check_choice(decay_fn, "decay_fn", DECAY_FNS)
    check_positive(time_unit, "time_unit")
    if time_unit < MIN_TIME_UNIT:
        raise ValueError(f"time_unit must be >= {MIN_TIME_UNIT} s (gaps of up to 2^63 s in "
                         f"smaller units pass float32's range), got {time_unit!r}")
    check_choice(bucketing, "bucketing", BUCKETINGS)
    check_positive(bucket_scale, "bucket_scale")
    if window is not None:
        check_int(window, "window", 0)


def _check_arguments(q, k, v, timestamps, decay, lengths, cu_seqlens, max_seqlen, scale,
                     decay_fn, time_unit, time_bias, bucketing, bucket_scale, window):
    """Check every argument; return max_seqlen (the padded L for the padded layout)."""
    jagged = cu_seqlens is not None
    _check_qkv(q, k, v, jagged)
    _check_parameters(decay, time_bias, q.shape[1], q.device)
    _check_options(scale, decay_fn, time_unit, bucketing, bucket_scale, window)
    if not jagged:
        if max_seqlen is not None:
            raise ValueError("max_seqlen goes with cu_seqlens (the jagged layout)")
        check_tensor(timestamps, "timestamps", rank=2, shape="[B, L]", device=q.device)
        batch, _, seq_len, _ = q.shape
        if tuple(timestamps.shape) != (batch, seq_len):
            raise ValueError(f"timestamps must have shape [B, L] = [{batch}, {seq_len}], got "
                             f"{tuple(timestamps.shape)}")
        check_sequences(timestamps, lengths)
        return seq_len
    if lengths is not None:
        raise ValueError("lengths is for the padded layout; the jagged layout takes cu_seqlens")
    total = q.shape[0]
    check_tensor(timestamps, "timestamps", rank=1, shape="[T]", device=q.device)
    if timestamps.dtype not in TIMESTAMP_DTYPES:
        raise ValueError("timestamps must be int64 (seconds) or float64, got "
                         f"{timestamps.dtype}; convert with .long() or .double()")
    if timestamps.shape[0] != total:
        raise ValueError(f"timestamps must have T = {total} entries (q.shape[0]), got "
                         f"{timestamps.shape[0]}")
    check_tensor(cu_seqlens, "cu_seqlens", rank=1, shape="[B + 1]", device=q.device)
    if cu_seqlens.dtype not in (torch.int32, torch.int64) or cu_seqlens.shape[0] < 1:
        raise ValueError(f"cu_seqlens must be an int32 or int64 [B + 1] tensor, got "
                         f"{cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
    if max_seqlen is not None:
        check_int(max_seqlen, "max_seqlen", 0)
    if torch.compiler.is_compiling():
        if max_seqlen is None:
            raise ValueError("max_seqlen is required under torch.compile")
        return max_seqlen
    return _check_jagged_values(timestamps, cu_seqlens, max_seqlen)


def _check_jagged_values(timestamps, cu_seqlens, max_seqlen):
    """Data checks of the jagged layout (a few device synchronisations; skipped while
    compiling); returns max_seqlen."""
    total = timestamps.shape[0]
    steps = cu_seqlens[1:] - cu_seqlens[:-1]  # sequence lengths [B]
    if cu_seqlens[0].item() != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {cu_seqlens[0].item()}")
    if (steps < 0).any():
        index = int(torch.nonzero(steps < 0)[0]) + 1
        raise ValueError(f"cu_seqlens must be non-decreasing; cu_seqlens[{index}] = "
                         f"{cu_seqlens[index].item()} < cu_seqlens[{index - 1}] = "
                         f"{cu_seqlens[index - 1].item()}")
    if cu_seqlens[-1].item() != total:
        raise ValueError(f"cu_seqlens must end at T = {total} (q.shape[0]), got "
                         f"{cu_seqlens[-1].item()}")
    longest = int(steps.max()) if steps.numel() else 0
    if max_seqlen is not None and max_seqlen < longest:
        sequence = int(torch.argmax(steps))
        raise ValueError(f"max_seqlen = {max_seqlen} is shorter than sequence {sequence} "
                         f"({longest} tokens)")
    token = torch.arange(total, device=timestamps.device)
    sequence = torch.searchsorted(cu_seqlens[1:], token, right=True)  # [T]
    position = token - cu_seqlens[sequence]
    first = timestamps[cu_seqlens[sequence]]  # [T]: each token's sequence's first event
    nonfinite = ~torch.isfinite(timestamps) if timestamps.dtype.is_floating_point else None
    decreasing = torch.zeros_like(token, dtype=torch.bool)
    decreasing[1:] = (timestamps[1:] < timestamps[:-1]) & (position[1:] > 0)
    out_of_range = timestamp_range_faults(timestamps, first, torch.ones_like(decreasing))
    for bad in (nonfinite, decreasing, out_of_range):
        if bad is not None and bad.any():
            index = int(torch.nonzero(bad)[0])
            where = (f"sequence {sequence[index].item()}, position {position[index].item()} "
                     f"(token {index})")
            value = timestamps[index].item()
            if bad is nonfinite:
                raise ValueError(f"timestamps must be finite; {where} has {value}")
            if bad is decreasing:
                raise ValueError(f"timestamps must be non-decreasing within each sequence; "
                                 f"{where} decreases ({timestamps[index - 1].item()} -> {value})")
            raise timestamp_range_error(where, value, first[index].item())
    return longest if max_seqlen is None else max_seqlen


# ---- the registered ops --------------------------------------------------------------------


def _kernels(implementation):
    """(forward, backward) functions of ``implementation``: "triton" or "reference"."""
    if implementation == "triton":
        from stseq.triton.attention import (time_decay_attention_backward as backward,
                                            time_decay_attention_forward as forward)

        return forward, backward
    return time_decay_attention_forward, time_decay_attention_backward


@torch.library.custom_op("stseq::time_decay_attention", mutates_args=())
def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, time_hi: torch.Tensor,
               time_lo: torch.Tensor, rate: Optional[torch.Tensor],
               time_bias: Optional[torch.Tensor], lengths: Optional[torch.Tensor],
               cu_seqlens: Optional[torch.Tensor], max_seqlen: int, causal: bool, scale: float,
               decay_fn: str, bucketing: str, bucket_scale: float, window: int,
               implementation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (out like q, lse [B, H, L] or [T, H]); window -1 for none."""
    return _kernels(implementation)[0](
        q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens, max_seqlen, causal,
        scale, decay_fn, bucketing, bucket_scale, None if window < 0 else window)


@torch.library.custom_op("stseq::time_decay_attention_backward", mutates_args=())
def _attention_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        out: torch.Tensor, lse: torch.Tensor, time_hi: torch.Tensor,
                        time_lo: torch.Tensor, rate: Optional[torch.Tensor],
                        time_bias: Optional[torch.Tensor], lengths: Optional[torch.Tensor],
                        cu_seqlens: Optional[torch.Tensor], max_seqlen: int, causal: bool,
                        scale: float, decay_fn: str, bucketing: str, bucket_scale: float,
                        window: int, implementation: str
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                   torch.Tensor]:
    """-> (grad_q, grad_k, grad_v, grad_rate [H] or [0], grad_time_bias [H, NB] or [0])."""
    grad_q, grad_k, grad_v, grad_rate, grad_bias = _kernels(implementation)[1](
        grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens,
        max_seqlen, causal, scale, decay_fn, bucketing, bucket_scale,
        None if window < 0 else window)
    # A fresh empty tensor for each absent input: a custom op's outputs may not alias.
    return (grad_q, grad_k, grad_v, grad_rate if grad_rate is not None else q.new_empty(0),
            grad_bias if grad_bias is not None else q.new_empty(0))


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@_attention.register_fake
def _(q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens, max_seqlen, causal, scale,
      decay_fn, bucketing, bucket_scale, window, implementation):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q))


@_attention_backward.register_fake
def _(grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens,
      max_seqlen, causal, scale, decay_fn, bucketing, bucket_scale, window, implementation):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
            rate.new_empty(rate.shape) if rate is not None else q.new_empty(0),
            time_bias.new_empty(time_bias.shape) if time_bias is not None else q.new_empty(0))


def _setup_context(ctx, inputs, output):
    q, k, v, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens, *ctx.config = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, out, lse, time_hi, time_lo, rate, time_bias, lengths,
                          cu_seqlens)


def _backward(ctx, grad, _grad_lse):
    q, k, v, out, lse, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens = ctx.saved_tensors
    grad_q, grad_k, grad_v, grad_rate, grad_bias = torch.ops.stseq.time_decay_attention_backward(
        grad, q, k, v, out, lse, time_hi, time_lo, rate, time_bias, lengths, cu_seqlens,
        *ctx.config)
    return (grad_q, grad_k, grad_v, None, None, grad_rate if rate is not None else None,
            grad_bias if time_bias is not None else None) + (None,) * 10


torch.library.register_autograd("stseq::time_decay_attention", _backward,
                                setup_context=_setup_context)
