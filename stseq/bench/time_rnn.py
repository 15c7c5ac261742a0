"""Benchmark cases of the time-aware recurrent layers (one layer, one direction, the ops).

Two suites: this module (``stseq bench --ops time_rnn``) times the fused ops against the eager
reference loops; ``FLOOR`` (``--ops time_rnn_floor``) times the cells in the configurations
where they are exactly torch's plain layers (T-LSTM at dt = 0 is an LSTM, the time-decay GRU
without decay is a GRU) against torch.nn.LSTM / torch.nn.GRU with the same weights (oneDNN on
CPU, cuDNN on GPU): the price of the time awareness, with a real parity column.
"""

import types

import torch

from stseq import ops
from stseq.ops.time_rnn import TIME_LSTM_BLOCKS

PEER = "reference (eager PyTorch)"
# The CUDA kernels take bfloat16 (float32 states and accumulation); the CPU ones float32/64.
DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.bfloat16)}
# The target shape: B=256, L=50, input 64, H=128.
TARGET = dict(batch=256, seq_len=50, input_size=64, hidden=128)
CELLS = ("time_lstm1", "time_lstm2", "time_lstm3", "tlstm", "time_decay_gru")
QUICK = [dict(TARGET, cell="time_lstm1")]
FULL = ([dict(TARGET, cell=cell) for cell in CELLS]
        + [dict(TARGET, cell="time_lstm1", lengths=True)]
        + [dict(cell="time_lstm1", batch=b, seq_len=n, input_size=i, hidden=h)
           for b, n, i, h in ((256, 50, 64, 64), (256, 50, 64, 256), (256, 200, 64, 128),
                              (1024, 50, 128, 128))])
# Added on CUDA only (the eager reference takes minutes per call there on a CPU).
CUDA_FULL = [dict(cell="time_lstm1", batch=b, seq_len=n, input_size=i, hidden=h)
             for b, n, i, h in ((1024, 200, 128, 128), (4096, 50, 256, 256),
                                (4096, 200, 256, 256))]


def _weight_shapes(cell, input_size, hidden):
    if cell.startswith("time_lstm"):
        gates, recurrent, peepholes, time_rows, _ = TIME_LSTM_BLOCKS[int(cell[-1])]
        return [(gates * hidden, input_size), (recurrent * hidden, hidden), (gates * hidden,),
                (peepholes, hidden), (time_rows, hidden)]
    if cell == "tlstm":
        return [(4 * hidden, input_size), (4 * hidden, hidden), (4 * hidden,), (hidden, hidden),
                (hidden,)]
    return [(3 * hidden, input_size), (3 * hidden, hidden), (3 * hidden,), (3 * hidden,),
            (hidden,), (hidden,)]


def make_inputs(*, cell, batch, seq_len, input_size, hidden, lengths=False, zero_gaps=False,
                dtype=torch.float32, device="cpu", seed=0):
    """One call's arguments: input [L, B, I] and weights (requiring grad), gaps of minutes to
    days in hours (log-normal), zero initial states, lengths in [1, L] when asked."""
    generator = torch.Generator().manual_seed(seed)
    bound = hidden ** -0.5

    def tensor(*shape, scale=1.0, grad=True):
        value = (torch.rand(*shape, generator=generator) * 2 - 1) * scale
        return value.to(device, dtype).requires_grad_(grad)

    gaps = torch.exp(torch.randn(seq_len, batch, generator=generator) * 2.0 - 1.0)  # hours
    dt = torch.zeros(seq_len, batch) if zero_gaps else gaps
    states = [tensor(batch, hidden, scale=0.0, grad=False)
              for _ in range(1 if cell == "time_decay_gru" else 2)]
    weights = [tensor(*shape, scale=bound) for shape in _weight_shapes(cell, input_size, hidden)]
    kwargs = {}
    if cell.startswith("time_lstm"):
        kwargs["variant"] = int(cell[-1])
    if lengths:
        length = torch.randint(1, seq_len + 1, (batch,), generator=generator)
        length[0] = seq_len
        kwargs["lengths"] = length.to(device)
    op = "time_lstm" if cell.startswith("time_lstm") else cell
    gap_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # gaps stay >= fp32
    return dict(op=op, tensors=[tensor(seq_len, batch, input_size), dt.to(device, gap_dtype)]
                + states + weights, kwargs=kwargs)


def forward(inputs, backend):
    """One forward call on ``backend`` -> its outputs."""
    with torch.no_grad():
        return getattr(ops, inputs["op"])(*inputs["tensors"], **inputs["kwargs"], backend=backend)


