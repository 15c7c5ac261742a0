"""``item_logsumexp``: the log-sum-exp of each row's scores over the whole item catalogue,
computed in item chunks so that the [M, N] score matrix never exists.

Native op ``torch.ops.stseq.item_logsumexp`` (C++ CPU: one ATen GEMM per item chunk and an
online max/sum), its backward op ``torch.ops.stseq.item_logsumexp_backward`` (recomputes each
chunk's softmax); the Triton op ``torch.ops.stseq.item_logsumexp_triton`` (CUDA, or the CPU
under ``TRITON_INTERPRET=1``) with its backward op; fake impls for ``torch.compile``. The twin
is ``stseq.reference.item_logsumexp`` (``F.linear`` + ``torch.logsumexp``). No CUDA C++ kernel:
on a GPU the op runs the Triton kernels.

``item_cross_entropy``: full-softmax cross-entropy over the catalogue without the [M, N]
logits. Native op ``torch.ops.stseq.item_cross_entropy`` (C++ CPU, Liger-Kernel's fused linear
cross-entropy: per chunk of rows, the scores over all N items, the losses and, when a gradient is
needed, the gradients of their sum, all in the forward; 3 [M, N]-sized GEMMs like
``F.linear`` + ``F.cross_entropy``) and its backward op
``torch.ops.stseq.item_cross_entropy_backward`` (scales the stored gradients by the loss's
grad_output, or recomputes them when that is not one value per counted row); elsewhere
``item_logsumexp`` minus the target's score. The twin is
``stseq.reference.item_cross_entropy`` (``F.linear`` + ``F.cross_entropy``). The losses of
``stseq.models.losses`` are built on both.

Under autocast both ops run as the recurrent ops do: float32 on the CPU (the kernels' dtype),
the autocast dtype on CUDA.
"""

import torch

from stseq import reference
from stseq._native import NATIVE
from stseq.backends import current_backend, resolve
from stseq.ops.checks import check_int

OP = "item_logsumexp"
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Elements of one chunk's [M, C] score block on the CPU (32 MiB of float32): wide enough for
# efficient GEMMs, a small fraction of the [M, N] scores of a real catalogue.
CHUNK_ELEMENTS = 1 << 23
MIN_CHUNK, MAX_CHUNK = 128, 8192
# Scores of one row chunk of item_cross_entropy's native kernel, [rows, N]: 128 MiB of float32,
# but at least 128 rows (fewer re-reads of the [N, D] weight gradient that each chunk adds to).
CROSS_ENTROPY_CHUNK_ELEMENTS, MIN_CHUNK_ROWS = 1 << 25, 128
REDUCTIONS = ("none", "mean", "sum")


def item_logsumexp(hidden, weight, bias=None, *, chunk_size=None, gradient_filter=False,
                   backend=None):
    """log sum_j exp(hidden[m] . weight[j] + bias[j]) over all N items, for each row m.

    The scores are produced and reduced one chunk of items at a time (online max and sum), so
    memory is O(M * chunk) instead of O(M * N); backward recomputes each chunk's softmax
    P = exp(S - lse) and accumulates d_hidden = P W, d_weight = P^T hidden and d_bias, in a
    fixed order (bitwise reproducible). NaN and inf behave as in
    ``torch.logsumexp(F.linear(hidden, weight, bias), dim=1)``.

    Args:
        hidden: [M, D] float32 or float64 (float16/bfloat16 too: float32 accumulation).
        weight: [N, D] item table, hidden's dtype and device; N >= 1.
        bias: [N] item biases or None.
        chunk_size: items per chunk of the native kernel (default: about 2^23 / M, in
            [128, 8192]); the Triton kernel uses its own tiles.
        gradient_filter: let backward skip chunks (tiles on the GPU) whose softmax values are
            all below 2^-24, float32's resolution (CCE's gradient filter); off by default, which
            keeps backward exact. The reference backend is always exact.
        backend: ``"auto"`` (C++ on the CPU, Triton on CUDA), ``"native"``, ``"triton"`` or
            ``"reference"`` (see ``stseq.use_backend``).

    Returns:
        lse [M]: float64 for float64 inputs, float32 otherwise.

    Example::

        hidden = torch.randn(6400, 128, requires_grad=True)
        weight = torch.randn(100_000, 128, requires_grad=True)
        lse = stseq.ops.item_logsumexp(hidden, weight)          # [6400], no [6400, 100000]
        lse.sum().backward()
    """
    dtype = _autocast_dtype(hidden)
    if dtype is not None:
        with torch.autocast(hidden.device.type, enabled=False):
            return item_logsumexp(*_cast((hidden, weight, bias), dtype), chunk_size=chunk_size,
                                  gradient_filter=gradient_filter, backend=backend)
    check_arguments(hidden, weight, bias)
    if chunk_size is None:
        chunk_size = default_chunk_size(hidden.shape[0])
    check_int(chunk_size, "chunk_size", 1)
    if not isinstance(gradient_filter, bool):
        raise TypeError(f"gradient_filter must be a bool, got {type(gradient_filter).__name__}")
    choice = _implementation(backend, hidden)
    if choice == "native":
        return torch.ops.stseq.item_logsumexp(hidden, weight, bias, chunk_size, gradient_filter)
    if choice == "triton":
        return torch.ops.stseq.item_logsumexp_triton(hidden, weight, bias, gradient_filter)
    return reference.item_logsumexp(hidden, weight, bias)


