"""The CPU LSTM forward that splits each step's hidden units across threads (csrc/rnn/
rnn_cpu_split.h: batches of one row tile, two or more threads, enough work per step, no
projection): against the reference twin and against the one-thread path (output and h_n/c_n
bitwise; the gradients, through the gates and cells it kept, up to the rounding of ATen's GEMMs
after the backward's loop, which may depend on the thread count), with rows dropping out
mid-sequence, H not a multiple of the chunk width, both input-projection plans (all steps first
at up to 3 rows per step, or 12 with 1 MB of weights; fused otherwise) and float32/float64.
stseq._C._lstm_split_forward_calls() counts the calls that took the split (its results cannot
tell: they equal the one-thread path's). After a split call that stalled on a descheduled
thread (a busy machine) the next 16 calls run on one thread, so the tests repeat a call until it
splits (_split)."""

import threading

import hypothesis
import pytest
import torch
from hypothesis import given, strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import stseq
from stseq import _C, ops

import fuzzing  # noqa: F401  (loads the hypothesis profile: ci, or the large one)

# (batch, input_size, hidden, lengths): both sides of the projection rule (4, 6, 8, 9, 12, 16, 20
# rows; under and over 1 MB of [W_ih; W_hh]), H = 37 and 100 (a short last chunk), rows that
# end at different steps, a row of length 1; each over the split's 2^20 multiply-adds per step
# (rows x (I + H) x 4H) or 1 MB of weights.
CASES = [
    (4, 600, 100, None),
    (8, 150, 128, None),  # under 1 MB: fused
    (8, 400, 128, None),  # over 1 MB: the input projection first, 96 rows in blocks of 64 + 32
    (12, 400, 128, [12] * 7 + [7] * 4 + [1]),  # over 1 MB at 12 rows: projection first
    (16, 400, 128, [12] * 10 + [7] * 5 + [1]),  # over 1 MB at 16 rows: fused
    (9, 200, 100, [12, 12, 11, 9, 9, 5, 3, 2, 1]),
    (20, 340, 37, None),
    (20, 340, 37, [12] * 5 + [10] * 5 + [6] * 5 + [2] * 4 + [1]),
    (6, 300, 128, [12, 7, 7, 4, 2, 1]),
    (3, 64, 256, [12, 9, 4]),  # under 2^20 multiply-adds, over 1 MB of weights
    # over 1 MB at 17 to 31 rows: fused, the weights streamed from L3 by the GEMM's prefetch
    (20, 400, 128, None),
    (24, 400, 128, [12] * 5 + [11] * 5 + [6] * 5 + [3] * 4 + [1] * 5),
]
SEQ_LEN = 12


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _split(call, attempts=40):
    """call()'s result from a call that took the split (the first unless a stall on a busy
    machine put the split off for the next 16 calls)."""
    for _ in range(attempts):
        before = _C._lstm_split_forward_calls()
        result = call()
        if _C._lstm_split_forward_calls() == before + 1:
            return result
    raise AssertionError(f"no split in {attempts} calls")


def _weights(input_size, hidden, dtype, proj_size=0):
    torch.manual_seed(0)
    module = torch.nn.LSTM(input_size, hidden, proj_size=proj_size, dtype=dtype)
    return [w.detach().clone().requires_grad_() for w in module._flat_weights]


