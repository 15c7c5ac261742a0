"""``item_logsumexp``: the log-sum-exp of each row's scores over the whole item catalogue,
computed in item chunks so that the [M, N] score matrix never exists.

Native op ``torch.ops.stseq.item_logsumexp`` (C++ CPU: one ATen GEMM per item chunk and an
online max/sum), its backward op ``torch.ops.stseq.item_logsumexp_backward`` (recomputes each
chunk's softmax); the Triton op ``torch.ops.stseq.item_logsumexp_triton`` (CUDA, or the CPU
under ``TRITON_INTERPRET=1``) with its backward op; fake impls for ``torch.compile``. The twin
is ``stseq.reference.item_logsumexp`` (``F.linear`` + ``torch.logsumexp``). No CUDA C++ kernel:
on a GPU the op runs the Triton kernels.

The losses of ``stseq.models.losses`` are built on it: full-softmax cross-entropy is
``lse - target score``.
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


def _implementation(backend, hidden):
    """"native", "triton" or "reference" for ``hidden``: ``auto`` runs C++ on the CPU and Triton
    on CUDA (the interpreter is a test vehicle)."""
    choice = resolve(OP, backend, hidden.device, native=hidden.device.type == "cpu",
                     triton=True)
    automatic = backend in (None, "auto") and current_backend() == "auto"
    if automatic and hidden.device.type == "cuda" and hidden.dtype not in TRITON_DTYPES:
        return "reference"
    if choice == "triton" and automatic and hidden.device.type != "cuda":
        return "native" if NATIVE is not None else "reference"
    if choice == "triton" and hidden.dtype not in TRITON_DTYPES:
        raise TypeError(f"the Triton kernels of {OP} take float32, bfloat16 or float16 hidden; "
                        f"got {hidden.dtype} (use backend='native' or 'reference')")
    if choice == "triton" and hidden.shape[1] > 256:
        raise ValueError(f"the Triton kernels of {OP} take D <= 256 (hidden.shape[1]), got "
                         f"{hidden.shape[1]}; use backend='native' or 'reference'")
    return choice


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
