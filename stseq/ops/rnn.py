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
from stseq.ops.checks import check_lengths, lengths_range_error

ALGORITHMS = ("auto", "stepwise", "persistent")
_GATES = {"lstm": 4, "gru": 3}


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
    spec = _check_arguments(mode, input, hx, weights, **config)
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
    if seq_len == 0 or weight_ih.dim() != 2 or weight_ih.shape[0] % _GATES[mode]:
        return None
    b_ih, b_hh = (weights[2], weights[3]) if config["bias"] else (None, None)
    hidden = weight_ih.shape[0] // _GATES[mode]
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


class _Spec:
    """Sizes of one call: layers, directions, batch, input, hidden and state sizes."""

    def __init__(self, mode, weights, num_layers, directions, bias, batch):
        self.num_layers, self.directions, self.batch = num_layers, directions, batch
        self.per_layer = len(weights) // (num_layers * directions)
        self.has_proj = self.per_layer - (4 if bias else 2) == 1
        self.hidden = weights[0].shape[0] // _GATES[mode]
        self.input_size = weights[0].shape[1]
        self.proj = weights[self.per_layer - 1].shape[0] if self.has_proj else self.hidden

    def layer_weights(self, weights, k, bias):
        """(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) of layer-direction k."""
        w = list(weights[k * self.per_layer:(k + 1) * self.per_layer])
        b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
        return w[0], w[1], b_ih, b_hh, (w[-1] if self.has_proj else None)


def _zero_state(mode, input, spec):
    layers = spec.num_layers * spec.directions
    h0 = input.new_zeros(layers, spec.batch, spec.proj)
    return (h0, input.new_zeros(layers, spec.batch, spec.hidden)) if mode == "lstm" else h0


def _check_weights(mode, weights, input, num_layers, directions, bias):
    if not isinstance(weights, (list, tuple)):
        raise TypeError("weights must be a list of tensors (torch.nn.LSTM/GRU._flat_weights)")
    dtype, device = input.dtype, input.device
    for index, weight in enumerate(weights):
        if not isinstance(weight, torch.Tensor):
            raise TypeError("weights must be a list of tensors (torch.nn.LSTM/GRU._flat_weights)")
        if weight.dtype != dtype or weight.device != device:
            raise ValueError(f"weights[{index}] is {weight.dtype} on {weight.device} but input is "
                             f"{input.dtype} on {input.device}; convert the module with "
                             ".to(input)")
    per_options = (4 if bias else 2,) + ((5 if bias else 3,) if mode == "lstm" else ())
    count = num_layers * directions
    if len(weights) % count or len(weights) // count not in per_options:
        raise ValueError(f"weights must hold {' or '.join(str(p) for p in per_options)} tensors "
                         f"per layer and direction ({count} of them, bias={bias}), got "
                         f"{len(weights)}")
    gates = weights[0].shape[0] if weights[0].dim() == 2 else 0
    if weights[0].dim() != 2 or gates == 0 or gates % _GATES[mode]:
        raise ValueError(f"weights[0] (weight_ih_l0) must have shape [{_GATES[mode]} * "
                         f"hidden_size, input_size], got {tuple(weights[0].shape)}")


def _check_layer_shapes(spec, weights, bias):
    """Every weight has the shape its layer needs."""
    gates = weights[0].shape[0]
    for k in range(spec.num_layers * spec.directions):
        layer, suffix = divmod(k, spec.directions)
        w_ih, w_hh, b_ih, b_hh, w_hr = spec.layer_weights(weights, k, bias)
        in_size = spec.input_size if layer == 0 else spec.directions * spec.proj
        expected = [("weight_ih", w_ih, (gates, in_size)), ("weight_hh", w_hh, (gates, spec.proj))]
        if bias:
            expected += [("bias_ih", b_ih, (gates,)), ("bias_hh", b_hh, (gates,))]
        if w_hr is not None:
            expected += [("weight_hr", w_hr, (spec.proj, spec.hidden))]
        for kind, weight, shape in expected:
            if weight.shape != shape:
                raise ValueError(f"{kind}_l{layer}{'_reverse' if suffix else ''} must have shape "
                                 f"{list(shape)}, got {list(weight.shape)}")


