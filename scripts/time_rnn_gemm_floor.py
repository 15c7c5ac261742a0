"""The matrix-product floor of the fused time-aware recurrent ops on this CPU.

Every cell's forward + backward at a shape is dominated by GEMMs whose size does not depend on
the implementation: the input projection over all steps, the recurrent product at each step,
and in the backward the recurrent product per step plus dx, dW_ih and dW_hh. This times exactly
those GEMMs with ATen (MKL) at the benchmark's target shape, and the fused op and the eager
reference in the same run (medians over repeats), so the report says how much of the fused op's
time is GEMM work, and the ratio to the reference that no implementation doing that GEMM work in
float32 can beat here.

    python scripts/time_rnn_gemm_floor.py [--repeats 15] [--threads 2]
"""

import argparse
import statistics
import time

import torch

from stseq.bench import time_rnn
from stseq.ops.time_rnn import TIME_LSTM_BLOCKS

# cell -> (gate blocks of the input projection, blocks of the recurrent product, extra [H, H]
# products per step (T-LSTM's short-term memory))
BLOCKS = {f"time_lstm{v}": TIME_LSTM_BLOCKS[v][:2] + (0,) for v in (1, 2, 3)}
BLOCKS.update(tlstm=(4, 4, 1), time_decay_gru=(3, 3, 0))


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def gemms(cell, batch, seq_len, input_size, hidden):
    """(forward, backward) callables issuing the cell's GEMMs, and their FLOPs."""
    gates, recurrent, extra = BLOCKS[cell]
    rows = seq_len * batch
    x, w_ih = torch.randn(rows, input_size), torch.randn(gates * hidden, input_size)
    w_hh = torch.randn(recurrent * hidden, hidden)
    w_d = torch.randn(hidden, hidden)
    h, projected = torch.randn(batch, hidden), torch.empty(seq_len, batch, gates * hidden)
    grad = torch.randn(seq_len, batch, gates * hidden)
    grad_h = torch.empty(batch, hidden)
    saved_h = torch.randn(rows, hidden)

    def forward():
        torch.mm(x, w_ih.t(), out=projected.view(rows, -1))
        for step in range(seq_len):
            torch.mm(h, w_hh.t())
            if extra:
                torch.mm(h, w_d.t())

    def backward():
        for step in range(seq_len):
            torch.mm(grad[step, :, :recurrent * hidden], w_hh, out=grad_h)
            if extra:
                torch.mm(h, w_d, out=grad_h)
        flat = grad.view(rows, -1)
        torch.mm(flat, w_ih)                                    # dx
        torch.mm(flat.t(), x)                                   # dW_ih
        torch.mm(flat[:, :recurrent * hidden].t(), saved_h)     # dW_hh
        if extra:
            torch.mm(saved_h.t(), saved_h)                      # dW_d

    step_flops = 2 * batch * hidden * (recurrent + extra) * hidden
    flops = (2 * 2 * rows * input_size * gates * hidden  # projection, dx
             + 2 * rows * input_size * gates * hidden  # dW_ih
             + 2 * seq_len * step_flops  # recurrent products, forward and backward
             + 2 * rows * hidden * (recurrent + extra) * hidden)  # dW_hh (and dW_d)
    return forward, backward, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = time_rnn.TARGET
    print(f"shape {shape}, {args.threads} threads, medians of {args.repeats}")
    print(f"{'cell':16s}{'GFLOP':>7s}{'GEMMs ms':>10s}{'GFLOP/s':>9s}{'fused ms':>10s}"
          f"{'reference ms':>14s}{'fused x':>9s}{'floor x':>9s}")
    for cell in time_rnn.CELLS:
        forward, backward, flops = gemms(cell, **shape)
        floor = median_ms(lambda: (forward(), backward()), args.repeats)
        inputs = time_rnn.make_inputs(cell=cell, **shape)
        fused = median_ms(lambda: time_rnn.forward_backward(inputs, "native"), args.repeats)
        reference = median_ms(lambda: time_rnn.forward_backward(inputs, "reference"),
                              args.repeats)
        print(f"{cell:16s}{flops / 1e9:7.2f}{floor:10.1f}{flops / floor / 1e6:9.0f}"
              f"{fused:10.1f}{reference:14.1f}{reference / fused:9.2f}{reference / floor:9.2f}")


if __name__ == "__main__":
    main()
