"""NaN and inf through the five recurrent ops, forward and backward, at hidden sizes that hit
every vector width of the CPU element steps (1 and 7: scalar lanes only; 8, 16, 64: whole
float32 AVX2 vectors, float64 vectors of 4 with a scalar tail at 7): stseq.ops.lstm / gru
against torch.nn.LSTM / GRU with copied weights, the time-aware ops against their reference
twins. A non-finite value in the input, an initial state or a weight comes out exactly where
the replaced op puts it (same NaN positions, same infinities, the finite values equal); a
non-finite time gap is refused naming dt."""

import math

import pytest
import torch

from stseq import ops

from test_time_rnn import CELLS, CELL_IDS, random_case

HIDDEN = (1, 7, 8, 16, 64)
VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
TOLERANCE = {torch.float32: dict(rtol=2e-5, atol=2e-5),
             torch.float64: dict(rtol=1e-10, atol=1e-12)}


def assert_same(actual, expected, dtype, what):
    """Same NaN positions and infinities, finite values within the dtype's tolerance."""
    assert torch.equal(actual.isnan(), expected.isnan()), f"{what}: NaN positions differ"
    torch.testing.assert_close(actual, expected, equal_nan=True, msg=what, **TOLERANCE[dtype])


def leaves_of(x, states, weights):
    return [x, *states, *weights]


def torch_module(mode, hidden, dtype, seed):
    torch.manual_seed(seed)
    cls = torch.nn.LSTM if mode == "lstm" else torch.nn.GRU
    return cls(3, hidden, num_layers=2 if hidden < 16 else 1).to(dtype)


def poison(tensor, index, value):
    tensor = tensor.detach().clone()
    tensor[index] = value
    return tensor


def recurrent_run(mode, module, x, states, call):
    """(outputs, gradients of x, the states and every weight) of one call."""
    leaves = [t.detach().clone().requires_grad_()
              for t in leaves_of(x, states, module._flat_weights)]
    x, states, weights = leaves[0], leaves[1:1 + len(states)], leaves[1 + len(states):]
    hx = tuple(states) if mode == "lstm" else states[0]
    output, finals = call(x, hx, weights)
    finals = list(finals) if mode == "lstm" else [finals]
    outputs = [output, *finals]
    grads = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape) for o in outputs]
    gradients = torch.autograd.grad(outputs, leaves, grads, allow_unused=True)
    return [o.detach() for o in outputs], gradients


def torch_call(mode, module):
    def call(x, hx, weights):
        return torch.func.functional_call(
            module, {name: w for name, w in zip(module._flat_weights_names, weights)}, (x, hx))
    return call


def stseq_call(mode, module):
    op = ops.lstm if mode == "lstm" else ops.gru

    def call(x, hx, weights):
        return op(x, hx, weights, num_layers=module.num_layers, backend="native")
    return call


