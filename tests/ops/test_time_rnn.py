"""Time-aware recurrent layers (time_lstm 1-3, tlstm, time_decay_gru): native kernels against
the reference loops (outputs, final states, every gradient), the modules against torch.nn.LSTM
and GRU where the cells reduce to them, variable lengths, gradcheck, opcheck, torch.compile and
every bad input."""

import math

import pytest
import torch

import stseq
from stseq import ops
from stseq.ops.time_rnn import TIME_LSTM_BLOCKS

from autograd_paths import graph_names, python_functions_called

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-6),
             torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=1e-2, atol=1e-2)}

# (op, keyword options): every cell, variant and activation.
CELLS = ([("time_lstm", dict(variant=v, time_activation=a)) for v in (1, 2, 3)
          for a in ("tanh", "sigmoid")]
         + [("tlstm", dict(short_term_activation=a)) for a in ("sigmoid", "tanh")]
         + [("time_decay_gru", {})])
CELL_IDS = [f"{op}-{'-'.join(str(v) for v in options.values())}" for op, options in CELLS]


def weight_shapes(op, options, input_size, hidden):
    """Shapes of the op's weight arguments, in order."""
    if op == "time_lstm":
        gates, recurrent, peepholes, time_rows, _ = TIME_LSTM_BLOCKS[options["variant"]]
        return [(gates * hidden, input_size), (recurrent * hidden, hidden), (gates * hidden,),
                (peepholes, hidden), (time_rows, hidden)]
    if op == "tlstm":
        return [(4 * hidden, input_size), (4 * hidden, hidden), (4 * hidden,), (hidden, hidden),
                (hidden,)]
    return [(3 * hidden, input_size), (3 * hidden, hidden), (3 * hidden,), (3 * hidden,),
            (hidden,), (hidden,)]


def random_case(op, options, *, seq_len=6, batch=5, input_size=3, hidden=4, lengths=True,
                dtype=torch.float64, device="cpu", seed=0):
    """(tensors, keyword arguments) of one op call: dt in [0, 3) with repeated events, lengths
    with an empty row and a full row, and time-gate weights of both signs (so Time-LSTM 2/3's
    clamp of w_t1 is exercised)."""
    g = torch.Generator().manual_seed(seed)

    def tensor(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype).requires_grad_()

    dt = torch.rand(seq_len, batch, generator=g) * 3
    dt[torch.rand(seq_len, batch, generator=g) < 0.2] = 0
    states = [tensor(batch, hidden, scale=0.5) for _ in range(1 if op == "time_decay_gru" else 2)]
    weights = [tensor(*shape, scale=0.6) for shape in weight_shapes(op, options, input_size,
                                                                    hidden)]
    tensors = [tensor(seq_len, batch, input_size), dt.to(device, dtype)] + states + weights
    kwargs = dict(options)
    if lengths:
        length = torch.randint(0, seq_len + 1, (batch,), generator=g)
        length[0], length[-1] = 0, seq_len
        kwargs["lengths"] = length.to(device)
    return tensors, kwargs


def differentiable(tensors):
    return [t for t in tensors if t.requires_grad]


def run(op, tensors, kwargs, backend, grads=None):
    """(outputs, gradients of every differentiable tensor, output gradients)."""
    outputs = getattr(ops, op)(*tensors, **kwargs, backend=backend)
    if grads is None:
        grads = [torch.randn_like(o) for o in outputs]
    inputs = differentiable(tensors)
    reached = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
    gradients = torch.autograd.grad([o for o, _ in reached], inputs, [g for _, g in reached],
                                    allow_unused=True)
    # an input the outputs do not reach (the reference with L = 0) has gradient zero
    gradients = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, gradients)]
    return [o.detach() for o in outputs], gradients, grads


def assert_close_to_scale(actual, expected, dtype):
    """Elementwise within rtol, or within rtol of the tensor's largest magnitude (a weight
    gradient sums B * L terms; summation order alone moves a cancelled element)."""
    rtol = TOLERANCE[dtype]["rtol"]
    scale = expected.abs().max().item() if expected.numel() else 0.0
    atol = max(TOLERANCE[dtype]["atol"], rtol * scale)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def assert_parity(op, tensors, kwargs, dtype):
    outputs, gradients, grads = run(op, tensors, kwargs, "native")
    ref_outputs, ref_gradients, _ = run(op, tensors, kwargs, "reference", grads)
    for actual, expected in zip(outputs, ref_outputs, strict=True):
        torch.testing.assert_close(actual, expected, **TOLERANCE[dtype])
    for actual, expected in zip(gradients, ref_gradients, strict=True):
        assert_close_to_scale(actual, expected, dtype)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("op,options", CELLS, ids=CELL_IDS)
def test_native_matches_reference_float64(op, options, lengths, reverse):
    tensors, kwargs = random_case(op, options, lengths=lengths)
    assert_parity(op, tensors, dict(kwargs, reverse=reverse), torch.float64)


@pytest.mark.parametrize("op,options", CELLS[::2], ids=CELL_IDS[::2])
def test_native_matches_reference_float32(op, options):
    # B = 70: the CPU splits the rows between threads (slices of at least 32 rows)
    tensors, kwargs = random_case(op, options, seq_len=12, batch=70, input_size=8, hidden=32,
                                  dtype=torch.float32)
    assert_parity(op, tensors, dict(kwargs, reverse=True), torch.float32)


