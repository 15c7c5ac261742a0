"""Time-aware recurrent modules: ``TimeLSTM`` (Time-LSTM 1-3), ``TLSTM`` (T-LSTM) and
``TimeDecayGRU``, stacked and bidirectional like torch.nn.LSTM, plus ``time_deltas`` to turn
timestamps into the time gaps they read."""

import math

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from stseq import ops
from stseq.backends import check_backend
from stseq.nn import recurrent
from stseq.ops.checks import check_sequences
from stseq.ops.time_rnn import TIME_LSTM_BLOCKS
from stseq.ops.time_rnn_args import ACTIVATIONS, sequence_in_length_order
from stseq.time import check_gap_transform, check_time_unit, gaps_before, transform_gaps


def time_deltas(timestamps, lengths=None, *, time_unit=1.0):
    """Time gaps between consecutive events: [B, L] timestamps -> [B, L] float64.

    dt[:, 0] = 0 and dt[:, t] = (timestamps[:, t] - timestamps[:, t-1]) / time_unit; positions
    at or past a row's length are 0. The differences are taken in the timestamps' own dtype
    (exact for int64 epoch seconds) before any floating-point division.

    Args:
        timestamps: [B, L] int64 seconds or float64, non-decreasing within each row.
        lengths: [B] integer, optional.
        time_unit: seconds per unit of the result (e.g. 3600.0 for hours).

    Example::

        ts = torch.tensor([[1_700_000_000, 1_700_000_060, 1_700_003_660]])
        time_deltas(ts, time_unit=60.0)  # tensor([[ 0.,  1., 60.]], dtype=torch.float64)
    """
    check_sequences(timestamps, lengths)
    time_unit = check_time_unit(time_unit)
    return gaps_before(timestamps, lengths) / time_unit


def _reverse_gaps(dt, lengths):
    """The gaps a reverse pass reads: position t follows t+1, so it gets dt[t+1], the gap after
    the event (``stseq.time.gaps_after``; 0 at each row's last position). dt [L, B] -> [L, B]."""
    following = torch.cat([dt[1:], torch.zeros_like(dt[:1])], 0)
    if lengths is None:
        return following
    before_last = torch.arange(dt.shape[0], device=dt.device)[:, None] < (lengths - 1)[None, :]
    return torch.where(before_last, following, torch.zeros((), dtype=dt.dtype, device=dt.device))