def _check_batch_sizes(batch_sizes, rows):
    if not isinstance(batch_sizes, torch.Tensor) or batch_sizes.dim() != 1:
        raise ValueError("batch_sizes must be a 1-D tensor [L] (a PackedSequence's batch_sizes)")
    if batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu":
        raise ValueError(f"batch_sizes must be an int64 CPU tensor, got {batch_sizes.dtype} on "
                         f"{batch_sizes.device}")
    if batch_sizes.numel() == 0 or torch.compiler.is_compiling():
        return
    sizes = batch_sizes.tolist()
    if sizes[0] < 1 or any(b > a for a, b in zip(sizes, sizes[1:])) or sizes[-1] < 1:
        raise ValueError("batch_sizes must be positive and non-increasing (a PackedSequence "
                         f"sorted by length), got {sizes}")
    if sum(sizes) != rows:
        raise ValueError(f"input has {rows} rows but batch_sizes sum to {sum(sizes)}")


def _check_lengths(lengths, batch, seq_len, device):
    check_lengths(lengths, batch)
    if lengths.device.type not in ("cpu", device.type):
        raise ValueError(f"lengths is on {lengths.device} but input is on {device}; pass lengths "
                         "on the CPU or on input's device")
    if torch.compiler.is_compiling():
        return
    bad = (lengths < 0) | (lengths > seq_len)
    if bad.any():
        raise lengths_range_error(lengths, bad, seq_len)


def _check_state(state, name, size_name, shape, input):
    if not isinstance(state, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(state).__name__}")
    if tuple(state.shape) != shape:
        raise ValueError(f"{name} must have shape [num_layers * num_directions, B, {size_name}] "
                         f"= {list(shape)}, got {list(state.shape)}")
    if state.dtype != input.dtype or state.device != input.device:
        raise ValueError(f"{name} is {state.dtype} on {state.device} but input is {input.dtype} "
                         f"on {input.device}")


def _check_arguments(mode, input, hx, weights, *, bias, num_layers, dropout, training,
                     bidirectional, batch_first, lengths, batch_sizes):
    """Check every argument; return the call's _Spec."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if not input.dtype.is_floating_point:
        raise ValueError(f"input must be a floating-point tensor, got {input.dtype}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {dropout}")
    directions = 2 if bidirectional else 1
    _check_weights(mode, weights, input, num_layers, directions, bias)
    if batch_sizes is not None:
        if lengths is not None:
            raise ValueError("pass lengths (padded input) or batch_sizes (packed), not both")
        if input.dim() != 2:
            raise ValueError(f"packed input must have shape [N, I], got {tuple(input.shape)}")
        _check_batch_sizes(batch_sizes, input.shape[0])
        batch = int(batch_sizes[0]) if batch_sizes.numel() else 0
    else:
        if input.dim() != 3:
            raise ValueError(f"input must have shape {'[B, L, I]' if batch_first else '[L, B, I]'}"
                             f", got {tuple(input.shape)}")
        seq_len, batch = (input.shape[1], input.shape[0]) if batch_first else input.shape[:2]
        if seq_len == 0:
            raise ValueError("input must have at least one time step (L >= 1)")
        if lengths is not None:
            _check_lengths(lengths, batch, seq_len, input.device)
    spec = _Spec(mode, weights, num_layers, directions, bias, batch)
    if input.shape[-1] != spec.input_size:
        raise ValueError(f"input.size(-1) must be equal to input_size={spec.input_size}, got "
                         f"{input.shape[-1]}")
    _check_layer_shapes(spec, weights, bias)
    if hx is not None:
        layers = num_layers * directions
        if mode == "lstm":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise ValueError("hx must be a tuple (h_0, c_0) for an LSTM")
            _check_state(hx[0], "hx[0] (h_0)", "P", (layers, batch, spec.proj), input)
            _check_state(hx[1], "hx[1] (c_0)", "H", (layers, batch, spec.hidden), input)
        else:
            _check_state(hx, "hx", "H", (layers, batch, spec.hidden), input)
    return spec


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
