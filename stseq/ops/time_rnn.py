"""Time-aware recurrent layers, fused: ``time_lstm`` (Time-LSTM 1-3), ``tlstm`` (T-LSTM) and
``time_decay_gru``, one layer in one direction over a time-major batch.

Native ops ``torch.ops.stseq.{time_lstm, tlstm, time_decay_gru}`` (C++ CPU, CUDA when built):
one GEMM projects the inputs of all steps onto every gate (the time gates' included), a C++ time
loop runs the recurrent GEMM and one fused element step per cell with the dt terms, and the
backward (the ops ``*_backward``) walks the steps in reverse, then computes dx, dW_ih and dW_hh
as large GEMMs. Each has a fake impl for ``torch.compile`` and an autograd formula whose
backward is itself an op; the twins are in ``stseq.reference.time_rnn``.

Shared conventions: input [L, B, I]; dt [L, B] the time gap (>= 0, in the caller's time unit)
applied when position t is processed; lengths [B] (positions at or past a row's length are
padding: output zero, never computed: the native path sorts the rows by length so that each
step runs only the rows still going); ``reverse=True`` runs each row from its own last position
down to 0. Gradients flow to input, the initial states and every weight, not to dt or lengths.
"""

import torch

from stseq import reference
from stseq._native import NATIVE
from stseq.backends import resolve
from stseq.ops._autograd import eager_op, register_autograd
from stseq.ops.time_rnn_args import check_activation, check_parameters, check_sequence

# Time-LSTM variant -> (gate blocks G, recurrent blocks R, peephole rows P, time rows K, saved
# cell-state blocks C); see csrc/time_rnn/time_lstm.h (T-LSTM: tlstm.h, time-decay GRU:
# time_decay_gru.h).
TIME_LSTM_BLOCKS = {1: (5, 4, 3, 2, 1), 2: (6, 4, 3, 3, 1), 3: (5, 3, 2, 3, 1)}
TLSTM_GATES, TLSTM_CELLS = 4, 2
TIME_DECAY_GRU_GATES, TIME_DECAY_GRU_CELLS = 3, 3