@pytest.mark.parametrize("shape", [dict(seq_len=1, batch=3), dict(seq_len=4, batch=1),
                                   dict(seq_len=0, batch=2), dict(seq_len=3, batch=0)],
                         ids=["L1", "B1", "L0", "B0"])
def test_edge_shapes(shape):
    for op, options in (CELLS[2], CELLS[6], CELLS[8]):
        tensors, kwargs = random_case(op, options, lengths=False, **shape)
        assert_parity(op, tensors, kwargs, torch.float64)


@pytest.mark.parametrize("op,options", [CELLS[0], CELLS[3], CELLS[4], CELLS[6], CELLS[8]],
                         ids=[CELL_IDS[i] for i in (0, 3, 4, 6, 8)])
def test_gradcheck_native(op, options):
    tensors, kwargs = random_case(op, options, seq_len=4, batch=3, input_size=2, hidden=3)
    data = [t.detach() for t in tensors]
    index = [i for i, t in enumerate(tensors) if t.requires_grad]

    def fn(*inputs):
        call = list(data)
        for i, value in zip(index, inputs):
            call[i] = value
        return getattr(ops, op)(*call, **kwargs, reverse=True, backend="native")

    assert torch.autograd.gradcheck(fn, differentiable(tensors))


def test_padding_reads_nothing_and_outputs_zero():
    tensors, kwargs = random_case("time_lstm", dict(variant=2), seq_len=7, batch=4)
    kwargs["lengths"] = torch.tensor([7, 3, 0, 5])
    padded = [t.detach().clone() for t in tensors]
    padded[0][3:, 1] = math.nan  # input and dt padding of row 1 are garbage
    padded[1][3:, 1] = -5.0
    padded = [p.requires_grad_(t.requires_grad) for p, t in zip(padded, tensors)]
    for reverse in (False, True):
        (output, h_n, c_n), gradients, grads = run("time_lstm", padded,
                                                   dict(kwargs, reverse=reverse), "native")
        assert output[3:, 1].abs().sum() == 0 and output[:, 2].abs().sum() == 0
        assert all(torch.isfinite(g).all() for g in gradients)
        # the empty row keeps its initial state and passes the final gradients straight back
        torch.testing.assert_close(h_n[2], tensors[2][2].detach())
        torch.testing.assert_close(c_n[2], tensors[3][2].detach())
        torch.testing.assert_close(gradients[1][2], grads[1][2])
        torch.testing.assert_close(gradients[2][2], grads[2][2])
        _, ref_gradients, _ = run("time_lstm", tensors, dict(kwargs, reverse=reverse),
                                  "reference", grads)
        for actual, expected in zip(gradients[1:], ref_gradients[1:]):
            assert_close_to_scale(actual, expected, torch.float64)


def test_reverse_runs_each_row_from_its_own_end():
    # Row b of a padded batch gives what the row alone (unpadded) gives.
    tensors, kwargs = random_case("tlstm", {}, seq_len=6, batch=4)
    lengths = kwargs.pop("lengths")
    output, h_n, c_n = ops.tlstm(*tensors, lengths=lengths, reverse=True, backend="native")
    for b, n in enumerate(lengths.tolist()):
        row = [tensors[0][:n, b:b + 1], tensors[1][:n, b:b + 1]] + [t[b:b + 1] for t in
                                                                     tensors[2:4]]
        alone = ops.tlstm(*row, *tensors[4:], reverse=True, backend="native")
        torch.testing.assert_close(output[:n, b], alone[0][:, 0])
        torch.testing.assert_close(h_n[b], alone[1][0])
        torch.testing.assert_close(c_n[b], alone[2][0])

def test_forwards_in_flight_keep_their_saved_buffers():
    # Large saved buffers are reused once nobody holds them (CPU): two forwards whose backwards
    # run later, in reverse order, give the gradients each gives alone.
    cases = [random_case("time_lstm", dict(variant=2), seq_len=32, batch=128, input_size=8,
                         hidden=64, lengths=False, dtype=torch.float32, seed=seed)
             for seed in (1, 2)]  # gates of 32 * 128 * 6 * 64 floats (6 MiB): pooled
    grad = torch.randn(32, 128, 64, generator=torch.Generator().manual_seed(3))

    def forward(tensors, kwargs):
        return ops.time_lstm(*tensors, **kwargs, backend="native")[0]

    def backward(tensors, output):
        return torch.autograd.grad(output, differentiable(tensors), grad)

    alone = [backward(tensors, forward(tensors, kwargs)) for tensors, kwargs in cases]
    outputs = [forward(tensors, kwargs) for tensors, kwargs in cases]
    for (tensors, _), output, expected in reversed(list(zip(cases, outputs, alone))):
        for actual, wanted in zip(backward(tensors, output), expected, strict=True):
            assert torch.equal(actual, wanted)


