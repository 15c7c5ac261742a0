"""``LSTM`` and ``GRU``: drop-in replacements for torch.nn.LSTM and torch.nn.GRU.

They are built like torch's own: on ``torch.nn.RNNBase`` in mode "LSTM" / "GRU", so constructor
arguments, parameter names and shapes, gate order, initialisation, ``state_dict``,
``flatten_parameters`` and ``repr`` are torch's. Only ``forward`` differs: it runs
``stseq.ops.lstm`` / ``stseq.ops.gru`` (fused C++/CUDA time loop) and takes a keyword
``lengths=`` for padded variable-length batches. (They do not subclass torch.nn.LSTM/GRU
themselves: torch.compile refuses to trace instances of those.)

TorchScript (``torch.jit.script`` / ``torch.jit.trace``) is not supported: ``forward`` goes
through Python-level argument checks, backend selection and the custom-op dispatch of
``stseq.ops``, which TorchScript cannot compile, and takes ``lengths`` keyword-only. Scripting
one raises a TypeError that says so; ``torch.compile(fullgraph=True)`` is the supported path
(the ops have fake kernels and autograd formulas for it).
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from stseq import ops
from stseq.backends import check_backend
from stseq.nn import recurrent


def _check_state_dims(mode, hx, dims):
    if mode == "lstm" and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        raise ValueError("hx must be a tuple (h_0, c_0) for an LSTM")
    states = hx if mode == "lstm" else (hx,)
    if any(not isinstance(h, torch.Tensor) or h.dim() != dims for h in states):
        kind = "batched 3-D" if dims == 3 else "unbatched 2-D"
        shapes = [tuple(h.shape) if isinstance(h, torch.Tensor) else h for h in states]
        raise ValueError(f"for {kind} input, hx must be {dims}-D "
                         f"{'(h_0, c_0) tensors' if mode == 'lstm' else 'tensor'}, got {shapes}")


def _refuse_torchscript(module):
    raise TypeError(
        f"stseq.nn.{type(module).__name__} does not support TorchScript (torch.jit.script): its "
        "forward runs Python-level argument checks, backend selection and stseq's custom ops, "
        "and takes lengths= keyword-only. Use torch.compile(module, fullgraph=True) instead, "
        f"or torch.nn.{type(module).__name__} where TorchScript is required.")


def _recurrent_forward(module, mode, input, hx, lengths):
    """torch.nn.LSTM/GRU.forward's contract on the stseq op."""
    module._update_flat_weights()
    run = ops.lstm if mode == "lstm" else ops.gru
    config = dict(bias=module.bias, num_layers=module.num_layers, dropout=module.dropout,
                  training=module.training, bidirectional=module.bidirectional,
                  backend=module.backend)
    if isinstance(input, PackedSequence):
        if lengths is not None:
            raise ValueError("lengths= is for padded tensors; a PackedSequence carries its own")
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if hx is not None:
            _check_state_dims(mode, hx, 3)
            hx = module.permute_hidden(hx, sorted_indices)
        output, hidden = run(data, hx, module._flat_weights, batch_sizes=batch_sizes, **config)
        return (PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
                module.permute_hidden(hidden, unsorted_indices))
    if not isinstance(input, torch.Tensor) or input.dim() not in (2, 3):
        shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"input must be a 3-D batch [L, B, I] ([B, L, I] with batch_first), a "
                         f"2-D unbatched sequence [L, I] or a PackedSequence, got {shape}")
    batched = input.dim() == 3
    if hx is not None:
        _check_state_dims(mode, hx, 3 if batched else 2)
    if not batched:
        input = input.unsqueeze(0 if module.batch_first else 1)
        if hx is not None:
            hx = tuple(h.unsqueeze(1) for h in hx) if mode == "lstm" else hx.unsqueeze(1)
    output, hidden = run(input, hx, module._flat_weights, batch_first=module.batch_first,
                         lengths=lengths, **config)
    if not batched:
        output = output.squeeze(0 if module.batch_first else 1)
        hidden = tuple(h.squeeze(1) for h in hidden) if mode == "lstm" else hidden.squeeze(1)
    return output, hidden


class LSTM(nn.RNNBase):
    """torch.nn.LSTM with a fused C++/CUDA time loop; same arguments, parameters and results.

    Args: as torch.nn.LSTM (input_size, hidden_size, num_layers, bias, batch_first, dropout,
    bidirectional, proj_size, device, dtype), plus keyword-only ``backend``: ``"auto"``,
    ``"native"`` or ``"reference"``.

    ``forward(input, hx=None, *, lengths=None)``: input [L, B, I] ([B, L, I] with
    ``batch_first``), unbatched [L, I], or a PackedSequence; ``lengths`` [B] gives the valid
    steps of each row of a padded batch (padded outputs are zero, h_n/c_n are each row's last
    valid state, the reverse direction starts at each row's end). Returns
    ``(output, (h_n, c_n))`` as torch.nn.LSTM does. dtypes as torch.nn.LSTM: float32 and
    float64; bfloat16 and float16 too (on the CPU computed in float32, states included).
    TorchScript is not supported (see the module docstring): use ``torch.compile``.

    Example::

        lstm = stseq.nn.LSTM(16, 32, num_layers=2, batch_first=True)
        lstm.load_state_dict(torch.nn.LSTM(16, 32, 2, batch_first=True).state_dict())
        x = torch.randn(8, 50, 16)                               # [B, L, I]
        out, (h_n, c_n) = lstm(x, lengths=torch.randint(1, 51, (8,)))
    """

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        self.backend = check_backend(backend)

    def permute_hidden(self, hx, permutation):
        """(h, c) with their batch rows reordered by ``permutation`` (None: unchanged)."""
        return recurrent.permute_states(tuple(hx), permutation)

    def forward(self, input, hx=None, *, lengths=None):
        return _recurrent_forward(self, "lstm", input, hx, lengths)

    def __prepare_scriptable__(self):
        _refuse_torchscript(self)

    def extra_repr(self):
        text = super().extra_repr()
        return text if self.backend == "auto" else f"{text}, backend={self.backend!r}"


class GRU(nn.RNNBase):
    """torch.nn.GRU with a fused C++/CUDA time loop; same arguments, parameters and results.

    Args: as torch.nn.GRU, plus keyword-only ``backend``. ``forward(input, hx=None, *,
    lengths=None)`` as :class:`LSTM` (hx is h_0); returns ``(output, h_n)``. dtypes and
    TorchScript as :class:`LSTM`.

    Example::

        gru = stseq.nn.GRU(16, 32, bidirectional=True)
        out, h_n = gru(torch.randn(50, 8, 16))                   # [L, B, 2 * 32], [2, B, 32]
    """

    def __init__(self, *args, backend="auto", **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)
        self.backend = check_backend(backend)

    def forward(self, input, hx=None, *, lengths=None):
        return _recurrent_forward(self, "gru", input, hx, lengths)

    def __prepare_scriptable__(self):
        _refuse_torchscript(self)

    def extra_repr(self):
        text = super().extra_repr()
        return text if self.backend == "auto" else f"{text}, backend={self.backend!r}"
