"""``lstm`` and ``gru``: fused multi-layer LSTM / GRU on torch.nn.LSTM / torch.nn.GRU's weights.

Native ops, one layer in one direction each (C++ CPU, CUDA when built), named like the Python
ops: ``torch.ops.stseq.lstm`` and ``torch.ops.stseq.gru``, with fake impls for ``torch.compile``
and autograd formulas whose backward is ``lstm_backward`` / ``gru_backward``; the time loop
always runs in C++ (or CUDA). Layers, directions, inter-layer dropout, the autocast dtype and
the order by length come from ``stseq.nn.recurrent``, the composition layer the five recurrent
modules share (imported in the call: this functional form of ``stseq.nn.LSTM``/``GRU`` is the
one place ops reaches into nn). The twins are ``stseq.reference.lstm`` and
``stseq.reference.gru``.

Layout handed to the layer ops: rows [N, I] in time order with ``batch_sizes`` [L] (CPU int64),
either a PackedSequence's data (packed) or a time-major padded batch [L * B, I] (padded). A
padded batch with ``lengths`` is first sorted by length, longest first, so that the rows still
running at any step are a prefix: the kernels skip finished rows instead of computing on padding.
"""

import functools

import torch

from stseq import reference
from stseq._native import NATIVE
from stseq.backends import BackendUnavailableError, resolve
from stseq.ops._autograd import eager_op, register_autograd
from stseq.ops.rnn_args import GATES, check_arguments

ALGORITHMS = ("auto", "stepwise", "persistent")


def lstm(input, hx, weights, *, bias=True, num_layers=1, dropout=0.0, training=False,
         bidirectional=False, batch_first=False, lengths=None, batch_sizes=None, backend=None,
         algorithm="auto"):
    """Multi-layer (bidirectional) LSTM with torch.nn.LSTM's equations, weights and results.

    Args:
        input: [L, B, I] ([B, L, I] with ``batch_first``), or a PackedSequence's data [N, I]
            together with its ``batch_sizes`` [L] (CPU int64).
        hx: ``(h_0, c_0)``, each [num_layers * num_directions, B, P] / [.., B, H] (P =
            proj_size or H), or None for zeros.
        weights: torch.nn.LSTM's ``_flat_weights`` order: per layer and direction
            weight_ih [4H, I or D*P], weight_hh [4H, P], (bias_ih [4H], bias_hh [4H]),
            (weight_hr [P, H]). Gate order i, f, g, o.
        bias: whether ``weights`` holds the biases. num_layers, bidirectional, batch_first:
            as torch.nn.LSTM. dropout, training: dropout on every layer's output but the last,
            only when training.
        lengths: [B] integer, valid steps of each row of a padded ``input`` (0..L): padded
            positions output zeros, h_n/c_n are each row's state after its last valid step, and
            the reverse direction starts at each row's own end.
        backend: ``"auto"``, ``"native"`` or ``"reference"`` (see ``stseq.use_backend``).
            dtypes: float32 and float64; on the CPU also bfloat16 and float16 (computed in
            float32, returned in input's dtype); on CUDA float32, bfloat16 and float16.
        algorithm: CUDA time loop, ``"auto"``, ``"stepwise"`` (a GEMM and a fused pointwise
            kernel per step) or ``"persistent"`` (one kernel for the whole sequence, H <= 256,
            no projection, Hopper); ignored on CPU.

    Returns:
        ``(output, (h_n, c_n))``: output [L, B, D*P] (or [B, L, D*P], or packed data [N, D*P]),
        h_n [num_layers * D, B, P], c_n [num_layers * D, B, H].

    Example::

        module = torch.nn.LSTM(16, 32, num_layers=2)
        x = torch.randn(50, 8, 16)                                    # [L, B, I]
        out, (h_n, c_n) = stseq.ops.lstm(x, None, module._flat_weights, num_layers=2)
        out, _ = stseq.ops.lstm(x, None, module._flat_weights, num_layers=2,
                                lengths=torch.tensor([50, 3, 7, 1, 50, 20, 9, 2]))
    """
    return _run("lstm", input, hx, weights, bias=bias, num_layers=num_layers, dropout=dropout,
                training=training, bidirectional=bidirectional, batch_first=batch_first,
                lengths=lengths, batch_sizes=batch_sizes, backend=backend, algorithm=algorithm)


