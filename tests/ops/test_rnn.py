"""LSTM / GRU: the drop-in modules against torch.nn.LSTM / torch.nn.GRU with copied weights over
random configurations (outputs, final states and every gradient), the native layer ops against
the reference twin, gradcheck, opcheck, torch.compile, state_dict round trips, variable-length
semantics and every bad input."""

import math
import random

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, PackedSequence

import stseq
from stseq import ops

from autograd_paths import graph_names, python_functions_called

MODES = {"lstm": (torch.nn.LSTM, stseq.nn.LSTM), "gru": (torch.nn.GRU, stseq.nn.GRU)}
INPUT_KINDS = ("padded", "packed", "lengths", "unbatched")


def random_config(mode, seed):
    """A random module configuration and call: layers, directions, layout, projection, mode."""
    rng = random.Random(seed)
    hidden = rng.randint(1, 6)
    config = dict(input_size=rng.randint(1, 5), hidden_size=hidden, num_layers=rng.randint(1, 3),
                  bias=rng.random() < 0.8, batch_first=rng.random() < 0.5,
                  bidirectional=rng.random() < 0.5)
    if mode == "lstm" and hidden > 1 and rng.random() < 0.4:
        config["proj_size"] = rng.randint(1, hidden - 1)
    call = dict(kind=INPUT_KINDS[seed % len(INPUT_KINDS)], seq_len=rng.randint(1, 6),
                batch=rng.randint(1, 5), training=rng.random() < 0.5, hx=rng.random() < 0.6)
    return config, call


def make_pair(mode, config, dtype=torch.float64, backend="native"):
    """(torch module, stseq module) with identical weights."""
    torch_cls, stseq_cls = MODES[mode]
    reference = torch_cls(**config, dtype=dtype)
    module = stseq_cls(**config, dtype=dtype, backend=backend)
    module.load_state_dict(reference.state_dict())
    return reference, module


def make_call(mode, module, call, dtype=torch.float64, seed=0):
    """Inputs of one call: x (leaf), lengths, hx (leaves or None)."""
    g = torch.Generator().manual_seed(seed)
    seq_len, batch = call["seq_len"], call["batch"]
    shape = (seq_len, module.input_size) if call["kind"] == "unbatched" else (
        (batch, seq_len, module.input_size) if module.batch_first else
        (seq_len, batch, module.input_size))
    x = torch.randn(shape, generator=g, dtype=dtype).requires_grad_()
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=g)
    lengths[0] = seq_len
    hx = None
    if call["hx"]:
        layers = module.num_layers * (2 if module.bidirectional else 1)
        batch_dims = () if call["kind"] == "unbatched" else (batch,)
        proj = module.proj_size if mode == "lstm" and module.proj_size else module.hidden_size
        h0 = torch.randn((layers,) + batch_dims + (proj,), generator=g, dtype=dtype)
        if mode == "lstm":
            c0 = torch.randn((layers,) + batch_dims + (module.hidden_size,), generator=g,
                             dtype=dtype)
            hx = (h0.requires_grad_(), c0.requires_grad_())
        else:
            hx = h0.requires_grad_()
    return x, lengths, hx


def leaves(x, hx, module):
    states = [] if hx is None else (list(hx) if isinstance(hx, tuple) else [hx])
    return [x, *states, *module.parameters()]


def forward(module, call, x, lengths, hx, *, use_lengths_keyword):
    """Run module on the call; returns (padded or packed-data output, [h_n (, c_n)])."""
    module.train(call["training"])
    kind = call["kind"]
    if kind == "packed" or (kind == "lengths" and not use_lengths_keyword):
        packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                      enforce_sorted=False)
        out, hidden = module(packed, hx)
        if kind == "packed":
            out = out.data
        else:
            out = pad_packed_sequence(out, batch_first=module.batch_first,
                                      total_length=call["seq_len"])[0]
    elif kind == "lengths":
        out, hidden = module(x, hx, lengths=lengths)
    else:
        out, hidden = module(x, hx)
    return out, list(hidden) if isinstance(hidden, tuple) else [hidden]


def outputs_and_grads(mode, module, call, *, use_lengths_keyword, dtype=torch.float64):
    x, lengths, hx = make_call(mode, module, call, dtype)
    out, hidden = forward(module, call, x, lengths, hx, use_lengths_keyword=use_lengths_keyword)
    g = torch.Generator().manual_seed(1)
    results = [out, *hidden]
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=dtype)).sum() for t in results)
    grads = torch.autograd.grad(loss, leaves(x, hx, module))
    return [t.detach() for t in results], grads