def test_time_lstm_clamps_w_t1_in_variants_2_and_3():
    for variant in (2, 3):
        tensors, kwargs = random_case("time_lstm", dict(variant=variant), lengths=False)
        time_weight = tensors[-1]
        with torch.no_grad():
            time_weight[0, :2] = torch.tensor([0.7, -0.4])  # clamped, free
        clamped = [t.detach() for t in tensors]
        clamped[-1] = clamped[-1].clone()
        clamped[-1][0] = clamped[-1][0].clamp(max=-1e-5)
        out = ops.time_lstm(*tensors, **kwargs, backend="native")
        torch.testing.assert_close(out[0], ops.time_lstm(*clamped, **kwargs, backend="native")[0])
        (grad,) = torch.autograd.grad(out[0].sum(), [time_weight])
        assert grad[0, 0] == 0 and grad[0, 1] != 0


def test_time_decay_gru_without_decay_is_torch_gru():
    torch.manual_seed(1)
    gru = torch.nn.GRU(5, 7, num_layers=2, bidirectional=True, batch_first=True).double()
    module = stseq.nn.TimeDecayGRU(5, 7, num_layers=2, bidirectional=True, batch_first=True,
                                   dtype=torch.float64)
    missing, unexpected = module.load_state_dict(gru.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("decay_") for name in missing)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith("decay_"):
                parameter.zero_()
    x = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    dt = torch.rand(3, 6, dtype=torch.float64) * 10
    output, h_n = module(x, dt)
    expected, expected_h = gru(x)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)
    (grad,) = torch.autograd.grad(output.square().sum(), [x])
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), [x])
    torch.testing.assert_close(grad, expected_grad)


def test_tlstm_at_zero_gaps_is_torch_lstm():
    torch.manual_seed(2)
    lstm = torch.nn.LSTM(5, 7, num_layers=2, bidirectional=True).double()
    module = stseq.nn.TLSTM(5, 7, num_layers=2, bidirectional=True, dtype=torch.float64)
    module.load_state_dict(lstm.state_dict(), strict=False)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith("decay_"):
                parameter.zero_()
    x = torch.randn(6, 3, 5, dtype=torch.float64, requires_grad=True)
    hx = (torch.randn(4, 3, 7, dtype=torch.float64), torch.randn(4, 3, 7, dtype=torch.float64))
    output, (h_n, c_n) = module(x, torch.zeros(6, 3, dtype=torch.float64), hx)
    expected, (expected_h, expected_c) = lstm(x, hx)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close((h_n, c_n), (expected_h, expected_c))
    grads = torch.autograd.grad(output.sum() + c_n.sum(), [x, module.weight_hh_l1_reverse])
    expected_grads = torch.autograd.grad(expected.sum() + expected_c.sum(),
                                         [x, lstm.weight_hh_l1_reverse])
    torch.testing.assert_close(grads, expected_grads)


MODULES = {"TimeLSTM": lambda **kw: stseq.nn.TimeLSTM(4, 5, variant=3, **kw),
           "TLSTM": lambda **kw: stseq.nn.TLSTM(4, 5, **kw),
           "TimeDecayGRU": lambda **kw: stseq.nn.TimeDecayGRU(4, 5, **kw)}


@pytest.mark.parametrize("name", list(MODULES))
def test_module_native_matches_reference(name):
    native = MODULES[name](num_layers=2, bidirectional=True, batch_first=True,
                           time_unit=60.0, dtype=torch.float64)
    twin = MODULES[name](num_layers=2, bidirectional=True, batch_first=True, time_unit=60.0,
                         backend="reference", dtype=torch.float64)
    twin.load_state_dict(native.state_dict())
    x = torch.randn(4, 7, 4, dtype=torch.float64)
    dt = torch.rand(4, 7) * 600
    lengths = torch.tensor([7, 1, 0, 4])
    out, states = native(x, dt, lengths=lengths)
    ref_out, ref_states = twin(x, dt, lengths=lengths)
    torch.testing.assert_close(out, ref_out, **TOLERANCE[torch.float64])
    torch.testing.assert_close(states, ref_states, **TOLERANCE[torch.float64])
    (out.sum() + sum(s.sum() for s in (states if isinstance(states, tuple) else (states,)))
     ).backward()
    (ref_out.sum() + sum(s.sum() for s in (ref_states if isinstance(ref_states, tuple)
                                            else (ref_states,)))).backward()
    for a, b in zip(native.parameters(), twin.parameters()):
        assert_close_to_scale(a.grad, b.grad, torch.float64)


def _module_pair(name, **kw):
    native = MODULES[name](dtype=torch.float64, **kw)
    twin = MODULES[name](dtype=torch.float64, backend="reference", **kw)
    twin.load_state_dict(native.state_dict())
    return native, twin


def _states_sum(states):
    return sum(s.sum() for s in (states if isinstance(states, tuple) else (states,)))


def _assert_module_grads(native, twin, tensors, twin_tensors):
    for a, b in zip([*tensors, *native.parameters()], [*twin_tensors, *twin.parameters()]):
        assert_close_to_scale(a.grad, b.grad, torch.float64)