def gru(input, hx, weights, *, bias=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, lengths=None, batch_sizes=None, backend=None,
        algorithm="auto"):
    """Multi-layer (bidirectional) GRU with torch.nn.GRU's equations, weights and results.

    Arguments as :func:`lstm` (no projection; gate order r, z, n with
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))); ``hx`` is h_0
    [num_layers * num_directions, B, H] or None.

    Returns:
        ``(output, h_n)``: output [L, B, D*H] (or [B, L, D*H], or packed data [N, D*H]),
        h_n [num_layers * D, B, H].

    Example::

        module = torch.nn.GRU(16, 32, batch_first=True)
        out, h_n = stseq.ops.gru(torch.randn(8, 50, 16), None, module._flat_weights,
                                 batch_first=True)
    """
    return _run("gru", input, hx, weights, bias=bias, num_layers=num_layers, dropout=dropout,
                training=training, bidirectional=bidirectional, batch_first=batch_first,
                lengths=lengths, batch_sizes=batch_sizes, backend=backend, algorithm=algorithm)


def _cast(value, dtype):
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def _run(mode, input, hx, weights, *, backend, algorithm, **config):
    from stseq.nn import recurrent

    # Under autocast: CUDA's autocast dtype; on the CPU (float32/float64 kernels) float32.
    dtype = recurrent.autocast_dtype(input, cpu_dtype=torch.float32)
    if dtype is not None:
        input, hx, weights = _cast(input, dtype), _cast(hx, dtype), _cast(weights, dtype)
        with torch.autocast(input.device.type, enabled=False):
            return _run(mode, input, hx, weights, backend=backend, algorithm=algorithm, **config)
    if hx is None and config["lengths"] is None and config["batch_sizes"] is None:
        result = _one_native_layer(mode, input, weights, backend, algorithm, config)
        if result is not None:
            return result
    spec = check_arguments(mode, input, hx, weights, **config)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if input.device.type == "cpu" and input.dtype in (torch.float16, torch.bfloat16):
        # As torch.nn.LSTM/GRU accept them on the CPU: float32 arithmetic and states (the CPU
        # kernels' dtype), results in input's dtype; gradients flow back through the casts.
        result = _run(mode, _cast(input, torch.float32), _cast(hx, torch.float32),
                      _cast(weights, torch.float32), backend=backend, algorithm=algorithm,
                      **config)
        return _cast(result, input.dtype)
    if hx is None:
        hx = _zero_state(mode, input, spec)
    choice = resolve(mode, backend, input.device, native=True, triton=False)
    if choice == "native":
        return _native(mode, input, hx, weights, spec, algorithm=algorithm, **config)
    twin = reference.lstm if mode == "lstm" else reference.gru
    return twin(input, hx, weights, **config)


def _one_native_layer(mode, input, weights, backend, algorithm, config):
    """The most common eager call (one layer, one direction, a padded batch without lengths or
    initial states, float32/float64 outside autocast, the native backend) as one op call, or
    None for any other call, or when the op rejects its arguments: the general path then checks
    them all and raises the error that names the argument and layer.

    Measured (issue 17, one thread, L = 50, inference): the general path's checks and
    composition cost about 50 us of Python per call on their own and twice that between the
    kernel's calls (their code and data leave the caches); an LSTM at B = 1, H = 64 computes
    in about 80 us, and torch.nn.LSTM's whole call takes about 165 us."""
    if (torch.compiler.is_compiling() or config["num_layers"] != 1 or config["bidirectional"]
            or algorithm not in ALGORITHMS or type(input) is not torch.Tensor or input.dim() != 3
            or input.dtype not in (torch.float32, torch.float64)
            or not 0.0 <= config["dropout"] <= 1.0
            or not isinstance(weights, (list, tuple))
            or len(weights) not in ((4, 5) if config["bias"] else (2, 3))
            or (mode == "gru" and len(weights) != (4 if config["bias"] else 2))):
        return None
    dtype, device = input.dtype, input.device
    for weight in weights:  # (mixed devices would dispatch past the kernels' own checks)
        if not isinstance(weight, torch.Tensor) or weight.dtype != dtype or weight.device != device:
            return None
    try:
        if resolve(mode, backend, device, native=True, triton=False) != "native":
            return None
    except BackendUnavailableError:
        return None
    x = input.transpose(0, 1) if config["batch_first"] else input  # [L, B, I]
    seq_len, batch, input_size = x.shape
    weight_ih, weight_hh = weights[0], weights[1]
    if seq_len == 0 or weight_ih.dim() != 2 or weight_ih.shape[0] % GATES[mode]:
        return None
    b_ih, b_hh = (weights[2], weights[3]) if config["bias"] else (None, None)
    hidden = weight_ih.shape[0] // GATES[mode]
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in [input, *weights])
    data, batch_sizes = x.reshape(seq_len * batch, input_size), _full_batch_sizes(seq_len, batch)
    try:
        if mode == "lstm":
            weight_hr = weights[-1] if len(weights) % 2 else None  # 3 or 5: with weight_hr
            proj = weight_hr.shape[0] if weight_hr is not None else hidden
            out, h, c, _, _ = eager_op("lstm", keep)(
                data, x.new_zeros(batch, proj), x.new_zeros(batch, hidden), weight_ih, weight_hh,
                b_ih, b_hh, weight_hr, batch_sizes, True, False, keep, algorithm)
            finals = (h.unsqueeze(0), c.unsqueeze(0))
        else:
            out, h, _ = eager_op("gru", keep)(data, x.new_zeros(batch, hidden), weight_ih,
                                              weight_hh, b_ih, b_hh, batch_sizes, True, False,
                                              keep, algorithm)
            finals = h.unsqueeze(0)
    except (ValueError, TypeError, RuntimeError):
        return None
    output = out.view(seq_len, batch, out.shape[1])
    return output.transpose(0, 1) if config["batch_first"] else output, finals


