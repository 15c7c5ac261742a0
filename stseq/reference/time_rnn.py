"""Reference time-aware recurrent layers: literal per-step PyTorch loops of the equations of
``stseq.ops.time_lstm``, ``stseq.ops.tlstm`` and ``stseq.ops.time_decay_gru``.

One call runs one layer in one direction over a time-major batch, exactly like the native op:
input [L, B, I], dt [L, B] (the time gap applied when position t is processed), lengths [B]
(positions at or past a row's length are padding: output zero, never read). In the reverse
direction row b is processed from its own last position n_b - 1 down to 0. Autograd provides
every gradient.
"""

import math

import torch

TIME_WEIGHT_BOUND = -1e-5  # Time-LSTM 2 and 3 constrain w_t1 <= 0 (the authors' code: -1e-5)


def _activation(name):
    return {"tanh": torch.tanh, "sigmoid": torch.sigmoid}[name]


def _gaps(dt, input):
    """dt in the dtype the native op computes its time terms in: input's, float32 for the half
    types (any floating dt is accepted, e.g. float64 gaps with float32 input)."""
    dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
    return dt.to(dtype)


def _recurrence(cell, input, dt, states, lengths, reverse):
    """Run ``cell(x [B, I], dt [B, 1], *states) -> (h, *states)`` over the steps of every row.

    states: tuple of [B, H] tensors whose first entry is h. Returns (output [L, B, H], final
    states): the states of a row stop changing after its last valid step.
    """
    seq_len, batch = input.shape[:2]
    device = input.device
    if lengths is None:
        lengths = torch.full((batch,), seq_len, device=device)
    lengths = lengths.to(device=device, dtype=torch.long)
    step_outputs = []
    for step in range(seq_len):
        # Only the rows still going run the cell: padding never enters the arithmetic (a NaN
        # there, or an infinite weight times a padded zero, reaches no gradient).
        active = torch.nonzero(step < lengths).squeeze(1)  # [n]
        position = lengths[active] - 1 - step if reverse else torch.full_like(active, step)
        new_states = cell(input[position, active], dt[position, active][:, None],
                          *(s.index_select(0, active) for s in states))
        states = tuple(old.index_copy(0, active, new) for new, old in zip(new_states, states))
        step_outputs.append(states[0])
    hidden = states[0].shape[-1]
    if seq_len == 0:
        return input.new_zeros(0, batch, hidden), states
    by_step = torch.stack(step_outputs)  # [L, B, H], step s of row b at [s, b]
    positions = torch.arange(seq_len, device=device)[:, None]  # [L, 1]
    step_of = lengths[None, :] - 1 - positions if reverse else positions.expand(seq_len, batch)
    output = by_step.gather(0, step_of.clamp(0, seq_len - 1)[..., None].expand(-1, -1, hidden))
    valid = (positions < lengths[None, :])[..., None]  # [L, B, 1]
    return torch.where(valid, output, torch.zeros((), dtype=output.dtype, device=device)), states