@pytest.mark.parametrize("name", list(MODULES))
def test_module_packed_sequence_matches_padded_reference(name):
    from torch.nn.utils.rnn import pack_padded_sequence
    native, twin = _module_pair(name, bidirectional=True, batch_first=True)
    x = torch.randn(4, 6, 4, dtype=torch.float64, requires_grad=True)  # [B, L, I]
    dt = torch.rand(4, 6, dtype=torch.float64) * 3
    lengths = torch.tensor([3, 6, 1, 4])  # unsorted: the pack reorders the rows
    hx = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    states = (hx, hx * 0.5) if name != "TimeDecayGRU" else hx
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_dt = pack_padded_sequence(dt, lengths, batch_first=True, enforce_sorted=False)
    out, finals = native(packed, packed_dt, states)
    ref_out, ref_finals = twin(x, dt, states, lengths=lengths)
    expected = pack_padded_sequence(ref_out, lengths, batch_first=True, enforce_sorted=False)
    assert torch.equal(out.batch_sizes, expected.batch_sizes)
    torch.testing.assert_close(out.data, expected.data, **TOLERANCE[torch.float64])
    torch.testing.assert_close(finals, ref_finals, **TOLERANCE[torch.float64])
    # dt given padded in the batch's own row order reads the same gaps
    again, _ = native(packed, dt, states)
    torch.testing.assert_close(again.data, out.data, rtol=0, atol=0)
    grads = torch.autograd.grad(out.data.sum() + _states_sum(finals),
                                [x, hx, *native.parameters()], retain_graph=True)
    ref_grads = torch.autograd.grad((expected.data.sum() + _states_sum(ref_finals)),
                                    [x, hx, *twin.parameters()])
    for a, b in zip(grads, ref_grads):
        assert_close_to_scale(a, b, torch.float64)


@pytest.mark.parametrize("name", list(MODULES))
def test_module_unbatched_input(name):
    native, twin = _module_pair(name, num_layers=2)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)  # [L, I]
    dt = torch.rand(5, dtype=torch.float64)
    h0 = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)  # [num_layers, H]
    states = (h0, h0 * 2) if name != "TimeDecayGRU" else h0
    out, finals = native(x, dt, states)
    ref_out, ref_finals = twin(x[:, None], dt[:, None],
                               tuple(s[:, None] for s in states) if isinstance(states, tuple)
                               else states[:, None])
    assert out.shape == (5, 5)
    torch.testing.assert_close(out, ref_out[:, 0], **TOLERANCE[torch.float64])
    squeezed = (tuple(s[:, 0] for s in ref_finals) if isinstance(ref_finals, tuple)
                else ref_finals[:, 0])
    torch.testing.assert_close(finals, squeezed, **TOLERANCE[torch.float64])
    grads = torch.autograd.grad(out.sum() + _states_sum(finals), [x, h0, *native.parameters()],
                                retain_graph=True)
    ref_grads = torch.autograd.grad(ref_out.sum() + _states_sum(ref_finals),
                                    [x, h0, *twin.parameters()])
    for a, b in zip(grads, ref_grads):
        assert_close_to_scale(a, b, torch.float64)


def test_module_kinds_bad_input():
    from torch.nn.utils.rnn import pack_padded_sequence
    module = stseq.nn.TimeLSTM(4, 5)
    x, dt = torch.randn(6, 3, 4), torch.rand(6, 3)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False)
    with pytest.raises(ValueError, match="lengths= is for padded tensors"):
        module(packed, dt, lengths=torch.tensor([6, 2, 4]))
    with pytest.raises(ValueError, match="packed like input"):
        module(packed, pack_padded_sequence(dt, torch.tensor([6, 3, 4]), enforce_sorted=False))
    with pytest.raises(ValueError, match=r"T >= 6"):
        module(packed, dt[:5])
    with pytest.raises(ValueError, match=r"dt must be a 1-D tensor \[L\]"):
        module(x[:, 0], dt)
    with pytest.raises(ValueError, match="lengths= is for padded batches"):
        module(x[:, 0], dt[:, 0], lengths=torch.tensor([6]))
    with pytest.raises(ValueError, match="hx must be 2-D"):
        module(x[:, 0], dt[:, 0], (torch.zeros(1, 1, 5), torch.zeros(1, 1, 5)))


@pytest.mark.parametrize("op,options", [CELLS[2], CELLS[6], CELLS[8]],
                         ids=[CELL_IDS[2], CELL_IDS[6], CELL_IDS[8]])
@pytest.mark.parametrize("order", ["sorted", "unsorted"])
def test_direct_op_with_sorted_and_unsorted_lengths(op, options, order):
    """The op itself (no sorting around it): the prefix of running rows when lengths are
    non-increasing, the row-by-row checks otherwise; both match the reference."""
    tensors, kwargs = random_case(op, options, seq_len=7, batch=6)
    lengths = torch.tensor([7, 5, 5, 2, 1, 0]) if order == "sorted" else kwargs["lengths"]
    kwargs = dict(kwargs, lengths=lengths)
    states = 1 if op == "time_decay_gru" else 2
    config = {"time_lstm": (options.get("variant"), options.get("time_activation")),
              "tlstm": (options.get("short_term_activation"),), "time_decay_gru": ()}[op]
    for reverse in (False, True):
        raw = getattr(torch.ops.stseq, op)(*tensors[:2 + states], lengths,
                                            *tensors[2 + states:], *config, reverse, True)
        outputs = raw[:1 + states]
        expected = getattr(ops, op)(*tensors, **kwargs, reverse=reverse, backend="reference")
        grads = [torch.randn_like(o) for o in outputs]
        inputs = differentiable(tensors)
        got = torch.autograd.grad(outputs, inputs, grads)
        want = torch.autograd.grad(expected, inputs, grads, allow_unused=True)
        for a, b in zip([*outputs, *got], [*expected, *want]):
            assert_close_to_scale(a.detach(), torch.zeros_like(a) if b is None else b.detach(),
                                  torch.float64)


