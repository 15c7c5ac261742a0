"""Reference multi-layer LSTM and GRU (see ``stseq.ops.lstm`` / ``stseq.ops.gru``).

A plain loop over time steps with torch.nn.LSTM / torch.nn.GRU's equations, on a padded
time-major batch: rows of a variable-length batch keep their state (and output zeros) at steps
past their end; in the reverse direction they hold their initial state until their own last
step, where they start. Autograd provides the gradients.
"""

import torch
import torch.nn.functional as F


def _layer_weights(mode, weights, bias, num_layers, directions):
    """Per (layer, direction), in torch's order: dict of w_ih, w_hh, b_ih, b_hh, w_hr."""
    per = len(weights) // (num_layers * directions)
    groups = []
    for k in range(num_layers * directions):
        group = list(weights[k * per:(k + 1) * per])
        named = {"w_ih": group.pop(0), "w_hh": group.pop(0), "b_ih": None, "b_hh": None,
                 "w_hr": None}
        if bias:
            named["b_ih"], named["b_hh"] = group.pop(0), group.pop(0)
        if mode == "lstm" and group:
            named["w_hr"] = group.pop(0)
        groups.append(named)
    return groups


def _lstm_step(x, h, c, w):
    gates = x @ w["w_ih"].T + h @ w["w_hh"].T
    if w["b_ih"] is not None:
        gates = gates + w["b_ih"] + w["b_hh"]
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w["w_hr"] is not None:
        h = h @ w["w_hr"].T
    return h, c


def _gru_step(x, h, w):
    x_gates = x @ w["w_ih"].T
    h_gates = h @ w["w_hh"].T
    if w["b_ih"] is not None:
        x_gates, h_gates = x_gates + w["b_ih"], h_gates + w["b_hh"]
    x_r, x_z, x_n = x_gates.chunk(3, dim=1)
    h_r, h_z, h_n = h_gates.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, None


def _direction(mode, x, h, c, w, lengths, reverse):
    """One layer, one direction over x [L, B, I] -> (outputs [L, B, P], h_n, c_n).

    With lengths, each step runs only the rows still going: padding never enters the
    arithmetic (a NaN there, or an infinite weight times a padded zero, reaches no gradient)."""
    seq_len = x.shape[0]
    outputs = [None] * seq_len
    for t in (range(seq_len - 1, -1, -1) if reverse else range(seq_len)):
        if lengths is None:
            rows, x_t, h_t, c_t = None, x[t], h, c
        else:
            rows = torch.nonzero(t < lengths).squeeze(1)  # [n] active rows
            x_t, h_t = x[t].index_select(0, rows), h.index_select(0, rows)
            c_t = c.index_select(0, rows) if c is not None else None
        if mode == "lstm":
            h_new, c_new = _lstm_step(x_t, h_t, c_t, w)
        else:
            h_new, c_new = _gru_step(x_t, h_t, w)
        if rows is None:
            h, c, outputs[t] = h_new, c_new, h_new
        else:
            h = h.index_copy(0, rows, h_new)
            c = c.index_copy(0, rows, c_new) if c is not None else None
            outputs[t] = h.new_zeros(h.shape).index_copy(0, rows, h_new)
    return torch.stack(outputs), h, c


def _padded_from_packed(data, batch_sizes):
    """A PackedSequence's data [N, *] -> (padded [L, B, *], lengths [B], valid mask [L, B])."""
    steps = torch.arange(batch_sizes[0].item())
    valid = steps[None, :] < batch_sizes[:, None]  # [L, B]
    padded = data.new_zeros(valid.shape + data.shape[1:])
    padded[valid.to(data.device)] = data
    return padded, valid.sum(0), valid


def _run(mode, input, hx, weights, bias, num_layers, dropout, training, bidirectional,
         batch_first, lengths, batch_sizes):
    directions = 2 if bidirectional else 1
    if batch_sizes is not None:
        x, lengths, valid = _padded_from_packed(input, batch_sizes)
    else:
        x = input.transpose(0, 1) if batch_first else input
    if lengths is not None:
        lengths = lengths.to(x.device)
    h0, c0 = hx if mode == "lstm" else (hx, None)
    h_n, c_n = [], []
    for layer, group in enumerate(_chunks(_layer_weights(mode, weights, bias, num_layers,
                                                         directions), directions)):
        outputs = []
        for direction, w in enumerate(group):
            k = layer * directions + direction
            out, h, c = _direction(mode, x, h0[k], c0[k] if c0 is not None else None, w,
                                   lengths, reverse=direction == 1)
            outputs.append(out)
            h_n.append(h)
            c_n.append(c)
        x = torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, dropout, training=True)
    if batch_sizes is not None:
        output = x[valid.to(x.device)]
    else:
        output = x.transpose(0, 1) if batch_first else x
    h_n = torch.stack(h_n)
    return (output, (h_n, torch.stack(c_n))) if mode == "lstm" else (output, h_n)


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def lstm(input, hx, weights, *, bias=True, num_layers=1, dropout=0.0, training=False,
         bidirectional=False, batch_first=False, lengths=None, batch_sizes=None):
    """Multi-layer LSTM -> (output, (h_n, c_n)); same signature and semantics as
    :func:`stseq.ops.lstm` (arguments already checked there, hx not None).

    Example::

        module = torch.nn.LSTM(4, 8)
        x = torch.randn(5, 2, 4)                       # [L, B, I]
        hx = (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
        out, (h_n, c_n) = stseq.reference.lstm(x, hx, module._flat_weights)
    """
    return _run("lstm", input, hx, weights, bias, num_layers, dropout, training, bidirectional,
                batch_first, lengths, batch_sizes)


def gru(input, hx, weights, *, bias=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, lengths=None, batch_sizes=None):
    """Multi-layer GRU -> (output, h_n); same signature and semantics as :func:`stseq.ops.gru`
    (arguments already checked there, hx not None).

    Example::

        module = torch.nn.GRU(4, 8)
        out, h_n = stseq.reference.gru(torch.randn(5, 2, 4), torch.zeros(1, 2, 8),
                                       module._flat_weights)
    """
    return _run("gru", input, hx, weights, bias, num_layers, dropout, training, bidirectional,
                batch_first, lengths, batch_sizes)