def forward_backward(inputs, backend):
    """Forward + backward of a fixed projection of the output -> d/d(input, weights)."""
    tensors = inputs["tensors"]
    output = getattr(ops, inputs["op"])(*tensors, **inputs["kwargs"], backend=backend)[0]
    differentiable = [t for t in tensors if t.requires_grad]
    return torch.autograd.grad(output, differentiable, grad_outputs=torch.ones_like(output) * 0.5)


def _label(shape):
    return ",".join(f"{key}={value}" for key, value in shape.items() if key != "cell")


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn) for every shape and mode of the grid."""
    if device.type == "cuda" and grid is FULL:
        grid = FULL + CUDA_FULL
    for shape in grid:
        inputs = make_inputs(**shape, device=device, dtype=dtype)
        for mode, fn in (("forward", forward), ("forward+backward", forward_backward)):
            yield (f"{shape['cell']} {mode}", _label(shape),
                   lambda fn=fn, inputs=inputs: fn(inputs, "native"),
                   lambda fn=fn, inputs=inputs: fn(inputs, "reference"))


# ---------------------------------------------------------------------------------------------
# The floor: torch.nn.LSTM / GRU on the same weights.

def torch_twin(inputs):
    """torch.nn.LSTM (T-LSTM) or torch.nn.GRU (time-decay GRU) with the op's weights and
    biases; its forward on the inputs equals the op's at zero gaps / zero decay."""
    input_ = inputs["tensors"][0]
    op = inputs["op"]
    weights = inputs["tensors"][4 if op == "tlstm" else 3:]
    hidden = weights[1].shape[1]
    module_type = torch.nn.LSTM if op == "tlstm" else torch.nn.GRU
    module = module_type(input_.shape[2], hidden, device=input_.device, dtype=input_.dtype)
    with torch.no_grad():
        module.weight_ih_l0.copy_(weights[0])
        module.weight_hh_l0.copy_(weights[1])
        module.bias_ih_l0.copy_(weights[2])
        module.bias_hh_l0.copy_(weights[3] if op == "time_decay_gru" else torch.zeros_like(
            weights[2]))
    return module


def _floor_inputs(shape, device, dtype):
    inputs = make_inputs(**shape, zero_gaps=True, device=device, dtype=dtype)
    if inputs["op"] == "time_decay_gru":
        with torch.no_grad():
            inputs["tensors"][-2].zero_()  # w_gamma
            inputs["tensors"][-1].zero_()  # b_gamma
    return inputs


def _torch_forward(module, inputs):
    with torch.no_grad():
        return module(inputs["tensors"][0])[0]


def _torch_forward_backward(module, inputs):
    x = inputs["tensors"][0]
    output = module(x)[0]
    parameters = [x, module.weight_ih_l0, module.weight_hh_l0]
    return torch.autograd.grad(output, parameters, grad_outputs=torch.ones_like(output) * 0.5)


def _op_forward(inputs):
    return forward(inputs, "native")[0]


def _op_forward_backward(inputs):
    tensors = inputs["tensors"]
    output = getattr(ops, inputs["op"])(*tensors, **inputs["kwargs"], backend="native")[0]
    weights = tensors[4 if inputs["op"] == "tlstm" else 3:]
    return torch.autograd.grad(output, [tensors[0], weights[0], weights[1]],
                               grad_outputs=torch.ones_like(output) * 0.5)


def floor_cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn): the fused cells against torch's layers."""
    for shape in grid:
        inputs = _floor_inputs(shape, device, dtype)
        module = torch_twin(inputs)
        label = _label(shape)
        name = shape["cell"] + (" (dt=0)" if shape["cell"] == "tlstm" else " (no decay)")
        yield (f"{name} forward", label, lambda inputs=inputs: _op_forward(inputs),
               lambda module=module, inputs=inputs: _torch_forward(module, inputs))
        yield (f"{name} forward+backward", label,
               lambda inputs=inputs: _op_forward_backward(inputs),
               lambda module=module, inputs=inputs: _torch_forward_backward(module, inputs))


FLOOR = types.SimpleNamespace(
    PEER="torch.nn.LSTM / torch.nn.GRU, same weights",
    DTYPES=DTYPES,
    QUICK=[dict(TARGET, cell="tlstm")],
    FULL=[dict(TARGET, cell="tlstm"), dict(TARGET, cell="time_decay_gru"),
          dict(cell="tlstm", batch=1024, seq_len=50, input_size=128, hidden=128),
          dict(cell="tlstm", batch=256, seq_len=200, input_size=64, hidden=256)],
    cases=floor_cases)