def time_lstm(input, dt, h0, c0, weight_ih, weight_hh, bias, peephole, time_weight, *,
              lengths=None, variant=1, time_activation="tanh", reverse=False, backend=None):
    """Time-LSTM (Zhu et al., IJCAI 2017) over a sequence -> (output [L, B, H], h_n, c_n).

    With x the input at a position, (h, c) the state before it, dt its time gap, phi the
    ``time_activation`` (``"tanh"``, the authors' code, or ``"sigmoid"``, the paper)::

        i  = sigmoid(W_xi x + W_hi h + w_ci * c + b_i)
        f  = sigmoid(W_xf x + W_hf h + w_cf * c + b_f)                    (variants 1, 2)
        g  = tanh(W_xg x + W_hg h + b_g)
        T1 = sigmoid(W_xt1 x + phi(dt * w_t1) + b_t1)                      (w_t in variant 1)
        T2 = sigmoid(W_xt2 x + phi(dt * w_t2) + b_t2)                      (variants 2, 3)
        variant 1: c' = f * c + i * T1 * g;                c_out = c'
        variant 2: c~ = f * c + i * T1 * g; c' = f * c + i * T2 * g;          c_out = c~
        variant 3: c~ = (1 - i * T1) * c + i * T1 * g; c' = (1 - i) * c + i * T2 * g; c_out = c~
        o  = sigmoid(W_xo x + W_ho h + dt * w_to + w_co * c_out + b_o);   h' = o * tanh(c_out)

    c' is the carried cell state. Variants 2 and 3 constrain w_t1 <= 0: the gate uses
    min(w_t1, -1e-5) (the gradient passes where w_t1 <= -1e-5).

    Args:
        input: [L, B, I]. dt: [L, B] float, >= 0. h0, c0: [B, H].
        weight_ih: [G*H, I], blocks [i, f, g, o, t] (variant 1), [i, f, g, o, t1, t2] (2),
            [i, g, o, t1, t2] (3). weight_hh: [R*H, H], the first 4 (variant 3: 3) blocks.
        bias: [G*H]. peephole: [3, H] rows w_ci, w_cf, w_co (variant 3: [2, H], w_ci, w_co).
        time_weight: [2, H] rows w_t, w_to (variant 1) or [3, H] rows w_t1, w_t2, w_to.
        lengths: [B] integer. reverse: run each row from its last valid position down.
        backend: ``"auto"``, ``"native"`` or ``"reference"``.

    Example::

        L, B, I, H = 20, 4, 8, 16
        weights = [torch.randn(5 * H, I), torch.randn(4 * H, H), torch.zeros(5 * H),
                   torch.zeros(3, H), torch.zeros(2, H)]
        out, h_n, c_n = stseq.ops.time_lstm(torch.randn(L, B, I), torch.rand(L, B),
                                            torch.zeros(B, H), torch.zeros(B, H), *weights)
    """
    if variant not in TIME_LSTM_BLOCKS:
        raise ValueError(f"variant must be 1, 2 or 3, got {variant!r}")
    gates, recurrent, peepholes, time_rows, _ = TIME_LSTM_BLOCKS[variant]
    hidden, in_order = check_sequence(input, dt, lengths, weight_hh, recurrent)
    check_parameters(input, hidden, states={"h0": h0, "c0": c0},
                      vectors={"bias": (bias, gates)},
                      matrices={"weight_ih": (weight_ih, (gates * hidden, input.shape[2]),
                                              "[G*H, I]"),
                                "peephole": (peephole, (peepholes, hidden), f"[{peepholes}, H]"),
                                "time_weight": (time_weight, (time_rows, hidden),
                                                f"[{time_rows}, H]")})
    check_activation(time_activation, "time_activation")
    choice = resolve("time_lstm", backend, input.device, native=True, triton=False)
    if choice == "native":
        save = _needs_workspace(input, h0, c0, weight_ih, weight_hh, bias, peephole, time_weight)
        return _by_length(
            lambda x, gaps, states, n: eager_op("time_lstm", save)(
                x, gaps, *states, n, weight_ih, weight_hh, bias, peephole, time_weight, variant,
                time_activation, bool(reverse), save)[:3],
            input, dt, [h0, c0], lengths, in_order)
    return reference.time_lstm(
        input, dt, h0, c0, weight_ih, weight_hh, bias, peephole, time_weight, lengths=lengths,
        variant=variant, time_activation=time_activation, reverse=reverse)