def _zero_state(mode, input, spec):
    layers = spec.num_layers * spec.directions
    h0 = input.new_zeros(layers, spec.batch, spec.proj)
    return (h0, input.new_zeros(layers, spec.batch, spec.hidden)) if mode == "lstm" else h0


def _sort_by_length(x, lengths, states):
    """Rows of a padded x [L, B, I] sorted by length, longest first
    (``stseq.nn.recurrent.length_order``), padding zeroed.

    Returns (x sorted, batch_sizes [L] CPU int64, states sorted, order [B] on x's device)."""
    from stseq.nn.recurrent import length_order

    seq_len = x.shape[0]
    lengths = lengths.to("cpu", torch.int64)
    order = length_order(lengths)
    sorted_lengths = lengths[order]
    steps = torch.arange(seq_len)
    batch_sizes = (sorted_lengths[None, :] > steps[:, None]).sum(1)  # [L]
    valid = (steps[:, None] < sorted_lengths[None, :]).to(x.device)  # [L, B]
    index = order.to(x.device)
    x = torch.where(valid[..., None], x.index_select(1, index), 0)
    return x, batch_sizes, [s.index_select(1, index) for s in states], index


@functools.lru_cache(maxsize=64)
def _full_batch_sizes(seq_len, batch):
    """batch_sizes [L] of a batch without lengths (every row runs every step), made once per
    shape: the ops only read it. A normal tensor even when first asked for under
    torch.inference_mode, so that a later call with autograd can save it for backward."""
    with torch.inference_mode(False):
        return torch.full((seq_len,), batch, dtype=torch.int64)


def _native(mode, input, hx, weights, spec, *, bias, num_layers, dropout, training,
            bidirectional, batch_first, lengths, batch_sizes, algorithm):
    from stseq.nn import recurrent

    states = list(hx) if mode == "lstm" else [hx]
    order = None
    if batch_sizes is not None:
        data, padded = input, False  # [N, I]
    else:
        x = input.transpose(0, 1) if batch_first else input  # [L, B, I]
        seq_len, batch = x.shape[:2]
        if lengths is None:
            batch_sizes = (torch.full((seq_len,), batch, dtype=torch.int64)
                           if torch.compiler.is_compiling() else _full_batch_sizes(seq_len, batch))
        else:
            x, batch_sizes, states, order = _sort_by_length(x, lengths, states)
        data, padded = x.reshape(seq_len * batch, x.shape[2]), True  # [L * B, I]
    keep = torch.is_grad_enabled() and any(
        t.requires_grad for t in [data, *states, *weights])
    lstm, gru = eager_op("lstm", keep), eager_op("gru", keep)

    def run_layer(data, layer_states, k, reverse):  # one layer, one direction: [N, *] rows
        w_ih, w_hh, b_ih, b_hh, w_hr = spec.layer_weights(weights, k, bias)
        if mode == "lstm":
            out, h, c, _, _ = lstm(
                data, layer_states[0], layer_states[1], w_ih, w_hh, b_ih, b_hh, w_hr,
                batch_sizes, padded, reverse, keep, algorithm)
            return out, h, c
        out, h, _ = gru(data, layer_states[0], w_ih, w_hh, b_ih, b_hh, batch_sizes, padded,
                        reverse, keep, algorithm)
        return out, h

    output, finals = recurrent.run_layers(  # [N, D*P], [num_layers * D, B, *]
        run_layer, data, states, num_layers=num_layers, directions=spec.directions,
        dropout=dropout, training=training)
    if not padded:
        return _result(mode, output, finals)
    output = output.view(seq_len, batch, output.shape[1])  # [L, B, D*P]
    if order is not None:
        output, finals = recurrent.restore_order(order, output, finals)
    return _result(mode, output.transpose(0, 1) if batch_first else output, finals)


def _result(mode, output, finals):
    return (output, tuple(finals)) if mode == "lstm" else (output, finals[0])