def item_cross_entropy(hidden, weight, bias, targets, *, ignore_index=-100, label_smoothing=0.0,
                       reduction="mean", log_keep=None, log_prior=None, chunk_rows=None,
                       backend=None):
    """``F.cross_entropy(F.linear(hidden, weight, bias), targets, ...)`` without the [M, N]
    logits.

    Native (CPU): per chunk of ``chunk_rows`` rows, the scores over all N items, the losses and,
    when a gradient is needed, the gradients of their sum, all in the forward (three GEMMs, as
    the materialised path); backward scales them by the loss's gradient. Elsewhere
    ``item_logsumexp(hidden, weight, bias)`` minus the target's score. Label smoothing eps
    gives ``(1 - eps) (lse - s_target) + eps (lse - mean_j s_j)``; rows whose target is
    ``ignore_index`` give 0 and are not counted by ``"mean"``, as in ``F.cross_entropy``
    (over -inf scores the smoothing term takes the mean score, -inf, where torch counts the
    -inf log-probabilities as 0).

    Args:
        hidden: [M, D]; weight: [N, D]; bias: [N] or None (one floating dtype).
        targets: [M] int64 item ids in [0, N), or ``ignore_index``.
        ignore_index, label_smoothing (in [0, 1]), reduction ("none", "mean", "sum"): as in
            ``F.cross_entropy``.
        log_keep, log_prior: [M] each, or None: the transition mixture
            (``stseq.models.transitions``), whose loss is
            ``-log(exp(log_keep) p_target + exp(log_prior))`` = ``-logaddexp(log_keep - ce,
            log_prior)``: log(1 - w) and log(w q_target) (-inf without a prior), differentiable;
            label_smoothing must be 0 with it.
        chunk_rows: rows per chunk of the native kernel (default: 2^25 / N, 128 MiB of
            float32 scores at once, and at least 128).
        backend: ``"auto"`` (C++ on the CPU, Triton's item_logsumexp on CUDA), ``"native"``,
            ``"triton"`` or ``"reference"``.

    Returns:
        float32 (float64 for float64 inputs): [M] with ``reduction="none"``, else a scalar.

    Example::

        hidden = torch.randn(6400, 128, requires_grad=True)
        weight = torch.randn(100_000, 128, requires_grad=True)
        targets = torch.randint(0, 100_000, (6400,))
        item_cross_entropy(hidden, weight, None, targets).backward()
    """
    dtype = _autocast_dtype(hidden)
    if dtype is not None:
        with torch.autocast(hidden.device.type, enabled=False):
            return item_cross_entropy(
                *_cast((hidden, weight, bias), dtype), targets, ignore_index=ignore_index,
                label_smoothing=label_smoothing, reduction=reduction, log_keep=log_keep,
                log_prior=log_prior, chunk_rows=chunk_rows, backend=backend)
    check_arguments(hidden, weight, bias)
    check_targets(targets, hidden, weight, ignore_index)
    log_keep, log_prior = _check_mixture(log_keep, log_prior, hidden, label_smoothing)
    if not (isinstance(label_smoothing, (int, float)) and not isinstance(label_smoothing, bool)
            and 0.0 <= label_smoothing <= 1.0):
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(weight.shape[0])
    check_int(chunk_rows, "chunk_rows", 1)
    choice = _implementation(backend, hidden, "item_cross_entropy")
    if choice == "native":
        compute_grad = torch.is_grad_enabled() and any(
            x is not None and x.requires_grad for x in (hidden, weight, bias))
        compute_grad = compute_grad or (log_keep is not None and torch.is_grad_enabled() and (
            log_keep.requires_grad or log_prior.requires_grad))
        losses = torch.ops.stseq.item_cross_entropy(hidden, weight, bias, targets, log_keep,
                                                    log_prior, ignore_index,
                                                    float(label_smoothing), chunk_rows,
                                                    compute_grad)[0]
    else:
        if choice == "triton":
            losses = _cross_entropy_from_logsumexp(hidden, weight, bias, targets, ignore_index,
                                                   label_smoothing)
        else:
            losses = reference.item_cross_entropy(hidden, weight, bias, targets,
                                                  ignore_index=ignore_index,
                                                  label_smoothing=label_smoothing)
        if log_keep is not None:
            mixed = -torch.logaddexp(log_keep - losses, log_prior)
            losses = torch.where(targets != ignore_index, mixed, 0.0)
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / (targets != ignore_index).sum()