def test_module_reverse_direction_reads_the_following_gap():
    module = stseq.nn.TimeDecayGRU(3, 4, bidirectional=True, dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    dt = torch.rand(5, 2, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    output, _ = module(x, dt, lengths=lengths)
    # the reverse direction of row 1 alone, with gaps shifted: position t reads dt[t + 1]
    shifted = torch.tensor([dt[1, 1], dt[2, 1], 0.0], dtype=torch.float64)[:, None]
    parameters = [getattr(module, name + "_l0_reverse") for name in
                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "decay_weight", "decay_bias")]
    alone, _ = ops.time_decay_gru(x[:3, 1:2], shifted, torch.zeros(1, 4, dtype=torch.float64),
                                  *parameters, reverse=True)
    torch.testing.assert_close(output[:3, 1, 4:], alone[:, 0])


def test_module_dropout_between_layers_only_in_training():
    module = stseq.nn.TimeLSTM(3, 8, num_layers=2, dropout=0.5)
    x, dt = torch.randn(5, 2, 3), torch.rand(5, 2)
    module.eval()
    torch.testing.assert_close(module(x, dt)[0], module(x, dt)[0])
    module.train()
    torch.manual_seed(0)
    first = module(x, dt)[0]
    torch.manual_seed(1)
    assert not torch.equal(first, module(x, dt)[0])


def test_inference_saves_no_workspace_and_matches():
    tensors, kwargs = random_case("time_lstm", dict(variant=1), lengths=True)
    args = [t.detach() for t in tensors]
    with_grad = torch.ops.stseq.time_lstm(*args[:4], kwargs["lengths"], *args[4:], 1, "tanh",
                                          False, True)
    without = torch.ops.stseq.time_lstm(*args[:4], kwargs["lengths"], *args[4:], 1, "tanh",
                                        False, False)
    assert all(t.numel() == 0 for t in without[3:]) and all(t.numel() > 0 for t in with_grad[3:])
    for a, b in zip(with_grad[:3], without[:3]):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="save_workspace=False"):
        torch.ops.stseq.time_lstm_backward(
            torch.ones_like(without[0]), torch.ones_like(without[1]), torch.ones_like(without[2]),
            args[0], args[1], kwargs["lengths"], args[4], args[5], args[7], args[8], *without[3:],
            1, "tanh", False)


def test_backward_is_bitwise_reproducible():
    tensors, kwargs = random_case("time_lstm", dict(variant=2), seq_len=12, batch=32, hidden=16,
                                  dtype=torch.float32)
    first = run("time_lstm", tensors, kwargs, "native")
    again = run("time_lstm", tensors, kwargs, "native", first[2])
    for a, b in zip(first[1], again[1]):
        assert torch.equal(a, b)


def test_inputs_are_not_mutated():
    tensors, kwargs = random_case("tlstm", {})
    before = [t.detach().clone() for t in tensors]
    run("tlstm", tensors, dict(kwargs, reverse=True), "native")
    for t, b in zip(tensors, before):
        assert torch.equal(t.detach(), b)


def test_noncontiguous_inputs():
    for op, options in (CELLS[4], CELLS[6], CELLS[8]):
        tensors, kwargs = random_case(op, options)
        strided = [t.detach().transpose(0, -1).contiguous().transpose(0, -1)
                   .requires_grad_(t.requires_grad) if t.dim() > 1 else t for t in tensors]
        assert not strided[0].is_contiguous() and not strided[4].is_contiguous()
        outputs, gradients, grads = run(op, strided, kwargs, "native")
        expected, expected_gradients, _ = run(op, tensors, kwargs, "reference", grads)
        for a, b in zip(outputs + gradients, expected + expected_gradients):
            assert_close_to_scale(a, b, torch.float64)


