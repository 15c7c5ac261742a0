"""Two-thread LSTM forward at small batches, hidden units split across the threads per step
(csrc/rnn/rnn_cpu_split.h, issue 17): torch.nn.LSTM (two threads), stseq.nn.LSTM with two
threads (the split where lstm_split_plan takes it) and stseq.nn.LSTM with one thread (the
one-thread path), same weights, L = 50, I = H, called in turn (interleaved, each round starting with the next one) for `rounds` rounds,
medians; inference (torch.inference_mode) and training forward (grad mode, no backward).

    python benchmarks/results/rnn/split.py [--rounds 40] [--hidden 64 128 256] [--batch 1 8 16]
    python -c "while True: pass" &   # beside it for the loaded case (then kill it)

Prints per case the medians (ms) and the ratios torch.nn / stseq (> 1: stseq faster), the
thread count, the load average, and how many of stseq's two-thread calls took the split.
"""
import argparse
import os
import time

import torch

import stseq
from stseq import _C


def timed(fn, threads):
    torch.set_num_threads(threads)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values):
    return sorted(values)[len(values) // 2] * 1e3


def case(hidden, batch, training, rounds):
    torch.manual_seed(0)
    peer = torch.nn.LSTM(hidden, hidden)
    ours = stseq.nn.LSTM(hidden, hidden)
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(50, batch, hidden)
    context = torch.enable_grad if training else torch.inference_mode
    runs = {"torch.nn": (lambda: peer(x), 2), "stseq": (lambda: ours(x), 2),
            "stseq 1 thread": (lambda: ours(x), 1)}
    times = {name: [] for name in runs}
    with context():
        for name, (fn, threads) in runs.items():  # warm-up
            for _ in range(3):
                timed(fn, threads)
        split_before = _C._lstm_split_forward_calls()
        names = list(runs)
        for r in range(rounds):  # each round starts with the next implementation
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn, threads = runs[name]
                times[name].append(timed(fn, threads))
        split = _C._lstm_split_forward_calls() - split_before
    torch.set_num_threads(2)
    ms = {name: median(values) for name, values in times.items()}
    mode = "train fwd" if training else "inference"
    print(f"H={hidden:3d} B={batch:2d} {mode}: torch.nn {ms['torch.nn']:.3f} ms, stseq 2 threads "
          f"{ms['stseq']:.3f} ms ({ms['torch.nn'] / ms['stseq']:.2f}x, split {split}/{rounds}), "
          f"stseq 1 thread {ms['stseq 1 thread']:.3f} ms "
          f"({ms['torch.nn'] / ms['stseq 1 thread']:.2f}x)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--modes", nargs="+", default=["inference", "training"],
                        choices=["inference", "training"])
    args = parser.parse_args()
    print(f"threads 2 (torch.nn, stseq) and 1 (stseq 1 thread); load average "
          f"{open('/proc/loadavg').read().split()[:3]}; torch {torch.__version__}; "
          f"{os.cpu_count()} CPUs", flush=True)
    for hidden in args.hidden:
        for batch in args.batch:
            for mode in args.modes:
                case(hidden, batch, mode == "training", args.rounds)
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