def tlstm(input, dt, h0, c0, weight_ih, weight_hh, bias, decay_weight, decay_bias, *,
          lengths=None, short_term_activation="sigmoid", reverse=False, backend=None):
    """T-LSTM (Baytas et al., KDD 2017) over a sequence -> (output [L, B, H], h_n, c_n).

    The short-term part of the cell state is discounted by the time gap before a standard LSTM
    step (gate blocks [i, f, g, o] as torch.nn.LSTM; ``bias`` is b_ih + b_hh)::

        C_S = act(W_d c + b_d)        act: "sigmoid" (the authors' code, default) or "tanh"
        c*  = c - C_S + g(dt) * C_S   g(dt) = 1 / log(e + dt)
        i, f, g, o = W_ih x + W_hh h + bias;  c' = sigmoid(f) * c* + sigmoid(i) * tanh(g)
        h'  = sigmoid(o) * tanh(c')

    Args:
        input: [L, B, I]. dt: [L, B] float, >= 0. h0, c0: [B, H].
        weight_ih: [4H, I]. weight_hh: [4H, H]. bias: [4H].
        decay_weight: W_d [H, H]. decay_bias: b_d [H].
        lengths, reverse, backend: as :func:`time_lstm`.

    Example::

        L, B, I, H = 20, 4, 8, 16
        out, h_n, c_n = stseq.ops.tlstm(
            torch.randn(L, B, I), torch.rand(L, B), torch.zeros(B, H), torch.zeros(B, H),
            torch.randn(4 * H, I), torch.randn(4 * H, H), torch.zeros(4 * H),
            torch.randn(H, H), torch.zeros(H))
    """
    hidden, in_order = check_sequence(input, dt, lengths, weight_hh, 4)
    check_parameters(input, hidden, states={"h0": h0, "c0": c0},
                      vectors={"bias": (bias, 4), "decay_bias": (decay_bias, 1)},
                      matrices={"weight_ih": (weight_ih, (4 * hidden, input.shape[2]), "[4*H, I]"),
                                "decay_weight": (decay_weight, (hidden, hidden), "[H, H]")})
    check_activation(short_term_activation, "short_term_activation")
    choice = resolve("tlstm", backend, input.device, native=True, triton=False)
    if choice == "native":
        save = _needs_workspace(input, h0, c0, weight_ih, weight_hh, bias, decay_weight,
                                decay_bias)
        return _by_length(
            lambda x, gaps, states, n: eager_op("tlstm", save)(
                x, gaps, *states, n, weight_ih, weight_hh, bias, decay_weight, decay_bias,
                short_term_activation, bool(reverse), save)[:3],
            input, dt, [h0, c0], lengths, in_order)
    return reference.tlstm(
        input, dt, h0, c0, weight_ih, weight_hh, bias, decay_weight, decay_bias, lengths=lengths,
        short_term_activation=short_term_activation, reverse=reverse)


def time_decay_gru(input, dt, h0, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight,
                   decay_bias, *, lengths=None, reverse=False, backend=None):
    """GRU with GRU-D-style hidden-state decay over a sequence -> (output [L, B, H], h_n).

    Before each step the state decays with the time gap, then a torch.nn.GRU step runs::

        h~ = exp(-max(0, w_gamma * dt + b_gamma)) * h
        r = sigmoid(W_ir x + b_ir + W_hr h~ + b_hr);  z = sigmoid(W_iz x + b_iz + W_hz h~ + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h~ + b_hn));  h' = (1 - z) * n + z * h~

    Args:
        input: [L, B, I]. dt: [L, B] float, >= 0. h0: [B, H].
        weight_ih: [3H, I], weight_hh: [3H, H], bias_ih, bias_hh: [3H] (torch.nn.GRU's layout).
        decay_weight: w_gamma [H]. decay_bias: b_gamma [H].
        lengths, reverse, backend: as :func:`time_lstm`.

    Example::

        L, B, I, H = 20, 4, 8, 16
        out, h_n = stseq.ops.time_decay_gru(
            torch.randn(L, B, I), torch.rand(L, B), torch.zeros(B, H), torch.randn(3 * H, I),
            torch.randn(3 * H, H), torch.zeros(3 * H), torch.zeros(3 * H), torch.rand(H),
            torch.zeros(H))
    """
    hidden, in_order = check_sequence(input, dt, lengths, weight_hh, 3)
    check_parameters(input, hidden, states={"h0": h0},
                      vectors={"bias_ih": (bias_ih, 3), "bias_hh": (bias_hh, 3),
                               "decay_weight": (decay_weight, 1), "decay_bias": (decay_bias, 1)},
                      matrices={"weight_ih": (weight_ih, (3 * hidden, input.shape[2]),
                                              "[3*H, I]")})
    choice = resolve("time_decay_gru", backend, input.device, native=True, triton=False)
    if choice == "native":
        save = _needs_workspace(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight,
                                decay_bias)
        return _by_length(
            lambda x, gaps, states, n: eager_op("time_decay_gru", save)(
                x, gaps, *states, n, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight,
                decay_bias, bool(reverse), save)[:2],
            input, dt, [h0], lengths, in_order)
    return reference.time_decay_gru(
        input, dt, h0, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight, decay_bias,
        lengths=lengths, reverse=reverse)