PLACES = {"lstm": ["input", "h0", "c0", "weight_ih", "weight_hh", "bias"],
          "gru": ["input", "h0", "weight_ih", "weight_hh", "bias"]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mode,where", [(m, w) for m, places in PLACES.items() for w in places])
def test_lstm_gru_propagate_like_torch(mode, where, dtype):
    for hidden in HIDDEN:
        for name, value in VALUES.items():
            module = torch_module(mode, hidden, dtype, seed=hidden)
            layers = module.num_layers
            x = torch.randn(5, 3, 3, dtype=dtype)
            states = [torch.randn(layers, 3, hidden, dtype=dtype) * 0.5
                      for _ in range(2 if mode == "lstm" else 1)]
            if where == "input":
                x = poison(x, (2, 1, 1), value)
            elif where in ("h0", "c0"):
                k = 0 if where == "h0" else 1
                states[k] = poison(states[k], (0, 1, hidden - 1), value)
            else:
                index = {"weight_ih": 0, "weight_hh": 1, "bias": 2}[where]
                with torch.no_grad():
                    module._flat_weights[index][hidden - 1].view(-1)[0] = value
            expected, expected_grads = recurrent_run(mode, module, x, states,
                                                     torch_call(mode, module))
            actual, actual_grads = recurrent_run(mode, module, x, states,
                                                 stseq_call(mode, module))
            label = f"{mode} H={hidden} {name} in {where}"
            if name == "nan":  # it reaches the outputs (an infinity may saturate a gate)
                assert not all(torch.isfinite(o).all() for o in expected), label
            for a, e, what in zip(actual, expected, ["output", "h_n", "c_n"]):
                assert_same(a, e, dtype, f"{label}: {what}")
            for i, (a, e) in enumerate(zip(actual_grads, expected_grads)):
                assert_same(a, e, dtype, f"{label}: gradient {i}")


def time_run(op, tensors, kwargs, backend):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    outputs = getattr(ops, op)(*leaves, **kwargs, backend=backend)
    grads = [torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view(o.shape) for o in outputs]
    inputs = [t for t in leaves if t.requires_grad]
    gradients = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
    return [o.detach() for o in outputs], [torch.zeros_like(t) if g is None else g
                                           for t, g in zip(inputs, gradients)]


# The differentiable tensors of each op call, by position: input, (dt), states, weights.
def poisoned_positions(op, hidden):
    states = 1 if op == "time_decay_gru" else 2
    names = ["input", "h0"] + (["c0"] if states == 2 else [])
    positions = {"input": (0, (2, 1, 1)), "h0": (2, (1, hidden - 1))}
    if states == 2:
        positions["c0"] = (3, (1, hidden - 1))
    first_weight = 2 + states
    positions["weight_ih"] = (first_weight, (hidden - 1, 0))
    positions["weight_hh"] = (first_weight + 1, (hidden - 1, 0))
    positions["last_weight"] = (first_weight + (4 if op != "time_decay_gru" else 5), None)
    return names + ["weight_ih", "weight_hh", "last_weight"], positions


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("op,options", CELLS, ids=CELL_IDS)
def test_time_aware_ops_propagate_like_the_reference(op, options, dtype):
    for hidden in HIDDEN:
        names, positions = poisoned_positions(op, hidden)
        for where in names:
            for name, value in VALUES.items():
                tensors, kwargs = random_case(op, options, seq_len=5, batch=3, hidden=hidden,
                                              dtype=dtype, seed=hidden, lengths=False)
                index, at = positions[where]
                if at is None:  # time_weight [R, H] or decay_bias [H]
                    at = (0, hidden - 1) if tensors[index].dim() == 2 else (hidden - 1,)
                tensors[index] = poison(tensors[index], at, value).requires_grad_()
                expected, expected_grads = time_run(op, tensors, kwargs, "reference")
                actual, actual_grads = time_run(op, tensors, kwargs, "native")
                label = f"{op} {options} H={hidden} {name} in {where}"
                for i, (a, e) in enumerate(zip(actual, expected)):
                    assert_same(a, e, dtype, f"{label}: output {i}")
                for i, (a, e) in enumerate(zip(actual_grads, expected_grads)):
                    assert_same(a, e, dtype, f"{label}: gradient {i}")


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("op,options", [CELLS[0], CELLS[6], CELLS[8]],
                         ids=[CELL_IDS[0], CELL_IDS[6], CELL_IDS[8]])
def test_non_finite_time_gaps_are_refused(op, options, backend):
    for hidden in HIDDEN:
        for name, value in VALUES.items():
            tensors, kwargs = random_case(op, options, seq_len=5, batch=3, hidden=hidden,
                                          dtype=torch.float32, lengths=False)
            tensors[1] = poison(tensors[1], (2, 1), value)
            with pytest.raises(ValueError, match=r"dt must be finite and >= 0; row 1 has "
                                                 rf"{name} at position 2"):
                getattr(ops, op)(*tensors, **kwargs, backend=backend)