class _TimeRNNBase(nn.Module):
    """Layers, directions, parameters and the forward shared by the time-aware modules.

    A subclass sets ``_state_count`` (2 for LSTM cells, 1 for the GRU) and implements
    ``_parameter_shapes(layer_input_size)`` -> [(name, shape, is_bias)], ``_init_parameter``
    and ``_run(input, dt, states, parameters, lengths, reverse)`` -> (output, *states).
    """

    _state_count = 2

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, time_unit=1.0, gap_transform="none",
                 backend="auto", device=None, dtype=None):
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        time_unit = check_time_unit(time_unit)
        self.gap_transform = check_gap_transform(gap_transform)
        check_backend(backend)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.time_unit, self.backend = bidirectional, float(time_unit), backend
        # Per (layer, direction), in op order: (cell parameter name, attribute name, shape).
        self._layer_specs = []
        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                specs = []
                for name, shape, is_bias in self._parameter_shapes(layer_input):
                    if is_bias and not bias:
                        self.register_parameter(name + suffix, None)
                    else:
                        setattr(self, name + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    specs.append((name, name + suffix, shape))
                self._layer_specs.append(specs)
        self.reset_parameters()

    def reset_parameters(self):
        """Every weight ~ U(-1/sqrt(H), 1/sqrt(H)) as in torch.nn.LSTM, with the cell's own
        exceptions (``_init_parameter``)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for specs in self._layer_specs:
            for name, attribute, _ in specs:
                parameter = getattr(self, attribute)
                if parameter is not None:
                    nn.init.uniform_(parameter, -bound, bound)
                    self._init_parameter(name, parameter)

    def _init_parameter(self, name, parameter):
        """Cell-specific initialisation after the uniform default (none by default)."""

    def forward(self, input, dt, hx=None, lengths=None):
        """Run the layers over a batch, like torch.nn.LSTM / GRU.forward with the time gaps.

        Three kinds of input, returning what torch.nn.LSTM returns for each:

        - padded: input [L, B, I] ([B, L, I] with batch_first), dt [L, B] ([B, L]), optional
          lengths [B] -> output [L, B, D*H] ([B, L, D*H]); rows are sorted by length so that no
          step computes padding, and padded positions output zeros;
        - a PackedSequence (``pack_padded_sequence(x, lengths, enforce_sorted=False)``) with dt
          either packed the same way (``pack_padded_sequence(dt, lengths, ...)``, data [N]) or
          padded [T, B] ([B, T] with batch_first) in the batch's own row order (T >= the
          longest length) -> a PackedSequence output (no ``lengths=``: the pack has its own);
        - unbatched: input [L, I], dt [L] -> output [L, D*H], states [num_layers * D, H].

        dt is the gap before each event in seconds (``stseq.time.gaps_before``; the cell reads
        ``dt / time_unit``, or ``log1p(dt / time_unit)`` with ``gap_transform="log1p"``, see
        ``stseq.time``); hx the initial state(s)
        [num_layers * D, B, H] (``(h_0, c_0)`` for the LSTM cells), zeros when None. Final
        states [num_layers * D, B, H] are each row's state after its last valid step; the
        reverse direction starts at each row's own end and reads, at position t, the gap to the
        event after it (dt[t+1]).
        """
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, dt, hx, lengths)
        if not isinstance(input, torch.Tensor) or input.dim() not in (2, 3):
            shape = "[B, L, I]" if self.batch_first else "[L, B, I]"
            raise ValueError(f"input must be a 3-D tensor {shape}, a 2-D unbatched sequence "
                             f"[L, I] or a PackedSequence, got "
                             f"{getattr(input, 'shape', type(input).__name__)}")
        if input.dim() == 2:
            return self._forward_unbatched(input, dt, hx, lengths)
        if not isinstance(dt, torch.Tensor) or dt.dim() != 2:
            shape = "[B, L]" if self.batch_first else "[L, B]"
            raise ValueError(f"dt must be a 2-D tensor {shape}, got "
                             f"{getattr(dt, 'shape', type(dt).__name__)}")
        if self.batch_first:
            input, dt = input.transpose(0, 1), dt.transpose(0, 1)
        states = self._initial_states(hx, input, self._compute_dtype(input))
        output, finals = self._layers(input, dt, states, lengths)
        return self._result(output.transpose(0, 1) if self.batch_first else output, finals)

    def _forward_unbatched(self, input, dt, hx, lengths):
        """input [L, I], dt [L], states [num_layers * D, H] -> a batch of one row."""
        if lengths is not None:
            raise ValueError("lengths= is for padded batches; an unbatched [L, I] input is one "
                             "sequence of length L")
        if not isinstance(dt, torch.Tensor) or dt.dim() != 1:
            raise ValueError(f"for unbatched 2-D input [L, I], dt must be a 1-D tensor [L], got "
                             f"{getattr(dt, 'shape', type(dt).__name__)}")
        if hx is not None:
            given = tuple(hx) if self._state_count == 2 and isinstance(hx, (tuple, list)) else (
                hx,)
            if any(not isinstance(h, torch.Tensor) or h.dim() != 2 for h in given):
                raise ValueError("for unbatched 2-D input, hx must be 2-D [num_layers * D, H] "
                                 + ("(h_0, c_0) tensors" if self._state_count == 2 else "tensor"))
            hx = (tuple(h.unsqueeze(1) for h in given) if self._state_count == 2
                  else given[0].unsqueeze(1))
        input, dt = input.unsqueeze(1), dt.unsqueeze(1)  # [L, 1, I], [L, 1]
        output, finals = self._layers(input, dt, self._initial_states(
            hx, input, self._compute_dtype(input)), None)
        return self._result(output.squeeze(1), [f.squeeze(1) for f in finals])

    def _forward_packed(self, input, dt, hx, lengths):
        """A PackedSequence through the padded path in the pack's sorted row order (the lengths
        are non-increasing, so the kernels skip finished rows without sorting again)."""
        if lengths is not None:
            raise ValueError("lengths= is for padded tensors; a PackedSequence carries its own")
        data, batch_sizes, sorted_indices, unsorted_indices = input
        x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))  # [T, B, I], [B]
        gaps = self._packed_gaps(dt, input, x.shape[0])  # [T, B], sorted rows
        states = self._initial_states(hx, x, self._compute_dtype(x))
        states = recurrent.permute_states(states, sorted_indices)
        output, finals = self._layers(x, gaps, states, lengths.to(x.device))
        packed = pack_padded_sequence(output, lengths)  # rows of the same batch_sizes
        finals = recurrent.permute_states(finals, unsorted_indices)
        return self._result(PackedSequence(packed.data, batch_sizes, sorted_indices,
                                           unsorted_indices), finals)

    def _packed_gaps(self, dt, input, steps):
        """The gaps of a PackedSequence input as [T, B] in its sorted row order: dt packed the
        same way, or padded in the batch's own order."""
        if isinstance(dt, PackedSequence):
            if dt.data.dim() != 1 or not torch.equal(dt.batch_sizes, input.batch_sizes):
                raise ValueError("a packed dt must be packed like input (same lengths, data [N]): "
                                 "pack_padded_sequence(dt, lengths, ...)")
            gaps, _ = pad_packed_sequence(PackedSequence(dt.data, dt.batch_sizes))
            return gaps
        if not isinstance(dt, torch.Tensor) or dt.dim() != 2:
            raise ValueError(f"with a PackedSequence input, dt must be a PackedSequence packed "
                             f"like it or a padded 2-D tensor, got "
                             f"{getattr(dt, 'shape', type(dt).__name__)}")
        gaps = dt.transpose(0, 1) if self.batch_first else dt  # [T', B]
        batch = int(input.batch_sizes[0])
        if gaps.shape[1] != batch or gaps.shape[0] < steps:
            shape = "[B, T]" if self.batch_first else "[T, B]"
            raise ValueError(f"a padded dt for a PackedSequence must have shape {shape} with "
                             f"B = {batch} and T >= {steps} (the longest sequence), got "
                             f"{list(dt.shape)}")
        if input.sorted_indices is not None:
            gaps = gaps.index_select(1, input.sorted_indices)
        return gaps[:steps]

    def _layers(self, input, dt, states, lengths):
        """Every layer and direction over time-major input [L, B, I], dt [L, B] seconds, states
        [num_layers * D, B, H] each -> (output [L, B, D*H], final states)."""
        compute_dtype = self._compute_dtype(input)
        input = input.to(compute_dtype)
        gap_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
        dt = transform_gaps(dt, self.time_unit, self.gap_transform).to(gap_dtype)
        if lengths is not None and lengths.device != input.device:
            raise ValueError(f"lengths is on {lengths.device} but input is on {input.device}")
        order = None
        if self.backend != "reference" and not sequence_in_length_order(input, dt, lengths):
            # Rows sorted by length once for every layer (the kernels run the rows still going
            # at each step, a prefix); results come back in the caller's order.
            order = recurrent.length_order(lengths)
            input, dt = input.index_select(1, order), dt.index_select(1, order)
            states, lengths = recurrent.permute_states(states, order), lengths[order]
        directions = 2 if self.bidirectional else 1
        gaps = [dt, _reverse_gaps(dt, lengths)] if directions == 2 else [dt]

        def run_layer(layer_input, layer_states, index, reverse):  # one layer, one direction
            return self._run(layer_input, gaps[int(reverse)], layer_states,
                             self._layer_parameters(index, compute_dtype), lengths, reverse)

        output, finals = recurrent.run_layers(
            run_layer, input, states, num_layers=self.num_layers, directions=directions,
            dropout=self.dropout, training=self.training)
        if order is not None:
            output, finals = recurrent.restore_order(order, output, finals)
        return output, finals

    def _result(self, output, finals):
        return output, tuple(finals) if self._state_count == 2 else finals[0]

    def _compute_dtype(self, input):
        """input's dtype, or CUDA autocast's when it is on (weights and states follow; CPU
        autocast leaves input's dtype)."""
        return recurrent.autocast_dtype(input) or input.dtype

    def _initial_states(self, hx, input, dtype):
        """The initial states as a list of [num_layers * D, B, H] tensors (zeros by default);
        input is time-major [L, B, I]."""
        shape = (self.num_layers * (2 if self.bidirectional else 1), input.shape[1],
                 self.hidden_size)
        if hx is None:
            return [input.new_zeros(shape, dtype=dtype) for _ in range(self._state_count)]
        given = tuple(hx) if self._state_count == 2 else (hx,)
        names = ("h_0", "c_0")[:self._state_count]
        if len(given) != self._state_count or not all(isinstance(s, torch.Tensor) for s in given):
            raise ValueError(f"hx must be {'(h_0, c_0)' if self._state_count == 2 else 'h_0'}, "
                             f"tensors of shape {list(shape)}")
        for name, state in zip(names, given):
            if tuple(state.shape) != shape:
                raise ValueError(f"hx {name} must have shape [num_layers * D, B, H] = "
                                 f"{list(shape)}, got {list(state.shape)}")
        return [state.to(dtype) for state in given]

    def _layer_parameters(self, index, dtype):
        """The parameters of layer/direction ``index`` in op order, in ``dtype`` (zeros for
        absent biases)."""
        specs = self._layer_specs[index]
        weight_ih = getattr(self, specs[0][1])
        return [weight_ih.new_zeros(shape, dtype=dtype) if getattr(self, attribute) is None
                else getattr(self, attribute).to(dtype) for _, attribute, shape in specs]

    def extra_repr(self):
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("time_unit", 1.0),
                              ("gap_transform", "none"), ("backend", "auto")):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)!r}"
        return text