def assert_all_close(actual, expected, **tolerance):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **tolerance)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("seed", range(12))
def test_module_matches_torch_float64(mode, seed):
    config, call = random_config(mode, seed)
    reference, module = make_pair(mode, config)
    expected, expected_grads = outputs_and_grads(mode, reference, call, use_lengths_keyword=False)
    actual, grads = outputs_and_grads(mode, module, call, use_lengths_keyword=True)
    assert_all_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert_all_close(grads, expected_grads, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("seed", range(4))
def test_reference_backend_matches_torch(mode, seed):
    config, call = random_config(mode, 100 + seed)
    reference, module = make_pair(mode, config, backend="reference")
    expected, expected_grads = outputs_and_grads(mode, reference, call, use_lengths_keyword=False)
    actual, grads = outputs_and_grads(mode, module, call, use_lengths_keyword=True)
    assert_all_close(actual, expected, rtol=1e-10, atol=1e-12)
    assert_all_close(grads, expected_grads, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", list(MODES))
def test_module_matches_torch_float32(mode):
    config = dict(input_size=16, hidden_size=24, num_layers=2, bidirectional=True,
                  batch_first=True)
    call = dict(kind="lengths", seq_len=20, batch=8, training=True, hx=True)
    reference, module = make_pair(mode, config, dtype=torch.float32)
    expected, expected_grads = outputs_and_grads(mode, reference, call, use_lengths_keyword=False,
                                                 dtype=torch.float32)
    actual, grads = outputs_and_grads(mode, module, call, use_lengths_keyword=True,
                                      dtype=torch.float32)
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        scale = expected_grad.abs().max().item()
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


def flat_weights(mode, config, dtype=torch.float64):
    module = MODES[mode][0](**config, dtype=dtype)
    return [w.detach().clone().requires_grad_() for w in module._flat_weights]


def test_zero_length_rows_keep_h0_and_output_zeros():
    config = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    weights = flat_weights("lstm", config)
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    h0 = torch.randn(4, 3, 4, dtype=torch.float64)
    c0 = torch.randn(4, 3, 4, dtype=torch.float64)
    lengths = torch.tensor([5, 0, 2])
    kwargs = dict(num_layers=2, bidirectional=True, lengths=lengths)
    out, (h_n, c_n) = ops.lstm(x, (h0, c0), weights, **kwargs, backend="native")
    ref_out, (ref_h, ref_c) = ops.lstm(x, (h0, c0), weights, **kwargs, backend="reference")
    assert out[:, 1].abs().sum() == 0 and out[2:, 2].abs().sum() == 0
    torch.testing.assert_close(h_n[:, 1], h0[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(c_n[:, 1], c0[:, 1], rtol=0, atol=0)
    assert_all_close([out, h_n, c_n], [ref_out, ref_h, ref_c], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", list(MODES))
def test_reverse_direction_starts_at_each_rows_end(mode):
    # A row of length 2 padded to 6 gives the same reverse output as the unpadded row alone.
    config = dict(input_size=2, hidden_size=3, bidirectional=True)
    weights = flat_weights(mode, config)
    run = getattr(ops, mode)
    x = torch.randn(6, 1, 2, dtype=torch.float64)
    padded, _ = run(x, None, weights, bidirectional=True, lengths=torch.tensor([2]),
                    backend="native")
    alone, _ = run(x[:2], None, weights, bidirectional=True, backend="native")
    torch.testing.assert_close(padded[:2], alone, rtol=1e-12, atol=1e-12)
    assert padded[2:].abs().sum() == 0


def test_dropout_only_between_layers_and_only_in_training():
    with pytest.warns(UserWarning, match="num_layers=1"):
        single = stseq.nn.LSTM(3, 4, dropout=0.5).double()  # one layer: dropout never applies
    stacked = stseq.nn.GRU(3, 4, num_layers=2, dropout=0.5).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(single.train()(x)[0], single.eval()(x)[0])
    train_out = stacked.train()(x)[0]
    eval_out = stacked.eval()(x)[0]
    assert not torch.allclose(train_out, eval_out)
    reference = torch.nn.GRU(3, 4, num_layers=2).double()
    reference.load_state_dict(stacked.state_dict())
    torch.testing.assert_close(eval_out, reference(x)[0], rtol=1e-10, atol=1e-12)


def test_gradcheck_native_lstm():
    config = dict(input_size=2, hidden_size=3, proj_size=2, bidirectional=True)
    weights = flat_weights("lstm", config)
    x = torch.randn(3, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 1, 2])

    def fn(x, h0, c0, *weights):
        out, (h_n, c_n) = ops.lstm(x, (h0, c0), list(weights), bidirectional=True,
                                   lengths=lengths, backend="native")
        return out, h_n, c_n

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *weights), fast_mode=True)


def test_gradcheck_native_gru_packed():
    config = dict(input_size=2, hidden_size=3, num_layers=2)
    weights = flat_weights("gru", config)
    batch_sizes = torch.tensor([3, 2, 2, 1])
    data = torch.randn(int(batch_sizes.sum()), 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(data, h0, *weights):
        return ops.gru(data, h0, list(weights), num_layers=2, batch_sizes=batch_sizes,
                       backend="native")

    assert torch.autograd.gradcheck(fn, (data, h0, *weights), fast_mode=True)


def layer_samples(mode):
    """(args of the layer op): packed; padded, variable-length, reverse (with a projection for
    the LSTM)."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_()

    hidden, gates = 3, (4 if mode == "lstm" else 3) * 3
    cases = [(torch.tensor([3, 2, 2, 1]), False, False, None),
             (torch.tensor([3, 3, 2, 0]), True, True, 2 if mode == "lstm" else None)]
    for batch_sizes, padded, reverse, proj in cases:
        rows = 3 * len(batch_sizes) if padded else int(batch_sizes.sum())
        state = proj or hidden
        if mode == "lstm":
            yield (rand(rows, 2), rand(3, state), rand(3, hidden), rand(gates, 2),
                   rand(gates, state), rand(gates), rand(gates),
                   rand(proj, hidden) if proj else None, batch_sizes, padded, reverse, True,
                   "auto")
        else:
            yield (rand(rows, 2), rand(3, hidden), rand(gates, 2), rand(gates, hidden),
                   rand(gates), rand(gates), batch_sizes, padded, reverse, True, "auto")


@pytest.mark.parametrize("mode", list(MODES))
def test_opcheck(mode):
    op = getattr(torch.ops.stseq, mode)
    backward = getattr(torch.ops.stseq, f"{mode}_backward")
    for args in layer_samples(mode):
        torch.library.opcheck(op.default, args)
    outputs = op(*args)  # the backward op on the last sample
    detached = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    grads = [torch.randn_like(outputs[0]), torch.randn_like(outputs[1])]
    if mode == "lstm":
        x, h0, c0, w_ih, w_hh, _, _, w_hr, batch_sizes, padded, reverse = detached[:11]
        backward_args = (*grads, torch.randn_like(outputs[2]), x, h0, c0, w_ih, w_hh, w_hr,
                         outputs[0].detach(), outputs[3], outputs[4], batch_sizes, padded,
                         reverse, True, "auto")
    else:
        x, h0, w_ih, w_hh, _, _, batch_sizes, padded, reverse = detached[:9]
        backward_args = (*grads, x, h0, w_ih, w_hh, outputs[0].detach(), outputs[2],
                         batch_sizes, padded, reverse, True, "auto")
    torch.library.opcheck(backward.default, backward_args)


@pytest.mark.parametrize("mode", list(MODES))
def test_compile_fullgraph_module(mode):
    torch._dynamo.reset()
    _, module = make_pair(mode, dict(input_size=3, hidden_size=4, num_layers=2,
                                     bidirectional=True, batch_first=True), dtype=torch.float32)
    x = torch.randn(2, 5, 3)
    kwargs = dict(lengths=torch.tensor([5, 2])) if mode == "lstm" else {}
    compiled = torch.compile(module, fullgraph=True)
    out, _ = compiled(x, **kwargs)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    module.zero_grad()
    expected, _ = module(x, **kwargs)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    assert_all_close(grads, [p.grad for p in module.parameters()])


@pytest.mark.parametrize("mode", list(MODES))
def test_state_dict_round_trips_and_repr(mode):
    torch_cls, stseq_cls = MODES[mode]
    extra = dict(proj_size=2) if mode == "lstm" else {}
    reference = torch_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, **extra)
    module = stseq_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, **extra)
    assert repr(module) == repr(reference)
    assert [n for n, _ in module.named_parameters()] == [n for n, _ in reference.named_parameters()]
    module.load_state_dict(reference.state_dict())
    back = torch_cls(3, 5, num_layers=2, bidirectional=True, batch_first=True, **extra)
    back.load_state_dict(module.state_dict())
    for name, value in reference.state_dict().items():
        assert torch.equal(back.state_dict()[name], value)
    module.flatten_parameters()
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(module(x)[0], reference(x)[0], rtol=1e-5, atol=1e-6)
    assert "backend='reference'" in repr(stseq_cls(3, 5, backend="reference"))


def test_use_backend_context_and_unknown_backend():
    _, module = make_pair("gru", dict(input_size=2, hidden_size=3), backend="auto")
    x = torch.randn(4, 2, 2, dtype=torch.float64)
    native = module(x)[0]
    with stseq.use_backend("reference"):
        torch.testing.assert_close(module(x)[0], native, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="backend must be one of"):
        stseq.nn.LSTM(2, 3, backend="fast")


def test_cpu_autocast_runs_in_float32():
    _, module = make_pair("lstm", dict(input_size=3, hidden_size=4), dtype=torch.float32)
    x = torch.randn(5, 2, 3)
    expected, _ = module(x.bfloat16().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h_n, _) = module(x.bfloat16())
    assert out.dtype == h_n.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_inputs_are_not_mutated():
    _, module = make_pair("lstm", dict(input_size=2, hidden_size=3, bidirectional=True))
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    hx = (torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 3, 3, dtype=torch.float64))
    lengths = torch.tensor([2, 5, 1])
    before = [t.clone() for t in (x, *hx, lengths)]
    out, _ = module(x, hx, lengths=lengths)
    out.sum().backward()
    for a, b in zip((x, *hx, lengths), before):
        assert torch.equal(a, b)


def test_backward_is_bitwise_deterministic():
    _, module = make_pair("lstm", dict(input_size=8, hidden_size=16, num_layers=2),
                          dtype=torch.float32)
    x = torch.randn(12, 9, 8)
    lengths = torch.randint(1, 13, (9,))

    def grads():
        module.zero_grad()
        module(x, lengths=lengths)[0].square().sum().backward()
        return [p.grad.clone() for p in module.parameters()]

    first = grads()
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(first, grads()))


def lstm_call(**changes):
    """A valid ops.lstm call (2 layers, bidirectional, B=3, L=4) with some arguments replaced."""
    weights = flat_weights("lstm", dict(input_size=2, hidden_size=3, num_layers=2,
                                        bidirectional=True))
    args = dict(input=torch.randn(4, 3, 2, dtype=torch.float64),
                hx=(torch.zeros(4, 3, 3, dtype=torch.float64),
                    torch.zeros(4, 3, 3, dtype=torch.float64)),
                weights=weights, num_layers=2, bidirectional=True)
    args.update(changes)
    return args


BAD_CALLS = {
    "input size": (dict(input=torch.randn(4, 3, 5, dtype=torch.float64)),
                   r"input.size\(-1\) must be equal to input_size=2, got 5"),
    "input rank": (dict(input=torch.randn(4, 3, dtype=torch.float64)),
                   r"input must have shape \[L, B, I\]"),
    "empty sequence": (dict(input=torch.randn(0, 3, 2, dtype=torch.float64)),
                       r"at least one time step"),
    "integer input": (dict(input=torch.ones(4, 3, 2, dtype=torch.int64)),
                      r"input must be a floating-point tensor"),
    "h0 shape": (dict(hx=(torch.zeros(2, 3, 3, dtype=torch.float64),
                          torch.zeros(4, 3, 3, dtype=torch.float64))),
                 r"hx\[0\] \(h_0\) must have shape \[num_layers \* num_directions, B, P\] = "
                 r"\[4, 3, 3\], got \[2, 3, 3\]"),
    "c0 batch": (dict(hx=(torch.zeros(4, 3, 3, dtype=torch.float64),
                          torch.zeros(4, 2, 3, dtype=torch.float64))),
                 r"hx\[1\] \(c_0\) must have shape"),
    "hx dtype": (dict(hx=(torch.zeros(4, 3, 3), torch.zeros(4, 3, 3))),
                 r"hx\[0\] \(h_0\) is torch.float32 on cpu but input is torch.float64"),
    "lengths too long": (dict(lengths=torch.tensor([4, 5, 1])),
                         r"lengths must be in \[0, L=4\]; lengths\[1\] = 5"),
    "negative lengths": (dict(lengths=torch.tensor([4, 2, -1])),
                         r"lengths must be in \[0, L=4\]; lengths\[2\] = -1"),
    "lengths count": (dict(lengths=torch.tensor([4, 2])), r"lengths must have B=3 entries"),
    "float lengths": (dict(lengths=torch.tensor([4.0, 2.0, 1.0])),
                      r"lengths must be an integer tensor"),
    "lengths on meta": (dict(lengths=torch.tensor([4, 2, 1], device="meta")),
                        r"lengths is on meta but input is on cpu; pass lengths on the CPU"),
    "weights count": (dict(weights=[]), r"weights must hold 4 or 5 tensors per layer"),
    "weight shape": (dict(num_layers=1, bidirectional=False, hx=None),
                     r"weights must hold 4 or 5 tensors per layer and direction \(1 of them"),
    "weight dtype": (dict(weights=[w.float() for w in flat_weights(
        "lstm", dict(input_size=2, hidden_size=3, num_layers=2, bidirectional=True))]),
        r"weights\[0\] is torch.float32 on cpu but input is torch.float64"),
    "dropout": (dict(dropout=1.5), r"dropout must be in \[0, 1\]"),
    "algorithm": (dict(algorithm="magic"), r"algorithm must be one of"),
    "packed and lengths": (dict(lengths=torch.tensor([1, 1, 1]), batch_sizes=torch.tensor([3])),
                           r"not both"),
}


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_raises_naming_the_argument(name, backend):
    changes, message = BAD_CALLS[name]
    with pytest.raises(ValueError, match=message):
        ops.lstm(**lstm_call(**changes), backend=backend)


def test_bad_layer_weight_shape_is_named():
    weights = flat_weights("gru", dict(input_size=2, hidden_size=3, num_layers=2))
    weights[5] = torch.zeros(9, 4, dtype=torch.float64)  # weight_hh_l1 must be [9, 3]
    with pytest.raises(ValueError, match=r"weight_hh_l1 must have shape \[9, 3\], got \[9, 4\]"):
        ops.gru(torch.randn(4, 3, 2, dtype=torch.float64), None, weights, num_layers=2)


def test_bad_packed_sequences():
    module = stseq.nn.GRU(2, 3).double()
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="must be sorted in decreasing order"):
        module(pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=True))
    increasing = PackedSequence(torch.randn(6, 2, dtype=torch.float64), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="batch_sizes must be positive and non-increasing"):
        module(increasing)
    with pytest.raises(ValueError, match="lengths= is for padded tensors"):
        module(pack_padded_sequence(x, torch.tensor([4, 2, 1])), lengths=torch.tensor([4, 2, 1]))
    with pytest.raises(ValueError, match="input has 5 rows but batch_sizes sum to 6"):
        ops.gru(torch.randn(5, 2, dtype=torch.float64), None, module._flat_weights,
                batch_sizes=torch.tensor([3, 2, 1]))


def test_module_state_dims_must_match_input():
    module = stseq.nn.LSTM(2, 3).double()
    with pytest.raises(ValueError, match="for batched 3-D input, hx must be 3-D"):
        module(torch.randn(4, 3, 2, dtype=torch.float64),
               (torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="for unbatched 2-D input, hx must be 2-D"):
        module(torch.randn(4, 2, dtype=torch.float64),
               (torch.zeros(1, 1, 3, dtype=torch.float64),
                torch.zeros(1, 1, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="input must be a 3-D batch"):
        module(torch.randn(4, 3, 2, 1, dtype=torch.float64))


def test_direct_op_calls_are_checked():
    # torch.ops bypasses the Python checks: the C++ checks keep every index in bounds.
    x = torch.randn(6, 2, dtype=torch.float64)
    h0 = torch.zeros(3, 3, dtype=torch.float64)
    w_ih, w_hh = torch.randn(9, 2, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)

    def gru(batch_sizes, padded, h=h0, w=w_hh, keep=True):
        return torch.ops.stseq.gru(x, h, w_ih, w, None, None, batch_sizes, padded, False,
                                   keep, "auto")

    with pytest.raises(ValueError, match="batch_sizes must be non-increasing"):
        gru(torch.tensor([2, 3, 1]), False)
    with pytest.raises(ValueError, match=r"batch_sizes\[0\] = 4 is outside \[0, B=3\]"):
        gru(torch.tensor([4, 2]), False)
    with pytest.raises(ValueError, match="input has 6 rows but batch_sizes describe 9"):
        gru(torch.tensor([3, 3, 3]), True)
    with pytest.raises(ValueError, match="batch_sizes must be an int64 CPU tensor"):
        gru(torch.tensor([3, 3], dtype=torch.int32), False)
    with pytest.raises(ValueError, match=r"weight_hh must have shape \[G, P\]"):
        gru(torch.tensor([3, 3]), False, w=torch.randn(9, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="gru layers on CPU support float32 and float64"):
        torch.ops.stseq.gru(x.half(), h0.half(), w_ih.half(), w_hh.half(), None, None,
                            torch.tensor([3, 3]), False, False, True, "auto")
    output, _, gates = gru(torch.tensor([3, 3]), False, keep=False)
    assert gates.numel() == 0
    with pytest.raises(ValueError, match="keep_activations=True"):
        torch.ops.stseq.gru_backward(None, None, x, h0, w_ih, w_hh, output, gates,
                                     torch.tensor([3, 3]), False, False, False, "auto")


CUDA_DTYPES = {torch.float32: dict(rtol=2e-4, atol=2e-4),
               torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
               torch.float16: dict(rtol=1e-2, atol=1e-2)}


def assert_close_to_scale(actual, expected, tolerance):
    atol = max(tolerance["atol"], tolerance["rtol"] * expected.abs().max().item())
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tolerance["rtol"],
                               atol=atol)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("algorithm", ["stepwise", "persistent"])
@pytest.mark.parametrize("dtype", list(CUDA_DTYPES), ids=str)
@pytest.mark.parametrize("hidden,batch,kind", [(20, 5, "lengths"), (64, 37, "padded"),
                                               (256, 70, "lengths"), (100, 9, "packed")])
def test_cuda_matches_cpu_float64(mode, algorithm, dtype, hidden, batch, kind):
    config = dict(input_size=16, hidden_size=hidden, num_layers=2, bidirectional=True)
    call = dict(kind=kind, seq_len=23, batch=batch, training=True, hx=True)
    reference, module = make_pair(mode, config)
    expected, expected_grads = outputs_and_grads(mode, reference, call, use_lengths_keyword=False)
    module = module.to("cuda", dtype)
    x, lengths, hx = make_call(mode, module, call, torch.float64)
    x = x.detach().to("cuda", dtype).requires_grad_()
    if hx is not None:
        hx = (tuple(h.detach().to("cuda", dtype).requires_grad_() for h in hx)
              if isinstance(hx, tuple) else hx.detach().to("cuda", dtype).requires_grad_())
    run = ops.lstm if mode == "lstm" else ops.gru
    module.train()
    if kind == "packed":
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        states = module.permute_hidden(hx, packed.sorted_indices)
        out, hidden_out = run(packed.data, states, module._flat_weights, num_layers=2,
                              bidirectional=True, batch_sizes=packed.batch_sizes,
                              algorithm=algorithm)
        hidden_out = module.permute_hidden(hidden_out, packed.unsorted_indices)
    else:
        out, hidden_out = run(x, hx, module._flat_weights, num_layers=2, bidirectional=True,
                              lengths=lengths if kind == "lengths" else None,
                              algorithm=algorithm)
    results = [out, *(hidden_out if isinstance(hidden_out, tuple) else [hidden_out])]
    g = torch.Generator().manual_seed(1)
    loss = sum((t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64).cuda()).sum()
               for t in results)
    grads = torch.autograd.grad(loss, leaves(x, hx, module))
    for actual, wanted in zip(results, expected, strict=True):
        assert actual.dtype == dtype
        assert_close_to_scale(actual.cpu(), wanted, CUDA_DTYPES[dtype])
    for actual, wanted in zip(grads, expected_grads, strict=True):
        assert_close_to_scale(actual.cpu(), wanted, CUDA_DTYPES[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize("mode", list(MODES))
def test_cuda_float64_and_determinism(mode):
    reference, module = make_pair(mode, dict(input_size=8, hidden_size=32, num_layers=2))
    call = dict(kind="lengths", seq_len=15, batch=11, training=True, hx=False)
    expected, _ = outputs_and_grads(mode, reference, call, use_lengths_keyword=False)
    module = module.cuda()
    x, lengths, _ = make_call(mode, module, call)
    x = x.detach().cuda().requires_grad_()
    out, _ = module(x, lengths=lengths)
    torch.testing.assert_close(out.cpu(), expected[0], rtol=1e-10, atol=1e-12)
    first = torch.autograd.grad(out.square().sum(), list(module.parameters()))
    for _ in range(2):
        again = torch.autograd.grad(module(x, lengths=lengths)[0].square().sum(),
                                    list(module.parameters()))
        assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.cuda
def test_cuda_autocast_runs_in_the_autocast_dtype():
    _, module = make_pair("gru", dict(input_size=8, hidden_size=16), dtype=torch.float32)
    module = module.cuda()
    x = torch.randn(7, 3, 8, device="cuda")
    expected, _ = module(x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, h_n = module(x)
    assert out.dtype == h_n.dtype == torch.bfloat16
    assert_close_to_scale(out.float(), expected, CUDA_DTYPES[torch.bfloat16])


@pytest.mark.parametrize("mode", list(MODES))
def test_reference_keeps_nan_padding_out_of_every_gradient(mode):
    # Padding is never read: NaN there reaches no output and no gradient, on either backend,
    # and the two backends agree.
    module = (torch.nn.LSTM if mode == "lstm" else torch.nn.GRU)(
        2, 3, num_layers=2, bidirectional=True).double()
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    x[2:, 1] = math.nan  # row 1 has length 2
    x[:, 2] = math.inf   # row 2 is empty
    lengths = torch.tensor([5, 2, 0])
    op = ops.lstm if mode == "lstm" else ops.gru
    results = []
    for backend in ("native", "reference"):
        leaves = [x.clone().requires_grad_(),
                  *(w.detach().clone().requires_grad_() for w in module._flat_weights)]
        output, finals = op(leaves[0], None, leaves[1:], num_layers=2, bidirectional=True,
                            lengths=lengths, backend=backend)
        outputs = [output, *(finals if mode == "lstm" else [finals])]
        gradients = torch.autograd.grad([o.sum() for o in outputs], leaves)
        assert all(torch.isfinite(t).all() for t in [*outputs, *gradients]), backend
        assert (gradients[0][2:, 1] == 0).all() and (gradients[0][:, 2] == 0).all(), backend
        results.append([*outputs, *gradients])
    for native, reference in zip(*results, strict=True):
        torch.testing.assert_close(native, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mode", list(MODES))
def test_cpu_half_types_match_torch(mode, dtype):
    # torch.nn.LSTM/GRU accept bfloat16/float16 on the CPU; stseq computes them in float32
    # (states included) and returns input's dtype. Both are compared with float32 torch.nn on
    # the same rounded weights and inputs: stseq is at least as close as torch.nn itself.
    torch_cls, stseq_cls = MODES[mode]
    torch.manual_seed(3)
    reference = torch_cls(8, 16, num_layers=2, bidirectional=True, batch_first=True)
    half_torch = torch_cls(8, 16, num_layers=2, bidirectional=True, batch_first=True).to(dtype)
    half_torch.load_state_dict(reference.state_dict())
    half_stseq = stseq_cls(8, 16, num_layers=2, bidirectional=True, batch_first=True).to(dtype)
    half_stseq.load_state_dict(reference.state_dict())
    reference.load_state_dict({k: v.float() for k, v in half_torch.state_dict().items()})
    x = torch.randn(4, 12, 8).to(dtype)
    lengths = torch.tensor([12, 5, 9, 1])
    packed = pack_padded_sequence(x.float(), lengths, batch_first=True, enforce_sorted=False)
    expected, expected_state = reference(packed)
    expected = pad_packed_sequence(expected, batch_first=True)[0]
    ours, our_state = half_stseq(x, lengths=lengths)
    theirs, _ = half_torch(pack_padded_sequence(x, lengths, batch_first=True,
                                                enforce_sorted=False))
    theirs = pad_packed_sequence(theirs, batch_first=True)[0]
    assert ours.dtype == dtype and (our_state[0] if mode == "lstm" else our_state).dtype == dtype
    our_error = (ours.float() - expected).abs().max()
    their_error = (theirs.float() - expected).abs().max()
    assert our_error <= max(their_error, 1e-2), (our_error, their_error)
    torch.testing.assert_close(ours.float(), expected, rtol=3e-2, atol=3e-2)
    for ours_h, expected_h in zip(our_state if mode == "lstm" else [our_state],
                                  expected_state if mode == "lstm" else [expected_state]):
        torch.testing.assert_close(ours_h.float(), expected_h, rtol=3e-2, atol=3e-2)
    # gradients reach the half-precision parameters, close to float32 torch.nn's
    (ours.float() * torch.linspace(-1, 1, ours.numel()).view(ours.shape)).sum().backward()
    (expected * torch.linspace(-1, 1, ours.numel()).view(ours.shape)).sum().backward()
    for (name, p), q in zip(half_stseq.named_parameters(), reference.parameters()):
        assert p.grad.dtype == dtype, name
        scale = q.grad.abs().max().item()
        torch.testing.assert_close(p.grad.float(), q.grad, rtol=5e-2, atol=5e-2 * scale + 1e-3,
                                   msg=name)


@pytest.mark.parametrize("mode", list(MODES))
def test_torchscript_is_refused_with_the_reason(mode):
    module = MODES[mode][1](4, 8)
    for target in (module, torch.nn.Sequential(module)):
        with pytest.raises(TypeError, match=r"does not support TorchScript .* Use "
                                             r"torch.compile\(module, fullgraph=True\)"):
            torch.jit.script(target)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_eager_autograd_matches_the_registered_autograd_bitwise(mode):
    """Eager calls that need gradients go through a plain autograd.Function (torch.library's
    registered path costs about 0.1 ms of Python per call); both give the same gradients."""
    torch.manual_seed(0)
    module = (stseq.nn.LSTM if mode == "lstm" else stseq.nn.GRU)(6, 5)
    x = torch.randn(7, 3, 6, requires_grad=True)
    output = module(x)[0]
    assert f"{mode}_eagerBackward" in graph_names(output)
    weights = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0]
    grad = torch.randn_like(output)
    eager = torch.autograd.grad(output, [x, *weights], grad)
    data, h0 = x.reshape(21, 6), torch.zeros(3, 5)
    batch_sizes = torch.full((7,), 3, dtype=torch.int64)
    if mode == "lstm":  # the op itself: torch.library's registered autograd
        direct = torch.ops.stseq.lstm(data, h0, h0, *weights, None, batch_sizes, True, False,
                                      True, "auto")[0]
    else:
        direct = torch.ops.stseq.gru(data, h0, *weights, batch_sizes, True, False, True,
                                     "auto")[0]
    assert f"{mode}_eagerBackward" not in graph_names(direct)
    registered = torch.autograd.grad(direct, [x, *weights], grad.reshape(21, 5))
    for a, b in zip(eager, registered):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_calls_without_gradients_skip_the_registered_python_autograd(mode):
    """Under no_grad (or with no input requiring grad) the op is called below autograd: torch's
    Python autograd kernel for registered ops (autograd_impl) would only do the same, at tens of
    microseconds per call. The op itself, called directly, still goes through it."""
    torch.manual_seed(0)
    module = (stseq.nn.LSTM if mode == "lstm" else stseq.nn.GRU)(6, 5)
    x = torch.randn(7, 3, 6)
    with torch.no_grad():
        expected = module(x)
        assert "autograd_impl" not in python_functions_called(lambda: module(x))
        data, h0 = x.reshape(21, 6), torch.zeros(3, 5)
        weights = [module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0,
                   module.bias_hh_l0]
        batch_sizes = torch.full((7,), 3, dtype=torch.int64)
        if mode == "lstm":
            direct = lambda: torch.ops.stseq.lstm(data, h0, h0, *weights, None,  # noqa: E731
                                                  batch_sizes, True, False, False, "auto")
        else:
            direct = lambda: torch.ops.stseq.gru(data, h0, *weights, batch_sizes,  # noqa: E731
                                                 True, False, False, "auto")
        assert "autograd_impl" in python_functions_called(direct)
        torch.testing.assert_close(direct()[0].reshape(7, 3, 5), expected[0], rtol=0, atol=0)
    for parameter in module.parameters():  # grad enabled, nothing requires grad
        parameter.requires_grad_(False)
    assert "autograd_impl" not in python_functions_called(lambda: module(x))
    result = module(x)
    assert result[0].grad_fn is None
    torch.testing.assert_close(result[0], expected[0], rtol=0, atol=0)


@pytest.mark.parametrize("mode,proj,bias,batch_first,grad", [
    ("lstm", 0, True, False, False), ("lstm", 3, False, True, True),
    ("lstm", 0, True, True, True), ("gru", 0, True, False, True), ("gru", 0, False, True, False)])
def test_one_layer_calls_take_the_short_path_with_the_general_paths_results(mode, proj, bias,
                                                                             batch_first, grad):
    """One layer, one direction, no lengths or hx: one op call (about 50 us of Python less per
    call); outputs, final states and gradients equal the general path's (hx given as zeros)
    bitwise, and bad arguments still get the general path's named errors."""
    torch.manual_seed(0)
    kwargs = {"proj_size": proj} if proj else {}
    cls = stseq.nn.LSTM if mode == "lstm" else stseq.nn.GRU
    module = cls(6, 5, bias=bias, batch_first=batch_first, **kwargs)
    x = torch.randn(3, 7, 6) if batch_first else torch.randn(7, 3, 6)
    x.requires_grad_(grad)
    short_calls = python_functions_called(lambda: module(x))
    assert "_one_native_layer" in short_calls and "_native" not in short_calls
    short = module(x)
    zeros = torch.zeros(1, 3, proj or 5)
    hx = (zeros, torch.zeros(1, 3, 5)) if mode == "lstm" else zeros
    assert "_native" in python_functions_called(lambda: module(x, hx))
    general = module(x, hx)
    short_flat = [short[0], *(short[1] if mode == "lstm" else [short[1]])]
    general_flat = [general[0], *(general[1] if mode == "lstm" else [general[1]])]
    for a, b in zip(short_flat, general_flat):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    if grad:
        grads = [torch.randn_like(t) for t in short_flat]
        inputs = [x, *module.parameters()]
        short_grads = torch.autograd.grad(short_flat, inputs, grads)
        general_grads = torch.autograd.grad(general_flat, inputs, grads)
        for a, b in zip(short_grads, general_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="input_size=6"):
        module(x[..., :4])
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        ops.lstm(x.detach(), None, [module.weight_ih_l0, module.weight_hh_l0.double()],
                 bias=False) if mode == "lstm" else ops.gru(
            x.detach(), None, [module.weight_ih_l0, module.weight_hh_l0.double()], bias=False)