def _activation_dtype(dtype):
    """dtype of the saved gates and cells: float32 for the half types (CUDA), else the input's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _register_native():
    @torch.library.register_fake("stseq::lstm")
    def _(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes, padded,
          reverse, keep_activations, algorithm):
        rows, hidden, batch = input.shape[0], weight_ih.shape[0] // 4, h0.shape[0]
        proj = weight_hr.shape[0] if weight_hr is not None else hidden
        saved = _activation_dtype(input.dtype)
        gates = input.new_empty((rows, 4 * hidden) if keep_activations else (0,), dtype=saved)
        cells = input.new_empty((rows, hidden) if keep_activations else (0,), dtype=saved)
        return (input.new_empty(rows, proj), h0.new_empty(batch, proj),
                c0.new_empty(batch, hidden), gates, cells)

    @torch.library.register_fake("stseq::lstm_backward")
    def _(grad_output, grad_h_n, grad_c_n, input, h0, c0, weight_ih, weight_hh, weight_hr,
          output, gates, cells, batch_sizes, padded, reverse, has_bias, algorithm):
        return (torch.empty_like(input), torch.empty_like(h0), torch.empty_like(c0),
                torch.empty_like(weight_ih), torch.empty_like(weight_hh),
                weight_ih.new_empty((weight_ih.shape[0],) if has_bias else (0,)),
                torch.empty_like(weight_hr) if weight_hr is not None else input.new_empty(0))

    @torch.library.register_fake("stseq::gru")
    def _(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, padded, reverse,
          keep_activations, algorithm):
        rows, hidden = input.shape[0], weight_ih.shape[0] // 3
        gates = input.new_empty((rows, 4 * hidden) if keep_activations else (0,),
                                dtype=_activation_dtype(input.dtype))
        return input.new_empty(rows, hidden), h0.new_empty(h0.shape), gates

    @torch.library.register_fake("stseq::gru_backward")
    def _(grad_output, grad_h_n, input, h0, weight_ih, weight_hh, output, gates, batch_sizes,
          padded, reverse, has_bias, algorithm):
        bias_shape = (weight_ih.shape[0],) if has_bias else (0,)
        return (torch.empty_like(input), torch.empty_like(h0), torch.empty_like(weight_ih),
                torch.empty_like(weight_hh), weight_ih.new_empty(bias_shape),
                weight_ih.new_empty(bias_shape))

    def setup_lstm(ctx, inputs, output):
        (input, h0, c0, weight_ih, weight_hh, bias_ih, _, weight_hr, batch_sizes, padded,
         reverse, _, algorithm) = inputs
        out, _, _, gates, cells = output
        ctx.mark_non_differentiable(gates, cells)
        ctx.set_materialize_grads(False)  # unused outputs pass None, not zero-filled buffers
        ctx.save_for_backward(input, h0, c0, weight_ih, weight_hh, weight_hr, out, gates, cells,
                              batch_sizes)
        ctx.config = (padded, reverse, bias_ih is not None, algorithm)

    def backward_lstm(ctx, grad_output, grad_h_n, grad_c_n, _grad_gates, _grad_cells):
        (input, h0, c0, weight_ih, weight_hh, weight_hr, out, gates, cells,
         batch_sizes) = ctx.saved_tensors
        padded, reverse, has_bias, algorithm = ctx.config
        (grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias,
         grad_weight_hr) = torch.ops.stseq.lstm_backward(
            grad_output, grad_h_n, grad_c_n, input, h0, c0, weight_ih, weight_hh, weight_hr, out,
            gates, cells, batch_sizes, padded, reverse, has_bias, algorithm)
        grad_bias = grad_bias if has_bias else None
        return (grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias,
                grad_bias, grad_weight_hr if weight_hr is not None else None) + (None,) * 5

    def setup_gru(ctx, inputs, output):
        (input, h0, weight_ih, weight_hh, bias_ih, _, batch_sizes, padded, reverse, _,
         algorithm) = inputs
        out, _, gates = output
        ctx.mark_non_differentiable(gates)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, h0, weight_ih, weight_hh, out, gates, batch_sizes)
        ctx.config = (padded, reverse, bias_ih is not None, algorithm)

    def backward_gru(ctx, grad_output, grad_h_n, _grad_gates):
        input, h0, weight_ih, weight_hh, out, gates, batch_sizes = ctx.saved_tensors
        padded, reverse, has_bias, algorithm = ctx.config
        (grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih,
         grad_bias_hh) = torch.ops.stseq.gru_backward(
            grad_output, grad_h_n, input, h0, weight_ih, weight_hh, out, gates, batch_sizes,
            padded, reverse, has_bias, algorithm)
        if not has_bias:
            grad_bias_ih = grad_bias_hh = None
        return (grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih,
                grad_bias_hh) + (None,) * 5

    register_autograd("lstm", backward_lstm, setup_context=setup_lstm)
    register_autograd("gru", backward_gru, setup_context=setup_gru)


if NATIVE is not None:
    _register_native()