def _by_length(call, input, dt, states, lengths, in_order):
    """call(input, dt, states, lengths) -> (output [L, B, H], *final states [B, H]) with the
    rows sorted by length, longest first, so that the kernels skip finished rows (they run the
    rows still going at each step, a prefix); results come back in the caller's row order.
    Rows already in order (checked eagerly; always sorted under torch.compile) are not copied."""
    if in_order:
        return tuple(call(input, dt, states, lengths))
    order = torch.argsort(lengths, descending=True, stable=True)  # [B]
    output, *finals = call(input.index_select(1, order), dt.index_select(1, order),
                           [s.index_select(0, order) for s in states],
                           lengths.index_select(0, order))
    inverse = torch.argsort(order)
    return (output.index_select(1, inverse), *(f.index_select(0, inverse) for f in finals))


def _needs_workspace(*tensors):
    """Whether autograd will call the backward, so the forward must save its activations."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------------
# Registration of the native ops: fake impls and autograd.

def _accumulation_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _saved(input, hidden, gate_blocks, cell_blocks, save):
    """Fake (gates [L, B, G*H], cells [L, B, C*H], recurrent_input [L, B, H]) of a forward: what
    a training forward saves for the backward (empty tensors otherwise)."""
    seq_len, batch, _ = input.shape
    acc = _accumulation_dtype(input.dtype)
    if not save:
        return input.new_empty((0,)), input.new_empty((0,), dtype=acc), input.new_empty((0,))
    return (input.new_empty((seq_len, batch, gate_blocks * hidden)),
            input.new_empty((seq_len, batch, cell_blocks * hidden), dtype=acc),
            input.new_empty((seq_len, batch, hidden)))


def _grad_or_zeros(grad, shape, like):
    return like.new_zeros(shape) if grad is None else grad


def _register_native():
    @torch.library.register_fake("stseq::time_lstm")
    def _(input, dt, h0, c0, lengths, weight_ih, weight_hh, bias, peephole, time_weight,
          variant, time_activation, reverse, save_workspace):
        seq_len, batch, _ = input.shape
        hidden = weight_hh.shape[1]
        gates, _, _, _, cells = TIME_LSTM_BLOCKS[variant]
        return (input.new_empty((seq_len, batch, hidden)), h0.new_empty(h0.shape),
                c0.new_empty(c0.shape)) + _saved(input, hidden, gates, cells, save_workspace)

    @torch.library.register_fake("stseq::tlstm")
    def _(input, dt, h0, c0, lengths, weight_ih, weight_hh, bias, decay_weight, decay_bias,
          short_term_activation, reverse, save_workspace):
        seq_len, batch, _ = input.shape
        hidden = weight_hh.shape[1]
        return (input.new_empty((seq_len, batch, hidden)), h0.new_empty(h0.shape),
                c0.new_empty(c0.shape)) + _saved(input, hidden, TLSTM_GATES, TLSTM_CELLS,
                                                 save_workspace)

    @torch.library.register_fake("stseq::time_decay_gru")
    def _(input, dt, h0, lengths, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight,
          decay_bias, reverse, save_workspace):
        seq_len, batch, _ = input.shape
        hidden = weight_hh.shape[1]
        return (input.new_empty((seq_len, batch, hidden)), h0.new_empty(h0.shape)) + _saved(
            input, hidden, TIME_DECAY_GRU_GATES, TIME_DECAY_GRU_CELLS, save_workspace)

    def like(*tensors):
        return tuple(t.new_empty(t.shape) for t in tensors)

    @torch.library.register_fake("stseq::time_lstm_backward")
    def _(grad_output, grad_h_n, grad_c_n, input, dt, lengths, weight_ih, weight_hh, peephole,
          time_weight, gates, cells, recurrent_input, variant, time_activation, reverse):
        bias = weight_ih.new_empty((weight_ih.shape[0],))
        return like(input, grad_h_n, grad_c_n, weight_ih, weight_hh, bias, peephole, time_weight)

    @torch.library.register_fake("stseq::tlstm_backward")
    def _(grad_output, grad_h_n, grad_c_n, input, dt, lengths, weight_ih, weight_hh,
          decay_weight, decay_bias, gates, cells, recurrent_input, short_term_activation,
          reverse):
        bias = weight_ih.new_empty((weight_ih.shape[0],))
        return like(input, grad_h_n, grad_c_n, weight_ih, weight_hh, bias, decay_weight,
                    decay_bias)

    @torch.library.register_fake("stseq::time_decay_gru_backward")
    def _(grad_output, grad_h_n, input, dt, lengths, weight_ih, weight_hh, decay_weight,
          decay_bias, gates, cells, recurrent_input, reverse):
        bias = weight_ih.new_empty((weight_ih.shape[0],))
        return like(input, grad_h_n, weight_ih, weight_hh, bias, bias, decay_weight, decay_bias)

    # time_lstm / tlstm: inputs (input, dt, h0, c0, lengths, weight_ih, weight_hh, bias, p1, p2,
    # *config, save); outputs (output, h_n, c_n, gates, cells, recurrent_input).
    def lstm_setup_context(ctx, inputs, output):
        input, dt, _, _, lengths, weight_ih, weight_hh, _, extra1, extra2, *config = inputs
        ctx.config = config[:-1]  # without save_workspace
        ctx.mark_non_differentiable(*output[3:])
        ctx.set_materialize_grads(False)  # no zero-filled gradients for the saved tensors
        ctx.save_for_backward(input, dt, lengths, weight_ih, weight_hh, extra1, extra2,
                              *output[3:])

    def lstm_backward(op):
        def backward(ctx, grad_output, grad_h_n, grad_c_n, *_saved_grads):
            (input, dt, lengths, weight_ih, weight_hh, extra1, extra2, gates, cells,
             recurrent_input) = ctx.saved_tensors
            seq_len, batch, _ = input.shape
            hidden = weight_hh.shape[1]
            grads = op(_grad_or_zeros(grad_output, (seq_len, batch, hidden), input),
                       _grad_or_zeros(grad_h_n, (batch, hidden), input),
                       _grad_or_zeros(grad_c_n, (batch, hidden), input), input, dt, lengths,
                       weight_ih, weight_hh, extra1, extra2, gates, cells, recurrent_input,
                       *ctx.config)
            grad_input, grad_h0, grad_c0, *weights = grads
            return (grad_input, None, grad_h0, grad_c0, None, *weights) + (None,) * (
                len(ctx.config) + 1)
        return backward

    register_autograd("time_lstm", lstm_backward(torch.ops.stseq.time_lstm_backward),
                      setup_context=lstm_setup_context)
    register_autograd("tlstm", lstm_backward(torch.ops.stseq.tlstm_backward),
                      setup_context=lstm_setup_context)

    def gru_setup_context(ctx, inputs, output):
        (input, dt, _, lengths, weight_ih, weight_hh, _, _, decay_weight, decay_bias, reverse,
         _) = inputs
        ctx.reverse = reverse
        ctx.mark_non_differentiable(*output[2:])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias,
                              *output[2:])

    def gru_backward(ctx, grad_output, grad_h_n, *_saved_grads):
        (input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias, gates, cells,
         recurrent_input) = ctx.saved_tensors
        seq_len, batch, _ = input.shape
        hidden = weight_hh.shape[1]
        grad_input, grad_h0, *weights = torch.ops.stseq.time_decay_gru_backward(
            _grad_or_zeros(grad_output, (seq_len, batch, hidden), input),
            _grad_or_zeros(grad_h_n, (batch, hidden), input), input, dt, lengths, weight_ih,
            weight_hh, decay_weight, decay_bias, gates, cells, recurrent_input, ctx.reverse)
        return (grad_input, None, grad_h0, None, *weights, None, None)

    register_autograd("time_decay_gru", gru_backward, setup_context=gru_setup_context)


if NATIVE is not None:
    _register_native()
