"""The recurrent modules' composition layer (stseq.nn.recurrent) on a toy one-layer step."""

import pytest
import torch

from stseq.nn import recurrent


def cumulative_step(data, layer_states, k, reverse):
    """A toy cell over [L, B, I]: a running sum of the first H features from its state [B, H],
    backwards when reverse; the final state is the last sum, tagged with k so that the
    stacking order shows."""
    (h0,) = layer_states
    x = (data.flip(0) if reverse else data)[..., :h0.shape[-1]]
    output = h0 + x.cumsum(0)
    return (output.flip(0) if reverse else output), output[-1] + 1000 * k


@pytest.mark.parametrize("directions", [1, 2])
def test_run_layers_stacks_directions_and_finals(directions):
    data = torch.randn(4, 3, 2, dtype=torch.float64)
    states = [torch.randn(2 * directions, 3, 2, dtype=torch.float64)]
    output, (h_n,) = recurrent.run_layers(cumulative_step, data, states, num_layers=2,
                                          directions=directions, dropout=0.0, training=True)
    layer_input = data
    expected_finals = []
    for layer in range(2):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            out, final = cumulative_step(layer_input, [states[0][k]], k, direction == 1)
            outputs.append(out)
            expected_finals.append(final)
        layer_input = torch.cat(outputs, -1)
    assert output.shape == (4, 3, 2 * directions)
    torch.testing.assert_close(output, layer_input)
    torch.testing.assert_close(h_n, torch.stack(expected_finals))


def test_run_layers_drops_out_between_layers_only_when_training():
    data = torch.ones(3, 2, 4)
    states = [torch.zeros(2, 2, 4)]
    seen = []

    def identity(layer_data, layer_states, k, reverse):
        seen.append(layer_data)
        return layer_data, layer_states[0]

    torch.manual_seed(0)
    output, _ = recurrent.run_layers(identity, data, states, num_layers=2, directions=1,
                                     dropout=0.5, training=True)
    assert torch.equal(seen[0], data)  # the first layer reads the input itself
    assert set(seen[1].unique().tolist()) <= {0.0, 2.0} and (seen[1] == 0).any()
    assert torch.equal(output, seen[1])  # no dropout after the last layer
    seen.clear()
    output, _ = recurrent.run_layers(identity, data, states, num_layers=2, directions=1,
                                     dropout=0.5, training=False)
    assert torch.equal(output, data)


def test_length_order_and_restore_order_round_trip():
    lengths = torch.tensor([2, 5, 3, 5, 0])
    order = recurrent.length_order(lengths)
    assert order.tolist() == [1, 3, 2, 0, 4]  # longest first, ties in the caller's order
    output = torch.arange(10.0).view(1, 5, 2)
    finals = [torch.arange(5.0).view(1, 5, 1)]
    back, (final,) = recurrent.restore_order(order, output.index_select(1, order),
                                             [finals[0].index_select(1, order)])
    assert torch.equal(back, output) and torch.equal(final, finals[0])


def test_permute_states_keeps_the_structure():
    h, c = torch.arange(6.0).view(1, 3, 2), -torch.arange(6.0).view(1, 3, 2)
    permutation = torch.tensor([2, 0, 1])
    assert recurrent.permute_states((h, c), None) == (h, c)
    ph, pc = recurrent.permute_states((h, c), permutation)
    assert torch.equal(ph, h[:, permutation]) and torch.equal(pc, c[:, permutation])
    permuted = recurrent.permute_states([h], permutation)
    assert isinstance(permuted, list) and torch.equal(permuted[0], h[:, permutation])
    assert torch.equal(recurrent.permute_states(h, permutation), h[:, permutation])


def test_autocast_dtype():
    x = torch.randn(2)
    assert recurrent.autocast_dtype(x, cpu_dtype=torch.float32) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert recurrent.autocast_dtype(x, cpu_dtype=torch.float32) == torch.float32
        assert recurrent.autocast_dtype(x) is None