def _check_mixture(log_keep, log_prior, hidden, label_smoothing):
    """(log_keep, log_prior) in the accumulation dtype, or (None, None); errors name them."""
    if (log_keep is None) != (log_prior is None):
        raise ValueError("log_keep and log_prior go together (the transition mixture): pass "
                         "both or neither")
    if log_keep is None:
        return None, None
    for name, value in (("log_keep", log_keep), ("log_prior", log_prior)):
        if not isinstance(value, torch.Tensor) or not value.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point torch.Tensor [M]")
        if value.shape != (hidden.shape[0],) or value.device != hidden.device:
            raise ValueError(f"{name} must have shape [M] = [{hidden.shape[0]}] on "
                             f"{hidden.device}, got {tuple(value.shape)} on {value.device}")
    if label_smoothing != 0:
        raise ValueError("label_smoothing must be 0 with the transition mixture (log_keep, "
                         "log_prior)")
    accumulate = _accumulate_dtype(hidden)
    return log_keep.to(accumulate), log_prior.to(accumulate)


def _cross_entropy_from_logsumexp(hidden, weight, bias, targets, ignore_index, label_smoothing):
    """[M] losses as ``item_logsumexp`` (Triton) minus the target's score."""
    lse = item_logsumexp(hidden, weight, bias, backend="triton")  # [M]
    valid = targets != ignore_index
    safe = torch.where(valid, targets, 0)
    losses = -log_softmax_at(target_scores(hidden, weight, bias, safe).to(lse.dtype), lse)
    if label_smoothing > 0:
        mean_score = hidden.to(lse.dtype) @ weight.to(lse.dtype).mean(0)  # [M]
        if bias is not None:
            mean_score = mean_score + bias.to(lse.dtype).mean()
        losses = (1 - label_smoothing) * losses + label_smoothing * (lse - mean_score)
    return torch.where(valid, losses, 0.0)


def log_softmax_at(scores, lse):
    """``scores - lse``: the log-softmax at the scores [M], NaN where ``lse`` is +inf (a row
    holding a +inf score), as ``torch.log_softmax`` gives for every entry of such a row."""
    return torch.where(lse == float("inf"), float("nan"), scores - lse)


def target_scores(hidden, weight, bias, targets):
    """[M] score of each row's item: hidden[m] . weight[targets[m]] + bias[targets[m]], in the
    accumulation dtype (float32, float64 for float64 inputs)."""
    accumulate = _accumulate_dtype(hidden)
    scores = (hidden.to(accumulate) * weight[targets].to(accumulate)).sum(-1)
    return scores if bias is None else scores + bias[targets].to(accumulate)


