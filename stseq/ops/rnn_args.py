"""Argument checks and call sizes of ``stseq.ops.lstm`` / ``gru`` (the general path of
``stseq/ops/rnn.py``): ``check_arguments`` checks every argument against torch.nn.LSTM/GRU's
contract and raises the error that names it; ``Spec`` holds the sizes of one call. The C++ side
checks the per-layer op's arguments again (csrc/rnn/rnn_args.h)."""

import torch

from stseq.ops.checks import check_lengths, lengths_range_error

GATES = {"lstm": 4, "gru": 3}  # gate blocks of weight_ih's rows


class Spec:
    """Sizes of one call: layers, directions, batch, input, hidden and state sizes."""

    def __init__(self, mode, weights, num_layers, directions, bias, batch):
        self.num_layers, self.directions, self.batch = num_layers, directions, batch
        self.per_layer = len(weights) // (num_layers * directions)
        self.has_proj = self.per_layer - (4 if bias else 2) == 1
        self.hidden = weights[0].shape[0] // GATES[mode]
        self.input_size = weights[0].shape[1]
        self.proj = weights[self.per_layer - 1].shape[0] if self.has_proj else self.hidden

    def layer_weights(self, weights, k, bias):
        """(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) of layer-direction k."""
        w = list(weights[k * self.per_layer:(k + 1) * self.per_layer])
        b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
        return w[0], w[1], b_ih, b_hh, (w[-1] if self.has_proj else None)


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
    if weights[0].dim() != 2 or gates == 0 or gates % GATES[mode]:
        raise ValueError(f"weights[0] (weight_ih_l0) must have shape [{GATES[mode]} * "
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


def check_arguments(mode, input, hx, weights, *, bias, num_layers, dropout, training,
                     bidirectional, batch_first, lengths, batch_sizes):
    """Check every argument; return the call's Spec."""
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
    spec = Spec(mode, weights, num_layers, directions, bias, batch)
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
