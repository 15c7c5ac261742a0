"""The composition layer of the recurrent modules, written once for all five cells.

Every native recurrent op (``torch.ops.stseq.lstm``, ``gru``, ``time_lstm``, ``tlstm``,
``time_decay_gru``) runs one layer in one direction. What turns such a step into torch.nn.LSTM's
contract lives here: the stack of layers and directions with inter-layer dropout
(:func:`run_layers`), the dtype the layers run in under autocast (:func:`autocast_dtype`), the
order of the rows by length, longest first, so that the kernels skip finished rows
(:func:`length_order`, :func:`restore_order`), and the row permutation of a PackedSequence's
states (:func:`permute_states`). ``stseq.nn.LSTM``/``GRU`` (through ``stseq.ops.lstm``/``gru``,
their functional form) and ``stseq.nn.TimeLSTM``/``TLSTM``/``TimeDecayGRU`` use them; a new cell
gets all of them by writing its one-layer step.
"""

import torch
from torch.nn import functional as F


def run_layers(run_layer, data, states, *, num_layers, directions, dropout, training):
    """Stacked (bidirectional) layers over ``data`` with dropout between layers.

    Args:
        run_layer: ``run_layer(data, layer_states, k, reverse) -> (output, *final states)``, one
            layer in one direction; k = layer * directions + direction indexes the weights and
            ``states``; ``layer_states`` is ``[state[k] for state in states]``. Its output has
            the layout of ``data`` with the features last ([L, B, H] padded or [N, H] packed).
        data: the first layer's input, features last.
        states: the initial states, each [num_layers * directions, B, *].
        num_layers, directions: the stack's shape (directions 1 or 2).
        dropout, training: dropout on every layer's output but the last, only when training.

    Returns:
        ``(output, finals)``: the last layer's output (directions concatenated on the last
        dimension) and the final states, each stacked to [num_layers * directions, B, *].

    Example::

        def run_layer(data, layer_states, k, reverse):   # one layer of a toy cell
            return data.flip(0) if reverse else data, layer_states[0]
        output, (h_n,) = run_layers(run_layer, torch.randn(5, 2, 3), [torch.zeros(4, 2, 3)],
                                    num_layers=2, directions=2, dropout=0.0, training=False)
    """
    if num_layers == directions == 1:  # one call, nothing to concatenate or stack
        output, *layer_finals = run_layer(data, [state[0] for state in states], 0, False)
        return output, [final.unsqueeze(0) for final in layer_finals]
    finals = [[] for _ in states]
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            output, *layer_finals = run_layer(data, [state[k] for state in states], k,
                                              direction == 1)
            outputs.append(output)
            for final, state in zip(finals, layer_finals):
                final.append(state)
        data = torch.cat(outputs, -1) if len(outputs) > 1 else outputs[0]
        if dropout > 0 and training and layer < num_layers - 1:
            data = F.dropout(data, dropout, training=True)
    return data, [torch.stack(final) for final in finals]


def autocast_dtype(input, *, cpu_dtype=None):
    """Under autocast, the dtype the layers run in, or None when autocast is off for input's
    device: CUDA autocast's dtype; under CPU autocast ``cpu_dtype`` (None: input's own, no cast).

    Example::

        with torch.autocast("cpu"):
            autocast_dtype(torch.randn(2), cpu_dtype=torch.float32)  # torch.float32
    """
    device_type = input.device.type if isinstance(input, torch.Tensor) else None
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype("cuda") if device_type == "cuda" else cpu_dtype


def length_order(lengths):
    """The rows sorted by length, longest first (stable): order [B] on lengths' device.

    Example::

        length_order(torch.tensor([2, 5, 3]))  # tensor([1, 2, 0])
    """
    return torch.argsort(lengths, descending=True, stable=True)


def restore_order(order, output, finals, *, batch_dim=1):
    """Results of a batch run in ``order`` (:func:`length_order`) back in the caller's order:
    output's ``batch_dim`` and the final states' dim 1 ([num_layers * D, B, *]).

    Example::

        order = length_order(lengths)
        output, finals = restore_order(order, output_sorted, finals_sorted)
    """
    inverse = torch.argsort(order)
    return (output.index_select(batch_dim, inverse),
            [final.index_select(1, inverse) for final in finals])


def permute_states(states, permutation):
    """States [num_layers * D, B, *] with their batch rows reordered by ``permutation`` (a
    PackedSequence's sorted or unsorted indices; None: unchanged). ``states`` is one tensor or a
    tuple/list of them; the result has the same structure.

    Example::

        h, c = permute_states((h, c), packed.sorted_indices)
    """
    if permutation is None:
        return states
    if isinstance(states, torch.Tensor):
        return states.index_select(1, permutation)
    return type(states)(state.index_select(1, permutation) for state in states)