def check_targets(targets, hidden, weight, ignore_index):
    """TypeError/ValueError naming ``targets`` unless it is [M] int64 on hidden's device with
    item ids in [0, N) or ``ignore_index`` (the range is not checked while compiling)."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor [M], got {type(targets).__name__}")
    if targets.dtype != torch.int64:
        raise TypeError(f"targets must be int64 item ids, got {targets.dtype}")
    if targets.dim() != 1 or (isinstance(hidden, torch.Tensor) and hidden.dim() >= 1
                              and targets.shape[0] != hidden.shape[0]):
        rows = hidden.shape[0] if isinstance(hidden, torch.Tensor) and hidden.dim() else "M"
        raise ValueError(f"targets must have shape [M] = [{rows}] (one per hidden row), got "
                         f"{tuple(targets.shape)}")
    if isinstance(hidden, torch.Tensor) and targets.device != hidden.device:
        raise ValueError(f"targets is on {targets.device} but hidden is on {hidden.device}")
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if torch.compiler.is_compiling() or not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        return
    items = weight.shape[0]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= items))
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f"targets must be item ids in [0, N = {items}) or ignore_index "
                         f"({ignore_index}); row {row} has {int(targets[row])}")


def default_chunk_rows(items):
    """Rows per chunk of item_cross_entropy's native kernel for N = ``items``: 2^25 scores at
    once, at least 128 rows."""
    return max(MIN_CHUNK_ROWS, CROSS_ENTROPY_CHUNK_ELEMENTS // max(items, 1))


def default_chunk_size(rows):
    """Items per chunk for M = ``rows``: about 2^23 scores per chunk, in [128, 8192]."""
    return max(MIN_CHUNK, min(MAX_CHUNK, CHUNK_ELEMENTS // max(rows, 1)))


def check_arguments(hidden, weight, bias):
    """TypeError/ValueError naming the argument unless hidden [M, D], weight [N, D] (N >= 1)
    and bias [N] or None share one floating dtype and one device."""
    for name, value in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if value is None and name == "bias":
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if not value.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if hidden.dim() != 2:
        raise ValueError(f"hidden must have shape [M, D], got {tuple(hidden.shape)}")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"weight must have shape [N, D] with D = {hidden.shape[1]} (hidden's), "
                         f"got {tuple(weight.shape)}")
    if weight.shape[0] < 1:
        raise ValueError("weight must hold at least one item (N >= 1), got shape "
                         f"{tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape [N] = [{weight.shape[0]}], got "
                         f"{tuple(bias.shape)}")
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None:
            continue
        if value.dtype != hidden.dtype:
            raise TypeError(f"{name} must have hidden's dtype {hidden.dtype}, got {value.dtype}")
        if value.device != hidden.device:
            raise ValueError(f"{name} is on {value.device} but hidden is on {hidden.device}; "
                             "move them to one device")


def _implementation(backend, hidden, op=OP):
    """"native", "triton" or "reference" for ``hidden``: ``auto`` runs C++ on the CPU and Triton
    on CUDA (the interpreter is a test vehicle)."""
    choice = resolve(op, backend, hidden.device, native=hidden.device.type == "cpu",
                     triton=True)
    automatic = backend in (None, "auto") and current_backend() == "auto"
    if automatic and hidden.device.type == "cuda" and hidden.dtype not in TRITON_DTYPES:
        return "reference"
    if choice == "triton" and automatic and hidden.device.type != "cuda":
        return "native" if NATIVE is not None else "reference"
    if choice == "triton" and hidden.dtype not in TRITON_DTYPES:
        raise TypeError(f"the Triton kernels of {op} take float32, bfloat16 or float16 hidden; "
                        f"got {hidden.dtype} (use backend='native' or 'reference')")
    if choice == "triton" and hidden.shape[1] > 256:
        raise ValueError(f"the Triton kernels of {op} take D <= 256 (hidden.shape[1]), got "
                         f"{hidden.shape[1]}; use backend='native' or 'reference'")
    return choice


def _autocast_dtype(hidden):
    """Under autocast, the dtype the ops run in (as the recurrent ops): the CPU kernels'
    float32 on the CPU, the autocast dtype on CUDA; None without autocast."""
    device_type = hidden.device.type if isinstance(hidden, torch.Tensor) else None
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type) if device_type == "cuda" else torch.float32


def _cast(tensors, dtype):
    return [x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
            for x in tensors]


def _accumulate_dtype(hidden):
    return torch.float64 if hidden.dtype == torch.float64 else torch.float32


def _register_native():
    @torch.library.register_fake("stseq::item_logsumexp")
    def _(hidden, weight, bias, chunk_size, gradient_filter):
        return hidden.new_empty(hidden.shape[0], dtype=_accumulate_dtype(hidden))

    @torch.library.register_fake("stseq::item_logsumexp_backward")
    def _(grad, hidden, weight, bias, lse, chunk_size, gradient_filter):
        bias_dtype = weight.dtype if bias is None else bias.dtype
        return (torch.empty_like(hidden), torch.empty_like(weight),
                weight.new_empty(weight.shape[0], dtype=bias_dtype))

    def setup_context(ctx, inputs, output):
        hidden, weight, bias, *ctx.config = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(hidden, weight, bias, output)

    def backward(ctx, grad):
        hidden, weight, bias, lse = ctx.saved_tensors
        grads = torch.ops.stseq.item_logsumexp_backward(grad, hidden, weight, bias, lse,
                                                        *ctx.config)
        return grads[0], grads[1], grads[2] if ctx.has_bias else None, None, None

    torch.library.register_autograd("stseq::item_logsumexp", backward,
                                    setup_context=setup_context)
    _register_native_cross_entropy()


def _register_native_cross_entropy():
    @torch.library.register_fake("stseq::item_cross_entropy")
    def _(hidden, weight, bias, targets, log_keep, log_prior, ignore_index, label_smoothing,
          chunk_rows, compute_grad):
        accumulate = _accumulate_dtype(hidden)
        rows, dim, items = hidden.shape[0], hidden.shape[1], weight.shape[0]
        mixed = rows if log_keep is not None else 0
        shapes = ([(rows, dim), (items, dim), (items if bias is not None else 0,), (mixed,),
                   (mixed,)] if compute_grad else [(0,)] * 5)
        return (hidden.new_empty(rows, dtype=accumulate),
                *(hidden.new_empty(shape, dtype=accumulate) for shape in shapes))

    @torch.library.register_fake("stseq::item_cross_entropy_backward")
    def _(grad, hidden, weight, bias, targets, log_keep, log_prior, grad_hidden, grad_weight,
          grad_bias, grad_log_keep, grad_log_prior, ignore_index, label_smoothing, chunk_rows):
        bias_dtype = weight.dtype if bias is None else bias.dtype
        accumulate = _accumulate_dtype(hidden)
        mixed = hidden.shape[0] if log_keep is not None else 0
        return (torch.empty_like(hidden), torch.empty_like(weight),
                weight.new_empty(weight.shape[0], dtype=bias_dtype),
                hidden.new_empty(mixed, dtype=accumulate),
                hidden.new_empty(mixed, dtype=accumulate))

    def setup_context(ctx, inputs, output):
        hidden, weight, bias, targets, log_keep, log_prior, *config, _ = inputs
        ctx.config = config  # ignore_index, label_smoothing, chunk_rows
        ctx.has_bias, ctx.mixed = bias is not None, log_keep is not None
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(hidden, weight, bias, targets, log_keep, log_prior, *output[1:])

    def backward(ctx, grad, *_):
        grads = torch.ops.stseq.item_cross_entropy_backward(grad, *ctx.saved_tensors,
                                                            *ctx.config)
        mixture = (grads[3], grads[4]) if ctx.mixed else (None, None)
        return (grads[0], grads[1], grads[2] if ctx.has_bias else None, None, *mixture,
                *[None] * 4)

    torch.library.register_autograd("stseq::item_cross_entropy", backward,
                                    setup_context=setup_context)


@torch.library.custom_op("stseq::item_logsumexp_triton", mutates_args=())
def _item_logsumexp_triton(hidden: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor | None, gradient_filter: bool) -> torch.Tensor:
    from stseq.triton.scoring import item_logsumexp_forward

    return item_logsumexp_forward(hidden, weight, bias)


@_item_logsumexp_triton.register_fake
def _(hidden, weight, bias, gradient_filter):
    return hidden.new_empty(hidden.shape[0], dtype=torch.float32)


@torch.library.custom_op("stseq::item_logsumexp_triton_backward", mutates_args=())
def _item_logsumexp_triton_backward(
        grad: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
        bias: torch.Tensor | None, lse: torch.Tensor,
        gradient_filter: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from stseq.triton.scoring import item_logsumexp_backward

    return item_logsumexp_backward(grad, hidden, weight, bias, lse, gradient_filter)


@_item_logsumexp_triton_backward.register_fake
def _(grad, hidden, weight, bias, lse, gradient_filter):
    bias_dtype = weight.dtype if bias is None else bias.dtype
    return (torch.empty_like(hidden), torch.empty_like(weight),
            weight.new_empty(weight.shape[0], dtype=bias_dtype))


def _triton_setup_context(ctx, inputs, output):
    hidden, weight, bias, ctx.gradient_filter = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(hidden, weight, bias, output)


def _triton_backward(ctx, grad):
    hidden, weight, bias, lse = ctx.saved_tensors
    grads = torch.ops.stseq.item_logsumexp_triton_backward(grad, hidden, weight, bias, lse,
                                                           ctx.gradient_filter)
    return grads[0], grads[1], grads[2] if ctx.has_bias else None, None


_item_logsumexp_triton.register_autograd(_triton_backward, setup_context=_triton_setup_context)

if NATIVE is not None:
    _register_native()