class TimeLSTM(_TimeRNNBase):
    """Time-LSTM (Zhu et al., IJCAI 2017), fused: time gates let the gap between events decide
    how much of each input enters the memory (variants 1, 2 and 3; equations in
    :func:`stseq.ops.time_lstm`).

    Parameters per layer k (``_reverse`` suffix for the reverse direction), G/R/P/K blocks by
    variant (v1: 5/4/3/2, v2: 6/4/3/3, v3: 5/3/2/3):

    - ``weight_ih_l{k}`` [G*H, I]: blocks [i, f, g, o, t] (v1), [i, f, g, o, t1, t2] (v2),
      [i, g, o, t1, t2] (v3); ``weight_hh_l{k}`` [R*H, H]: the first R blocks;
      ``bias_l{k}`` [G*H];
    - ``peephole_l{k}`` [P, H]: diagonal peepholes w_ci, w_cf, w_co (v3: w_ci, w_co);
    - ``time_weight_l{k}`` [K, H]: w_t, w_to (v1) or w_t1, w_t2, w_to; w_t1 starts in [-1, 0]
      (the authors' initialisation) and the gate uses min(w_t1, -1e-5).

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            torch.nn.LSTM.
        variant: 1, 2 or 3.
        time_activation: phi inside the time gates, ``"tanh"`` (the authors' code) or
            ``"sigmoid"`` (the paper).
        time_unit: seconds per unit of dt inside the cell (dt is divided by it).
        gap_transform: "none" (the cell reads dt / time_unit) or "log1p" (log1p(dt /
            time_unit)); see ``stseq.time``.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.

    Example::

        lstm = stseq.nn.TimeLSTM(32, 64, variant=2, batch_first=True, time_unit=3600.0)
        x, dt = torch.randn(8, 20, 32), torch.rand(8, 20) * 86400   # gaps in seconds
        lengths = torch.randint(1, 21, (8,))
        output, (h_n, c_n) = lstm(x, dt, lengths=lengths)         # [8, 20, 64]
        pack = functools.partial(torch.nn.utils.rnn.pack_padded_sequence, lengths=lengths,
                                 batch_first=True, enforce_sorted=False)
        packed_output, _ = lstm(pack(x), pack(dt))                 # a PackedSequence
        output, (h_n, c_n) = lstm(x[0], dt[0])                     # unbatched: [20, 64]
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, variant=1, time_activation="tanh",
                 time_unit=1.0, gap_transform="none", backend="auto", device=None,
                 dtype=None):
        if variant not in TIME_LSTM_BLOCKS:
            raise ValueError(f"variant must be 1, 2 or 3, got {variant!r}")
        if time_activation not in ACTIVATIONS:
            raise ValueError(f"time_activation must be one of {ACTIVATIONS}, got "
                             f"{time_activation!r}")
        self.variant, self.time_activation = variant, time_activation
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, time_unit=time_unit, gap_transform=gap_transform,
                         backend=backend, device=device,
                         dtype=dtype)

    def _parameter_shapes(self, layer_input):
        gates, recurrent, peepholes, time_rows, _ = TIME_LSTM_BLOCKS[self.variant]
        hidden = self.hidden_size
        return [("weight_ih", (gates * hidden, layer_input), False),
                ("weight_hh", (recurrent * hidden, hidden), False),
                ("bias", (gates * hidden,), True),
                ("peephole", (peepholes, hidden), False),
                ("time_weight", (time_rows, hidden), False)]

    def _init_parameter(self, name, parameter):
        if name == "time_weight" and self.variant != 1:
            with torch.no_grad():
                nn.init.uniform_(parameter[0], -1.0, 0.0)  # w_t1 <= 0

    def _run(self, input, dt, states, parameters, lengths, reverse):
        return ops.time_lstm(input, dt, *states, *parameters, lengths=lengths,
                             variant=self.variant, time_activation=self.time_activation,
                             reverse=reverse, backend=self.backend)

    def extra_repr(self):
        return (super().extra_repr() + f", variant={self.variant}"
                + (f", time_activation={self.time_activation!r}"
                   if self.time_activation != "tanh" else ""))


class TLSTM(_TimeRNNBase):
    """T-LSTM (Baytas et al., KDD 2017), fused: the short-term part of the cell memory is
    discounted by g(dt) = 1 / log(e + dt) before each LSTM step (equations in
    :func:`stseq.ops.tlstm`).

    Parameters per layer k: torch.nn.LSTM's ``weight_ih_l{k}`` [4H, I], ``weight_hh_l{k}``
    [4H, H], ``bias_ih_l{k}``, ``bias_hh_l{k}`` [4H] (gate order i, f, g, o, so an nn.LSTM
    state_dict loads with ``strict=False``), plus ``decay_weight_l{k}`` W_d [H, H] and
    ``decay_bias_l{k}`` b_d [H] of the short-term memory.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            torch.nn.LSTM.
        short_term_activation: ``"sigmoid"`` (the authors' code) or ``"tanh"`` (the paper).
        time_unit: seconds per unit of dt inside the cell.
        gap_transform: "none" or "log1p" (see ``stseq.time``).
        backend: ``"auto"``, ``"native"`` or ``"reference"``.

    Example::

        lstm = stseq.nn.TLSTM(32, 64, time_unit=86400.0)   # gaps in days
        output, (h_n, c_n) = lstm(torch.randn(20, 8, 32), torch.rand(20, 8) * 7 * 86400)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, short_term_activation="sigmoid",
                 time_unit=1.0, gap_transform="none", backend="auto", device=None,
                 dtype=None):
        if short_term_activation not in ACTIVATIONS:
            raise ValueError(f"short_term_activation must be one of {ACTIVATIONS}, got "
                             f"{short_term_activation!r}")
        self.short_term_activation = short_term_activation
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, time_unit=time_unit, gap_transform=gap_transform,
                         backend=backend, device=device,
                         dtype=dtype)

    def _parameter_shapes(self, layer_input):
        hidden = self.hidden_size
        return [("weight_ih", (4 * hidden, layer_input), False),
                ("weight_hh", (4 * hidden, hidden), False),
                ("bias_ih", (4 * hidden,), True),
                ("bias_hh", (4 * hidden,), True),
                ("decay_weight", (hidden, hidden), False),
                ("decay_bias", (hidden,), False)]

    def _run(self, input, dt, states, parameters, lengths, reverse):
        weight_ih, weight_hh, bias_ih, bias_hh, decay_weight, decay_bias = parameters
        return ops.tlstm(input, dt, *states, weight_ih, weight_hh, bias_ih + bias_hh,
                         decay_weight, decay_bias, lengths=lengths,
                         short_term_activation=self.short_term_activation, reverse=reverse,
                         backend=self.backend)

    def extra_repr(self):
        return super().extra_repr() + (
            f", short_term_activation={self.short_term_activation!r}"
            if self.short_term_activation != "sigmoid" else "")