def test_time_deltas():
    ts = 1_700_000_000 + torch.tensor([[0, 1, 1, 3601], [0, 60, 5, 5]])
    dt = stseq.nn.time_deltas(ts, torch.tensor([4, 2]), time_unit=60.0)
    expected = torch.tensor([[0, 1 / 60, 0, 60], [0, 1, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(dt, expected, rtol=0, atol=1e-15)
    with pytest.raises(ValueError, match="row 1 decreases at position 2"):
        stseq.nn.time_deltas(ts)
    with pytest.raises(ValueError, match="time_unit must be a finite number > 0"):
        stseq.nn.time_deltas(ts[:1], time_unit=0.0)


def op_samples():
    for op, options in (CELLS[1], CELLS[2], CELLS[5], CELLS[7], CELLS[8]):
        tensors, kwargs = random_case(op, options, seq_len=4, batch=3, hidden=3)
        data = [t.detach().requires_grad_(t.requires_grad) for t in tensors]
        lengths = kwargs["lengths"]
        states = 1 if op == "time_decay_gru" else 2
        config = {"time_lstm": (options.get("variant"), options.get("time_activation")),
                  "tlstm": (options.get("short_term_activation"),),
                  "time_decay_gru": ()}[op]
        for reverse, save in ((False, True), (True, False)):
            if not save:  # a forward that saves nothing cannot be differentiated
                data = [t.detach() for t in data]
            yield op, (*data[:2 + states], lengths, *data[2 + states:], *config, reverse, save)


@pytest.mark.parametrize("op,args", list(op_samples()))
def test_opcheck(op, args):
    torch.library.opcheck(getattr(torch.ops.stseq, op).default, args)


@pytest.mark.parametrize("op,options", [CELLS[2], CELLS[6], CELLS[8]],
                         ids=[CELL_IDS[i] for i in (2, 6, 8)])
def test_opcheck_backward(op, options):
    tensors, kwargs = random_case(op, options, seq_len=4, batch=3, hidden=3)
    data = [t.detach() for t in tensors]
    lengths = kwargs["lengths"]
    states = 1 if op == "time_decay_gru" else 2
    config = {"time_lstm": (options.get("variant"), options.get("time_activation")),
              "tlstm": (options.get("short_term_activation"),), "time_decay_gru": ()}[op]
    forward = getattr(torch.ops.stseq, op)(*data[:2 + states], lengths, *data[2 + states:],
                                           *config, True, True)
    grads = [torch.randn_like(o) for o in forward[:1 + states]]
    weights = data[2 + states:]
    # the backward reads weight_ih, weight_hh and the cell's two extra weights (not the biases)
    saved = weights[:2] + (weights[4:6] if op == "time_decay_gru" else weights[3:5])
    args = (*grads, data[0], data[1], lengths, *saved, *forward[1 + states:], *config, True)
    torch.library.opcheck(getattr(torch.ops.stseq, op + "_backward").default, args)


def test_compile_fullgraph_module():
    torch._dynamo.reset()
    module = stseq.nn.TimeLSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True,
                               variant=2, backend="native")
    x, dt = torch.randn(3, 5, 4), torch.rand(3, 5) * 100
    lengths = torch.tensor([5, 2, 4])
    compiled = torch.compile(module, fullgraph=True)
    with torch._inductor.config.patch(fx_graph_cache=False):  # no stale kernels across builds
        out, (h_n, c_n) = compiled(x, dt, lengths=lengths)
    (out.square().sum() + c_n.sum()).backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    expected, (expected_h, expected_c) = module(x, dt, lengths=lengths)
    (expected.square().sum() + expected_c.sum()).backward()
    torch.testing.assert_close((out, h_n, c_n), (expected, expected_h, expected_c))
    for grad, parameter in zip(grads, module.parameters()):
        torch.testing.assert_close(grad, parameter.grad)


def _case(op="time_lstm", options=None, **overrides):
    tensors, kwargs = random_case(op, dict(variant=1) if options is None else options, seq_len=4,
                                  batch=3,
                                  lengths=False)
    kwargs["lengths"] = torch.tensor([4, 2, 0])
    return tensors, kwargs


def _with(index, value):
    def change(tensors, kwargs):
        tensors[index] = value(tensors[index]) if callable(value) else value
    return change


def _set(index, position, value):
    def change(tensors, kwargs):
        tensors[index] = tensors[index].detach().clone()
        tensors[index][position] = value
    return change


def _kw(name, value):
    def change(tensors, kwargs):
        kwargs[name] = value
    return change


BAD_INPUTS = {
    "negative dt": (_set(1, (1, 1), -1.0),
                    r"dt must be finite and >= 0; row 1 has -1.0 at position 1"),
    "nan dt": (_set(1, (0, 0), math.nan),
               r"dt must be finite and >= 0; row 0 has nan at position 0"),
    "inf dt": (_set(1, (3, 0), math.inf),
               r"dt must be finite and >= 0; row 0 has inf at position 3"),
    "integer dt": (_with(1, lambda t: t.long()), r"dt must be a floating-point tensor"),
    "dt shape": (_with(1, lambda t: t[:, :2]),
                 r"dt must have shape \[L, B\] = \[4, 3\], got \[4, 2\]"),
    "input rank": (_with(0, lambda t: t[0]), r"input must have shape \[L, B, I\]"),
    "integer input": (_with(0, lambda t: t.long()), r"input must be a floating-point tensor"),
    "weight_ih shape": (_with(4, lambda t: t[:, :2]),
                        r"weight_ih must have shape \[G\*H, I\] = \[20, 3\]"),
    "weight_hh shape": (_with(5, lambda t: t[:-1]), r"weight_hh must have shape \[R\*H, H\]"),
    "bias shape": (_with(6, lambda t: t[:-1]), r"bias must have shape \[5\*H\] = \[20\]"),
    "peephole rows": (_with(7, lambda t: t[:2]),
                      r"peephole must have shape \[3, H\] = \[3, 4\]"),
    "time_weight rows": (_with(8, lambda t: t[:1]), r"time_weight must have shape \[2, H\]"),
    "h0 shape": (_with(2, lambda t: t[:2]), r"h0 must have shape \[B, H\] = \[3, 4\]"),
    "c0 dtype": (_with(3, lambda t: t.float()), r"c0 must have the dtype of input"),
    "weight device": (_with(5, lambda t: t.to("meta")),
                      r"weight_hh is on meta but input is on cpu"),
    "negative length": (_kw("lengths", torch.tensor([4, -1, 0])),
                        r"lengths must be in \[0, L=4\]; lengths\[1\] = -1"),
    "long length": (_kw("lengths", torch.tensor([5, 1, 0])),
                    r"lengths must be in \[0, L=4\]; lengths\[0\] = 5"),
    "float lengths": (_kw("lengths", torch.tensor([4.0, 1.0, 0.0])),
                      r"lengths must be an integer tensor"),
    "short lengths": (_kw("lengths", torch.tensor([4, 1])),
                      r"lengths must have B=3 entries, got 2"),
    "variant": (_kw("variant", 4), r"variant must be 1, 2 or 3, got 4"),
    "activation": (_kw("time_activation", "relu"), r"time_activation must be one of"),
}


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument(name, backend):
    change, message = BAD_INPUTS[name]
    tensors, kwargs = _case()
    change(tensors, kwargs)
    with pytest.raises(ValueError, match=message):
        ops.time_lstm(*tensors, **kwargs, backend=backend)


def test_dt_checks_ignore_padding():
    tensors, kwargs = _case()
    tensors[1] = tensors[1].clone()
    tensors[1][2:, 1] = -7.0  # row 1 has length 2
    tensors[1][:, 2] = math.nan  # row 2 is empty
    ops.time_lstm(*tensors, **kwargs, backend="native")


@pytest.mark.parametrize("op,options", [("tlstm", dict(short_term_activation="softplus")),
                                        ("time_decay_gru", {})])
def test_bad_input_other_cells(op, options):
    tensors, kwargs = _case(op, {} if op == "tlstm" else options)
    if op == "tlstm":
        kwargs.update(options)
        with pytest.raises(ValueError, match="short_term_activation must be one of"):
            ops.tlstm(*tensors, **kwargs)
        tensors[-2] = tensors[-2][:, :2]
        kwargs["short_term_activation"] = "tanh"
        with pytest.raises(ValueError, match=r"decay_weight must have shape \[H, H\] = \[4, 4\]"):
            ops.tlstm(*tensors, **kwargs)
    else:
        tensors[-1] = tensors[-1][:2]
        with pytest.raises(ValueError, match=r"decay_bias must have shape \[H\] = \[4\]"):
            ops.time_decay_gru(*tensors, **kwargs)


def test_module_bad_input():
    module = stseq.nn.TimeLSTM(3, 4, num_layers=2)
    x, dt = torch.randn(5, 2, 3), torch.rand(5, 2)
    with pytest.raises(ValueError, match=r"input must be a 3-D tensor \[L, B, I\]"):
        module(x[None], dt)
    with pytest.raises(ValueError, match=r"dt must be a 2-D tensor \[L, B\]"):
        module(x, dt[:, 0])
    with pytest.raises(ValueError, match=r"hx h_0 must have shape \[num_layers \* D, B, H\]"):
        module(x, dt, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"dt must have shape \[L, B\] = \[5, 2\]"):
        module(x, dt[:4])
    with pytest.raises(ValueError, match="variant must be 1, 2 or 3"):
        stseq.nn.TimeLSTM(3, 4, variant=0)
    with pytest.raises(ValueError, match="hidden_size must be an int >= 1"):
        stseq.nn.TimeDecayGRU(3, 0)


def test_direct_op_call_is_memory_safe_on_any_values():
    # torch.ops bypasses the Python checks: the kernel clamps lengths into [0, L] and its own
    # shape checks name the argument.
    tensors, kwargs = random_case("time_decay_gru", {}, lengths=False)
    data = [t.detach() for t in tensors]
    output, h_n, *_ = torch.ops.stseq.time_decay_gru(*data[:3], torch.tensor([99, -4, 3, 0, 6]),
                                                     *data[3:], False, False)
    assert torch.isfinite(output).all() and output[:, 1].abs().sum() == 0
    torch.testing.assert_close(h_n[1], data[2][1])
    with pytest.raises(ValueError, match=r"weight_hh must have shape \[R\*H, H\]"):
        torch.ops.stseq.time_decay_gru(*data[:3], None, data[3], data[4][:-1], *data[5:], False,
                                       False)
    saved = torch.ops.stseq.time_decay_gru(*data[:3], None, *data[3:], False, True)[2:]
    with pytest.raises(ValueError, match=r"cells must have shape \[L, B, C\*H\]"):
        torch.ops.stseq.time_decay_gru_backward(
            output, h_n, data[0], data[1], None, data[3], data[4], data[7], data[8], saved[0],
            saved[1][:, :, :2], saved[2], False)


def test_native_rejects_half_on_cpu():
    tensors, kwargs = random_case("time_decay_gru", {}, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="on CPU support float32 and float64, got BFloat16"):
        ops.time_decay_gru(*tensors, **kwargs, backend="native")


# ---------------------------------------------------------------------------------------------
# CUDA

def _float32_twin(tensors):
    return [t.detach().float().requires_grad_(t.requires_grad) for t in tensors]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("op,options", CELLS[::2], ids=CELL_IDS[::2])
def test_cuda_matches_reference(op, options, dtype):
    tensors, kwargs = random_case(op, options, seq_len=30, batch=33, input_size=24, hidden=40,
                                  dtype=dtype, device="cuda")
    kwargs["reverse"] = True
    outputs, gradients, grads = run(op, tensors, kwargs, "native")
    ref_outputs, ref_gradients, _ = run(op, _float32_twin(tensors), kwargs, "reference",
                                        [g.float() for g in grads])
    for actual, expected in zip(outputs, ref_outputs):
        assert actual.dtype == dtype
        assert_close_to_scale(actual.float(), expected, dtype)
    for actual, expected in zip(gradients, ref_gradients):
        assert actual.dtype == dtype
        assert_close_to_scale(actual.float(), expected, dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("op,options", CELLS, ids=CELL_IDS)
def test_cuda_float64_matches_cpu_native(op, options):
    tensors, kwargs = random_case(op, options, seq_len=9, batch=6, hidden=5)
    cuda_tensors = [t.detach().cuda().requires_grad_(t.requires_grad) for t in tensors]
    cuda_kwargs = dict(kwargs, lengths=kwargs["lengths"].cuda(), reverse=True)
    outputs, gradients, grads = run(op, tensors, dict(kwargs, reverse=True), "native")
    cuda_outputs, cuda_gradients, _ = run(op, cuda_tensors, cuda_kwargs, "native",
                                          [g.cuda() for g in grads])
    for a, b in zip(cuda_outputs + list(cuda_gradients), outputs + list(gradients)):
        assert_close_to_scale(a.cpu(), b, torch.float64)


@pytest.mark.cuda
def test_cuda_backward_is_bitwise_reproducible():
    tensors, kwargs = random_case("time_lstm", dict(variant=2), seq_len=20, batch=64, hidden=48,
                                  dtype=torch.float32, device="cuda")
    first = run("time_lstm", tensors, kwargs, "native")
    for _ in range(2):
        again = run("time_lstm", tensors, kwargs, "native", first[2])
        for a, b in zip(first[1], again[1]):
            assert torch.equal(a, b)


@pytest.mark.cuda
def test_cuda_module_under_autocast():
    module = stseq.nn.TimeDecayGRU(8, 16, num_layers=2, batch_first=True).cuda()
    x, dt = torch.randn(4, 10, 8, device="cuda"), torch.rand(4, 10, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output, h_n = module(x, dt)
    assert output.dtype == torch.bfloat16
    expected, _ = module(x, dt)
    torch.testing.assert_close(output.float(), expected, rtol=3e-2, atol=3e-2)
    output.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in module.parameters())


@pytest.mark.parametrize("op,options", [CELLS[0], CELLS[2], CELLS[4], CELLS[6], CELLS[8]],
                         ids=[CELL_IDS[i] for i in (0, 2, 4, 6, 8)])
def test_float64_dt_with_float32_input_on_both_backends(op, options):
    # The native op computes the time terms in input's dtype whatever dt's floating dtype; the
    # reference twin accepts the same and gives the same answer.
    tensors, kwargs = random_case(op, options, dtype=torch.float32)
    tensors[1] = tensors[1].detach().double()
    expected = [o.detach() for o in getattr(ops, op)(*tensors, **kwargs, backend="native")]
    actual = getattr(ops, op)(*tensors, **kwargs, backend="reference")
    assert all(o.dtype == torch.float32 for o in actual)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.detach(), e, **TOLERANCE[torch.float32])
    assert_parity(op, tensors, kwargs, torch.float32)


@pytest.mark.parametrize("op,options", [CELLS[2], CELLS[6], CELLS[-1]],
                         ids=[CELL_IDS[2], CELL_IDS[6], CELL_IDS[-1]])
def test_eager_calls_skip_torch_library_autograd_with_its_results(op, options, monkeypatch):
    """Eager calls that need gradients go through a plain autograd.Function, those that do not
    call the op below autograd (stseq.ops._autograd); both give what torch.library's
    registered autograd gives, bitwise, outputs and every gradient."""
    tensors, kwargs = random_case(op, options, dtype=torch.float32)
    eager = run(op, tensors, kwargs, "native")
    outputs = getattr(ops, op)(*tensors, **kwargs, backend="native")
    assert f"{op}_eagerBackward" in graph_names(outputs[0])
    with torch.no_grad():
        assert "autograd_impl" not in python_functions_called(
            lambda: getattr(ops, op)(*tensors, **kwargs, backend="native"))
    # the registered path: the op itself wherever the eager variants would be used
    monkeypatch.setattr(stseq.ops.time_rnn, "eager_op",
                        lambda name, needs_grad: getattr(torch.ops.stseq, name))
    registered = run(op, tensors, kwargs, "native", grads=eager[2])
    assert f"{op}_eagerBackward" not in graph_names(
        getattr(ops, op)(*tensors, **kwargs, backend="native")[0])
    for a, b in zip(eager[0] + eager[1], registered[0] + registered[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
