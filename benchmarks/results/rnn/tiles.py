"""Two-thread LSTM at small batches: stseq.nn.LSTM vs torch.nn.LSTM with the same weights, L = 50,
I = H, medians of 60 calls per implementation, inference and training forward; the measurement
behind kMinTileRows in csrc/rnn/rnn_cpu_loop.h (issue 17).

    python benchmarks/results/rnn/tiles.py LABEL
    taskset -c 0 python -c "while True: pass" &   # beside it, for the loaded case

The grains in tiles-2026-12-07.log were set through a temporary environment variable.
"""
import sys
import time

import torch

import stseq


def median_ms(fn, calls=60, warmup=5):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3


def main(label):
    torch.manual_seed(0)
    for hidden in (128, 256):
        for batch in (4, 8, 16):
            x = torch.randn(50, batch, hidden)
            ours, peer = stseq.nn.LSTM(hidden, hidden), torch.nn.LSTM(hidden, hidden)
            peer.load_state_dict(ours.state_dict())
            with torch.inference_mode():
                inference = median_ms(lambda: ours(x)), median_ms(lambda: peer(x))
            training = median_ms(lambda: ours(x)), median_ms(lambda: peer(x))
            print(f"{label} H={hidden} B={batch} inf {inference[1] / inference[0]:.2f}x "
                  f"({inference[0]:.2f} ms) train {training[1] / training[0]:.2f}x "
                  f"({training[0]:.2f} ms)", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "current")