class TimeDecayGRU(_TimeRNNBase):
    """GRU with GRU-D-style hidden-state decay (Che et al., 2018), fused: before each step the
    state decays by exp(-max(0, w_gamma * dt + b_gamma)) (equations in
    :func:`stseq.ops.time_decay_gru`).

    Parameters per layer k: torch.nn.GRU's ``weight_ih_l{k}`` [3H, I], ``weight_hh_l{k}``
    [3H, H], ``bias_ih_l{k}``, ``bias_hh_l{k}`` [3H] (an nn.GRU state_dict loads with
    ``strict=False``), plus ``decay_weight_l{k}`` w_gamma [H] and ``decay_bias_l{k}``
    b_gamma [H]; with both zero the module is torch.nn.GRU.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            torch.nn.GRU.
        time_unit: seconds per unit of dt inside the cell.
        gap_transform: "none" or "log1p" (see ``stseq.time``).
        backend: ``"auto"``, ``"native"`` or ``"reference"``.

    Example::

        gru = stseq.nn.TimeDecayGRU(32, 64, batch_first=True, time_unit=3600.0)
        output, h_n = gru(torch.randn(8, 20, 32), torch.rand(8, 20) * 86400)
    """

    _state_count = 1

    def _parameter_shapes(self, layer_input):
        hidden = self.hidden_size
        return [("weight_ih", (3 * hidden, layer_input), False),
                ("weight_hh", (3 * hidden, hidden), False),
                ("bias_ih", (3 * hidden,), True),
                ("bias_hh", (3 * hidden,), True),
                ("decay_weight", (hidden,), False),
                ("decay_bias", (hidden,), False)]

    def _run(self, input, dt, states, parameters, lengths, reverse):
        return ops.time_decay_gru(input, dt, *states, *parameters, lengths=lengths,
                                  reverse=reverse, backend=self.backend)
