"""Argument checks of the time-aware recurrent ops (``stseq/ops/time_rnn.py``): static ones
always, the data checks (dt, lengths) eagerly with one synchronisation and skipped while
torch.compile traces (the kernels stay memory-safe). Each error names the argument. The C++ side
checks the op's arguments again (csrc/time_rnn/time_rnn_args.h)."""

import torch

from stseq.ops.checks import check_lengths, check_tensor, lengths_range_error

ACTIVATIONS = ("tanh", "sigmoid")


def _check_device(value, name, device):
    if value.device != device:
        raise ValueError(f"{name} is on {value.device} but input is on {device}; move them to "
                         "one device")


def _check_shape(value, name, shape, text):
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {text} = {list(shape)}, got "
                         f"{list(value.shape)}")


def check_sequence(input, dt, lengths, weight_hh, recurrent_blocks):
    """Check input [L, B, I], dt [L, B], lengths [B] and weight_hh [R*H, H]; return (H, whether
    the rows are known to be sorted by length, longest first)."""
    check_tensor(input, "input", rank=3, shape="[L, B, I]")
    if not input.dtype.is_floating_point:
        raise ValueError(f"input must be a floating-point tensor, got {input.dtype}")
    seq_len, batch, _ = input.shape
    check_tensor(weight_hh, "weight_hh", rank=2, shape="[R*H, H]")
    hidden = weight_hh.shape[1]
    _check_like_input(weight_hh, "weight_hh", (recurrent_blocks * hidden, hidden), "[R*H, H]",
                      input)
    check_tensor(dt, "dt", rank=2, shape="[L, B]")
    _check_shape(dt, "dt", (seq_len, batch), "[L, B]")
    _check_device(dt, "dt", input.device)
    if not dt.dtype.is_floating_point:
        raise ValueError(f"dt must be a floating-point tensor (time gaps), got {dt.dtype}; "
                         "convert with .float()")
    if lengths is not None:
        check_tensor(lengths, "lengths", rank=1, shape="[B]")
        _check_device(lengths, "lengths", input.device)
        check_lengths(lengths, batch)
    in_order = lengths is None
    if not torch.compiler.is_compiling():
        in_order = _check_values(dt, lengths)
    return hidden, in_order


def sequence_in_length_order(input, dt, lengths):
    """Check input [L, B, I], dt [L, B] and lengths [B] as the ops do (the same errors, naming the
    caller's rows) and return whether the rows are sorted by length, longest first (True
    without lengths; under torch.compile, where the data checks are skipped, False with them).

    ``stseq.nn``'s composition layer calls it once per forward before it sorts the rows for all
    layers, so that each layer's op finds them in order.

    Example::

        sequence_in_length_order(torch.randn(5, 3, 2), torch.rand(5, 3), torch.tensor([5, 4, 1]))
        # True
    """
    check_tensor(input, "input", rank=3, shape="[L, B, I]")
    seq_len, batch, _ = input.shape
    check_tensor(dt, "dt", rank=2, shape="[L, B]")
    _check_shape(dt, "dt", (seq_len, batch), "[L, B]")
    _check_device(dt, "dt", input.device)
    if lengths is None:
        return True
    check_tensor(lengths, "lengths", rank=1, shape="[B]")
    _check_device(lengths, "lengths", input.device)
    check_lengths(lengths, batch)
    return not torch.compiler.is_compiling() and _check_values(dt, lengths)


def _check_like_input(value, name, shape, text, input):
    """``value`` is a tensor of ``shape`` with input's dtype and device."""
    check_tensor(value, name, rank=len(shape), shape=text)
    _check_shape(value, name, shape, text)
    _check_device(value, name, input.device)
    if value.dtype != input.dtype:
        raise ValueError(f"{name} must have the dtype of input ({input.dtype}), got {value.dtype}")


def check_parameters(input, hidden, *, states, vectors, matrices):
    """Shapes, dtype (input's) and device of the weights and initial states.

    states: the [B, H] tensors by name; vectors: name -> (tensor, blocks of H); matrices:
    name -> (tensor, shape, shape text).
    """
    batch = input.shape[1]
    for name, state in states.items():
        _check_like_input(state, name, (batch, hidden), "[B, H]", input)
    for name, (value, blocks) in vectors.items():
        _check_like_input(value, name, (blocks * hidden,), f"[{blocks}*H]" if blocks > 1 else "[H]",
                          input)
    for name, (value, shape, text) in matrices.items():
        _check_like_input(value, name, shape, text, input)


def check_activation(name, argument):
    if name not in ACTIVATIONS:
        raise ValueError(f"{argument} must be one of {ACTIVATIONS}, got {name!r}")


def _check_values(dt, lengths):
    """Raise on lengths out of [0, L] or a bad gap at a valid position; return whether the rows
    are sorted by length, longest first."""
    seq_len, batch = dt.shape
    if lengths is None:
        bad_lengths = torch.zeros(0, dtype=torch.bool, device=dt.device)
        valid = torch.ones(seq_len, batch, dtype=torch.bool, device=dt.device)
    else:
        bad_lengths = (lengths < 0) | (lengths > seq_len)
        valid = torch.arange(seq_len, device=dt.device)[:, None] < lengths[None, :]  # [L, B]
    bad_dt = ~(torch.isfinite(dt) & (dt >= 0)) & valid
    unsorted = (lengths[1:] > lengths[:-1]).any() if lengths is not None else bad_dt.new_zeros(())
    bad_lengths_any, bad_dt_any, unsorted = torch.stack(
        [bad_lengths.any(), bad_dt.any(), unsorted]).tolist()  # one synchronisation
    if not (bad_lengths_any or bad_dt_any):
        return not unsorted
    if bad_lengths.any():
        raise lengths_range_error(lengths, bad_lengths, seq_len)
    position, row = torch.nonzero(bad_dt)[0].tolist()
    raise ValueError(f"dt must be finite and >= 0; row {row} has {dt[position, row].item()} at "
                     f"position {position}")
