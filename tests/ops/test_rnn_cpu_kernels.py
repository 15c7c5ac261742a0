"""The CPU LSTM/GRU kernel paths that the small random shapes of test_rnn.py never reach:
the LSTM forward's two plans (the input projection of all steps first at up to 3 rows per step,
12 with 1 MB of weights; the fused [x_t, h_prev] [W_ih; W_hh]^T product above), the recurrent
GEMM's blocks of rows (8, and 4 to 14 at the end of a chunk; products of 3, 2 and 1 rows), its
K blocks (K = I + H over 256), a last panel cut short (4H not a multiple of the panel width),
rows dropping out of packed batches, and the weight packing from contiguous, transposed and
strided weights."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import stseq

MODES = {"lstm": (torch.nn.LSTM, stseq.nn.LSTM), "gru": (torch.nn.GRU, stseq.nn.GRU)}

# (batch, input_size, hidden): both sides of the projection rule's 3 rows, the GEMM's blocks of
# 8 and its last blocks of 4 to 14 rows (4, 9, 10, 13; 37 = 3 x 8 + 13), products of 3 and 2
# rows over groups of four panels and a last one, and I + H = 290 > 256 (two depth passes,
# the second accumulating) with 4H = 360 (a cut panel).
SHAPES = [(1, 200, 90), (3, 5, 7), (3, 200, 90), (4, 200, 90), (8, 200, 90), (9, 33, 20),
          (10, 33, 40), (13, 200, 90), (37, 16, 24)]


def _pair(mode, input_size, hidden):
    torch.manual_seed(0)
    reference = MODES[mode][0](input_size, hidden, dtype=torch.float64)
    module = MODES[mode][1](input_size, hidden, dtype=torch.float64)
    module.load_state_dict(reference.state_dict())
    return reference, module


def _run(module, x, lengths):
    inputs = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, hidden = module(inputs)
    out = out if lengths is None else out.data
    hidden = list(hidden) if isinstance(hidden, tuple) else [hidden]
    g = torch.Generator().manual_seed(1)
    results = [out, *hidden]
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in results)
    grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return [t.detach() for t in results], grads


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("batch,input_size,hidden", SHAPES)
@pytest.mark.parametrize("mode", list(MODES))
def test_cpu_plans_match_torch(mode, batch, input_size, hidden, packed):
    reference, module = _pair(mode, input_size, hidden)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, batch, input_size, generator=g, dtype=torch.float64).requires_grad_()
    lengths = None
    if packed:
        lengths = torch.randint(1, 7, (batch,), generator=g)
        lengths[0] = 6
    expected, expected_grads = _run(reference, x, lengths)
    actual, grads = _run(module, x, lengths)
    for a, e in zip([*actual, *grads], [*expected, *expected_grads], strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def _strided(weight, layout):
    """The same values as `weight` in another memory layout."""
    if layout == "transposed":  # strides (1, rows): the packing copies rows of W^T
        return weight.t().contiguous().t()
    if layout == "strided":  # every other column of a wider tensor: no contiguous dimension
        wide = torch.zeros(weight.shape[0], 2 * weight.shape[1], dtype=weight.dtype)
        wide[:, ::2] = weight
        return wide[:, ::2]
    return weight


# (input_size, hidden): the transposing packer's 16 x 16 blocks of float32 (I = 48, 4H = 160,
# whole panels) and its fallback for other sizes (I = 40, 4H = 144).
@pytest.mark.parametrize("input_size,hidden", [(40, 36), (48, 40)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("layout", ["transposed", "strided"])
@pytest.mark.parametrize("batch", [2, 12])
def test_lstm_weight_layouts_pack_alike(layout, batch, dtype, input_size, hidden):
    g = torch.Generator().manual_seed(3)
    seq_len = 5
    x = torch.randn(seq_len * batch, input_size, generator=g, dtype=dtype)
    h0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    c0 = torch.randn(batch, hidden, generator=g, dtype=dtype)
    w_ih = torch.randn(4 * hidden, input_size, generator=g, dtype=dtype)
    w_hh = torch.randn(4 * hidden, hidden, generator=g, dtype=dtype)
    bias = torch.randn(4 * hidden, generator=g, dtype=dtype)
    batch_sizes = torch.full((seq_len,), batch, dtype=torch.int64)

    def forward_backward(weight_ih, weight_hh):
        out, h, c, gates, cells = torch.ops.stseq.lstm(
            x, h0, c0, weight_ih, weight_hh, bias, bias, None, batch_sizes, True, False, True,
            "auto")
        grads = torch.ops.stseq.lstm_backward(
            torch.ones_like(out), None, None, x, h0, c0, weight_ih, weight_hh, None, out, gates,
            cells, batch_sizes, True, False, True, "auto")
        return [out, h, c, *grads]

    expected = forward_backward(w_ih, w_hh)
    actual = forward_backward(_strided(w_ih, layout), _strided(w_hh, layout))
    assert _strided(w_ih, layout).stride() != w_ih.stride()
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["transposed", "strided"])
def test_gru_weight_layouts_pack_alike(layout):
    g = torch.Generator().manual_seed(4)
    seq_len, batch, input_size, hidden = 5, 3, 20, 44
    x = torch.randn(seq_len * batch, input_size, generator=g, dtype=torch.float64)
    h0 = torch.randn(batch, hidden, generator=g, dtype=torch.float64)
    w_ih = torch.randn(3 * hidden, input_size, generator=g, dtype=torch.float64)
    w_hh = torch.randn(3 * hidden, hidden, generator=g, dtype=torch.float64)
    batch_sizes = torch.full((seq_len,), batch, dtype=torch.int64)

    def forward_backward(weight_hh):
        out, h, gates = torch.ops.stseq.gru(x, h0, w_ih, weight_hh, None, None, batch_sizes,
                                                  True, False, True, "auto")
        grads = torch.ops.stseq.gru_backward(
            torch.ones_like(out), None, x, h0, w_ih, weight_hh, out, gates, batch_sizes, True,
            False, False, "auto")
        return [out, h, *grads]

    expected = forward_backward(w_hh)
    actual = forward_backward(_strided(w_hh, layout))
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_lstm_gates_saturate_like_torch(dtype):
    """The vector activations over pre-activations from -120 to 120 (float32 on AVX-512: the fast
    exp with its clamps at -87 and 100, and the window below ln(FLT_MAX) = 88.72 where exp is
    near overflow): torch's sigmoid and tanh to float rounding, and exactly 0, 1 or -1 where the
    function has saturated in the dtype, so that a gradient through them is exactly 0."""
    hidden = 64  # pairs of AVX-512 vectors (32 units) and no scalar tail
    special = [-88.9, -88.7, -87.5, 87.5, 88.7, 88.9, -44.5, 44.5]
    values = torch.cat([torch.linspace(-120, 120, 4 * hidden - len(special)),
                        torch.tensor(special)]).to(torch.float64)
    order = torch.randperm(values.numel(), generator=torch.Generator().manual_seed(5))
    pre = values[order].to(dtype)  # one step's pre-activations, i f g o
    x = torch.ones(1, 1, dtype=dtype)
    zeros = torch.zeros(1, hidden, dtype=dtype)
    _, _, _, gates, _ = torch.ops.stseq.lstm(
        x, zeros, zeros, pre.view(-1, 1), torch.zeros(4 * hidden, hidden, dtype=dtype), None,
        None, None, torch.tensor([1]), True, False, True, "auto")
    i, f, g, o = pre.view(4, hidden)
    expected = torch.cat([torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)])
    tolerance = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(gates.view(-1), expected, rtol=tolerance, atol=tolerance)
    saturated = (expected == 0) | (expected.abs() == 1)
    assert saturated.sum() > hidden  # most of [-120, 120] saturates
    assert torch.equal(gates.view(-1)[saturated], expected[saturated])


# The CPU kernel tests, the split's and the non-finite ones, run again in a subprocess under
# another ATen capability: stseq picks its LSTM/GRU kernels (AVX-512, AVX2 or the baseline
# build; rnn_cpu_loop.h) by the capability ATen runs at, read once per process, so the kernels
# that this machine does not pick are otherwise never run.
OTHER_CAPABILITY_TESTS = ["test_rnn_cpu_kernels.py", "test_rnn_split.py", "test_rnn_nonfinite.py"]


@pytest.mark.parametrize("capability", ["avx2", "default"])
def test_kernels_of_other_capabilities(capability):
    if torch.backends.cpu.get_cpu_capability() == capability.upper():
        pytest.skip(f"the {capability} kernels are the ones every other test here runs")
    if capability == "avx2" and torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("this CPU has no AVX2")
    here = pathlib.Path(__file__).parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-k", "not other_capabilities", *[str(here / name) for name in OTHER_CAPABILITY_TESTS]],
        env={**os.environ, "ATEN_CPU_CAPABILITY": capability}, cwd=here.parent,
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]