def _run(x, weights, lengths, backend, threads=None):
    """(output, h_n, c_n, gradients of x and the weights) of one native or reference call."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        out, (h_n, c_n) = ops.lstm(x, None, weights, lengths=lengths, backend=backend)
        g = torch.Generator().manual_seed(1)
        loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
                   for t in (out, h_n, c_n))
        grads = torch.autograd.grad(loss, [x, *weights])
    finally:
        torch.set_num_threads(previous)
    return [t.detach() for t in (out, h_n, c_n, *grads)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,input_size,hidden,lengths", CASES)
def test_split_forward_matches_one_thread_and_reference(two_threads, batch, input_size, hidden,
                                                        lengths, dtype):
    weights = _weights(input_size, hidden, dtype)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(SEQ_LEN, batch, input_size, generator=g, dtype=dtype).requires_grad_()
    lengths = None if lengths is None else torch.tensor(lengths)
    split = _split(lambda: _run(x, weights, lengths, "native"))
    before = _C._lstm_split_forward_calls()
    one_thread = _run(x, weights, lengths, "native", threads=1)
    assert _C._lstm_split_forward_calls() == before  # with one thread it did not split
    for a, b in zip(split[:3], one_thread[:3], strict=True):  # output, h_n, c_n
        assert torch.equal(a, b)
    # The gradients go through ATen GEMMs after the time loop too, whose bits may depend on the
    # thread count: equal up to rounding.
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12,
                                                                              atol=1e-13)
    for a, b in zip(split[3:], one_thread[3:], strict=True):
        torch.testing.assert_close(a, b, **tolerance)
    if dtype == torch.float64:  # float32 equals the one-thread path, which test_rnn.py checks
        for a, b in zip(split, _run(x, weights, lengths, "reference"), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_split_inference_matches_training_forward(two_threads):
    """Under inference_mode the split writes no gates or cells: the same output and states."""
    weights = _weights(600, 80, torch.float32)
    x = torch.randn(SEQ_LEN, 5, 600, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out, (h_n, c_n) = _split(lambda: ops.lstm(x, None, weights, backend="native"))
    expected = _split(lambda: ops.lstm(x, None, weights, backend="native"))
    assert torch.equal(out, expected[0])
    assert torch.equal(h_n, expected[1][0]) and torch.equal(c_n, expected[1][1])


def test_split_not_taken_where_it_does_not_apply(two_threads):
    """Projection (proj_size), 32 rows or more (row tiles) and little work per step (under 2^20
    multiply-adds and 1 MB of weights) keep the one-thread path; the results still match the
    reference."""
    g = torch.Generator().manual_seed(4)
    cases = [(4, 600, 100, 40), (32, 200, 100, 0), (4, 200, 100, 0), (2, 8, 16, 0)]
    for batch, input_size, hidden, proj_size in cases:
        weights = _weights(input_size, hidden, torch.float64, proj_size)
        x = torch.randn(SEQ_LEN, batch, input_size, generator=g, dtype=torch.float64)
        before = _C._lstm_split_forward_calls()
        out, (h_n, c_n) = ops.lstm(x, None, weights, backend="native")
        assert _C._lstm_split_forward_calls() == before
        expected, (h_e, c_e) = ops.lstm(x, None, weights, backend="reference")
        for a, b in ((out, expected), (h_n, h_e), (c_n, c_e)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_weights_equal_across_row_tiles(two_threads, dtype):
    """With 1 MB of weights (streamed from L3, each block of 8 rows prefetching its share of the
    next panel: common/cpu_gemm.h) the fused forward of a 40-row batch runs as one row tile (one
    thread) or two (two threads), with different numbers of blocks per panel: both equal each
    other bitwise, and the reference."""
    weights = _weights(400, 128, dtype)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(SEQ_LEN, 40, 400, generator=g, dtype=dtype).requires_grad_()
    lengths = torch.tensor([12] * 10 + [9] * 10 + [5] * 10 + [4] * 5 + [1] * 5)
    before = _C._lstm_split_forward_calls()
    tiles = _run(x, weights, lengths, "native")
    assert _C._lstm_split_forward_calls() == before  # 40 rows: row tiles, not the split
    one_tile = _run(x, weights, lengths, "native", threads=1)
    for a, b in zip(tiles[:3], one_tile[:3], strict=True):
        assert torch.equal(a, b)
    tolerance = (dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32
                 else dict(rtol=1e-10, atol=1e-12))
    for a, b in zip(tiles, _run(x, weights, lengths, "reference"), strict=True):
        torch.testing.assert_close(a, b, **tolerance)


def test_split_in_stacked_reverse_and_packed_layers(two_threads):
    """stseq.nn.LSTM with two layers, both directions and a PackedSequence: every layer and
    direction splits (the reverse walk and the second layer's 2H inputs included), with the
    one-thread path's bits, forward and backward (up to the rounding of ATen's GEMMs)."""
    torch.manual_seed(6)
    module = stseq.nn.LSTM(150, 128, num_layers=2, bidirectional=True)
    x = torch.randn(SEQ_LEN, 8, 150)
    packed = pack_padded_sequence(x, torch.tensor([12, 12, 11, 9, 9, 5, 3, 2]))

    def run():
        out, (h_n, c_n) = module(packed)
        loss = out.data.square().sum() + h_n.sum() + c_n.sum()
        return [out.data.detach(), h_n.detach(), c_n.detach(),
                *torch.autograd.grad(loss, list(module.parameters()))]

    for _ in range(40):  # until a call splits in all four layer-directions (see _split)
        before = _C._lstm_split_forward_calls()
        split = run()
        if _C._lstm_split_forward_calls() == before + 4:
            break
    else:
        raise AssertionError("no call split in all four layer-directions in 40 calls")
    torch.set_num_threads(1)
    one_thread = run()
    for a, b in zip(split[:3], one_thread[:3], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(split[3:], one_thread[3:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_opcheck_at_split_sizes(two_threads):
    """torch.library.opcheck of the layer op (schema, fake impl, autograd registration) on a
    call of split size."""
    weights = _weights(150, 128, torch.float32)
    data = torch.randn(SEQ_LEN * 8, 150, requires_grad=True)
    h0 = torch.zeros(8, 128)
    batch_sizes = torch.full((SEQ_LEN,), 8, dtype=torch.int64)
    torch.library.opcheck(torch.ops.stseq.lstm.default,
                          (data, h0, h0, *weights, None, batch_sizes, True, False, True, "auto"))


def test_split_is_deterministic(two_threads):
    """Whichever thread computes a chunk, the results are the same bits run after run."""
    weights = _weights(128, 128, torch.float32)
    x = torch.randn(30, 8, 128, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        first = ops.lstm(x, None, weights, backend="native")
        for _ in range(20):
            again = ops.lstm(x, None, weights, backend="native")
            assert torch.equal(again[0], first[0]) and torch.equal(again[1][1], first[1][1])


def test_split_calls_from_concurrent_threads(two_threads):
    """Calls from several Python threads at once share the OpenMP helpers: a helper that
    arrives after its call's work was taken must touch nothing of it, and each call still gets
    its own results."""
    weights = _weights(128, 128, torch.float32)
    inputs = [torch.randn(20, 8, 128, generator=torch.Generator().manual_seed(s))
              for s in range(4)]
    with torch.inference_mode():
        expected = [ops.lstm(x, None, weights, backend="native")[0] for x in inputs]
    results = [[] for _ in inputs]

    def calls(i):
        with torch.inference_mode():
            for _ in range(5):
                results[i].append(ops.lstm(inputs[i], None, weights, backend="native")[0])

    workers = [threading.Thread(target=calls, args=(i,)) for i in range(len(inputs))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for outputs, reference in zip(results, expected, strict=True):
        assert len(outputs) == 5
        assert all(torch.equal(out, reference) for out in outputs)


@st.composite
def split_cases(draw):
    """(x [L, B, I], lengths or None, hidden, dtype, training) of a call that splits: B < 32
    rows, I raised until a step of the rows with steps has 2^20 multiply-adds."""
    batch, hidden = draw(st.integers(1, 31)), draw(st.integers(33, 160))
    seq_len = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from((torch.float32, torch.float64)))
    lengths, rows = None, batch  # rows: those with at least one step
    if draw(st.booleans()):
        lengths = torch.tensor(draw(st.lists(st.integers(0, seq_len), min_size=batch,
                                             max_size=batch)))
        lengths[0] = seq_len
        rows = int((lengths > 0).sum())
    input_size = max(draw(st.integers(1, 64)), -(-(1 << 20) // (rows * 4 * hidden)) - hidden)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(seq_len, batch, input_size, generator=g, dtype=dtype)
    return x, lengths, hidden, dtype, draw(st.booleans())


@hypothesis.settings(max_examples=max(5, hypothesis.settings().max_examples // 2))
@given(split_cases())
def test_split_equals_one_thread_path(case):
    """Random shapes that split (rows of length 0 to L, H not a multiple of the chunk width,
    inference or training forward): the same bits as the one-thread path."""
    x, lengths, hidden, dtype, training = case
    weights = _weights(x.shape[2], hidden, dtype)
    mode = torch.enable_grad if training else torch.inference_mode
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with mode():
            split = _split(lambda: ops.lstm(x, None, weights, lengths=lengths, backend="native"))
        torch.set_num_threads(1)
        with mode():
            one_thread = ops.lstm(x, None, weights, lengths=lengths, backend="native")
    finally:
        torch.set_num_threads(threads)
    for a, b in zip((split[0], *split[1]), (one_thread[0], *one_thread[1]), strict=True):
        assert torch.equal(a, b)