def time_lstm(input, dt, h0, c0, weight_ih, weight_hh, bias, peephole, time_weight, *,
              lengths=None, variant=1, time_activation="tanh", reverse=False):
    """Time-LSTM (Zhu et al., IJCAI 2017), one layer and direction -> (output, h_n, c_n).

    Same signature and semantics as :func:`stseq.ops.time_lstm` (arguments checked there).
    Gate blocks of ``weight_ih``/``bias``: variant 1 [i, f, g, o, t], variant 2
    [i, f, g, o, t1, t2], variant 3 [i, g, o, t1, t2]; ``weight_hh`` has the first 4 (3)
    blocks. ``peephole`` rows: [w_ci, w_cf, w_co] (variant 3: [w_ci, w_co]); ``time_weight``
    rows: [w_t, w_to] (variant 1) or [w_t1, w_t2, w_to].

    Example::

        L, B, I, H = 5, 2, 3, 4
        weights = [torch.randn(5 * H, I), torch.randn(4 * H, H), torch.zeros(5 * H),
                   torch.zeros(3, H), torch.zeros(2, H)]
        out, h_n, c_n = time_lstm(torch.randn(L, B, I), torch.rand(L, B), torch.zeros(B, H),
                                  torch.zeros(B, H), *weights)
    """
    phi = _activation(time_activation)

    def cell(x, t, h, c):
        def time_term(value):  # computed in dt's dtype, then input's
            return value.to(x.dtype)

        gates_x = x @ weight_ih.T + bias
        gates_h = h @ weight_hh.T
        if variant == 1:
            x_i, x_f, x_g, x_o, x_t1 = gates_x.chunk(5, 1)
            h_i, h_f, h_g, h_o = gates_h.chunk(4, 1)
            w_ci, w_cf, w_co = peephole
            w_t1, w_to = time_weight
        elif variant == 2:
            x_i, x_f, x_g, x_o, x_t1, x_t2 = gates_x.chunk(6, 1)
            h_i, h_f, h_g, h_o = gates_h.chunk(4, 1)
            w_ci, w_cf, w_co = peephole
            w_t1, w_t2, w_to = time_weight
            w_t1 = w_t1.clamp(max=TIME_WEIGHT_BOUND)
        else:
            x_i, x_g, x_o, x_t1, x_t2 = gates_x.chunk(5, 1)
            h_i, h_g, h_o = gates_h.chunk(3, 1)
            w_ci, w_co = peephole
            w_t1, w_t2, w_to = time_weight
            w_t1 = w_t1.clamp(max=TIME_WEIGHT_BOUND)
        i = torch.sigmoid(x_i + h_i + w_ci * c)
        g = torch.tanh(x_g + h_g)
        time_gate1 = torch.sigmoid(x_t1 + time_term(phi(t * w_t1)))
        if variant == 1:
            f = torch.sigmoid(x_f + h_f + w_cf * c)
            c_new = f * c + i * time_gate1 * g
            c_out = c_new
        else:
            time_gate2 = torch.sigmoid(x_t2 + time_term(phi(t * w_t2)))
            if variant == 2:
                f = torch.sigmoid(x_f + h_f + w_cf * c)
                c_out = f * c + i * time_gate1 * g  # c~: read by the output gate and h
                c_new = f * c + i * time_gate2 * g  # carried to the next step
            else:
                c_out = (1 - i * time_gate1) * c + i * time_gate1 * g
                c_new = (1 - i) * c + i * time_gate2 * g
        o = torch.sigmoid(x_o + h_o + time_term(t * w_to) + w_co * c_out)
        return o * torch.tanh(c_out), c_new

    output, (h_n, c_n) = _recurrence(cell, input, _gaps(dt, input), (h0, c0), lengths, reverse)
    return output, h_n, c_n


def tlstm(input, dt, h0, c0, weight_ih, weight_hh, bias, decay_weight, decay_bias, *,
          lengths=None, short_term_activation="sigmoid", reverse=False):
    """T-LSTM (Baytas et al., KDD 2017), one layer and direction -> (output, h_n, c_n).

    Same signature and semantics as :func:`stseq.ops.tlstm`: the short-term memory
    C_S = act(W_d c + b_d) is discounted by g(dt) = 1 / log(e + dt), then an LSTM step (gate
    blocks [i, f, g, o], torch's order) runs on c* = c - C_S + g(dt) C_S.

    Example::

        L, B, I, H = 5, 2, 3, 4
        out, h_n, c_n = tlstm(torch.randn(L, B, I), torch.rand(L, B), torch.zeros(B, H),
                              torch.zeros(B, H), torch.randn(4 * H, I), torch.randn(4 * H, H),
                              torch.zeros(4 * H), torch.randn(H, H), torch.zeros(H))
    """
    act = _activation(short_term_activation)

    def cell(x, t, h, c):
        short_term = act(c @ decay_weight.T + decay_bias)
        discount = (1 / torch.log(math.e + t)).to(x.dtype)
        c_star = c - short_term + discount * short_term
        gates = x @ weight_ih.T + bias + h @ weight_hh.T
        i, f, g, o = gates.chunk(4, 1)
        c_new = torch.sigmoid(f) * c_star + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    output, (h_n, c_n) = _recurrence(cell, input, _gaps(dt, input), (h0, c0), lengths, reverse)
    return output, h_n, c_n


def time_decay_gru(input, dt, h0, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight,
                   decay_bias, *, lengths=None, reverse=False):
    """GRU with GRU-D-style hidden-state decay, one layer and direction -> (output, h_n).

    Same signature and semantics as :func:`stseq.ops.time_decay_gru`:
    h~ = exp(-max(0, w_gamma * dt + b_gamma)) * h, then a torch.nn.GRU step on h~.

    Example::

        L, B, I, H = 5, 2, 3, 4
        out, h_n = time_decay_gru(torch.randn(L, B, I), torch.rand(L, B), torch.zeros(B, H),
                                  torch.randn(3 * H, I), torch.randn(3 * H, H), torch.zeros(3 * H),
                                  torch.zeros(3 * H), torch.rand(H), torch.zeros(H))
    """

    def cell(x, t, h):
        h = torch.exp(-torch.relu(decay_weight * t + decay_bias)).to(x.dtype) * h
        x_r, x_z, x_n = (x @ weight_ih.T + bias_ih).chunk(3, 1)
        h_r, h_z, h_n = (h @ weight_hh.T + bias_hh).chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return ((1 - z) * n + z * h,)

    output, (h_n,) = _recurrence(cell, input, _gaps(dt, input), (h0,), lengths, reverse)
    return output, h_n
