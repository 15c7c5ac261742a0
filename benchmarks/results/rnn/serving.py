"""The serving cases of stseq/bench/rnn.py (issue 17): _SERVING (inference), _TRAINING
(training forward, forward+backward) and _LOADED (inference with another process busy on one
core), run through stseq.bench's own run_group and written as a stseq bench record, without the
padded/packed B = 256 grid of `stseq bench --ops rnn` (which runs these too).

    python benchmarks/results/rnn/serving.py OUT.json               # every case
    python benchmarks/results/rnn/serving.py OUT.json --one-thread  # threads=1 cases + loaded
    python benchmarks/results/rnn/serving.py OUT.json --repeats=9   # more timed calls (default 5)

--one-thread is for a machine that other work keeps busy: there torch.nn's calls with every
thread take seconds (its threads wait for each other on a busy core), and the one-thread cases
with the loaded case say what the kernels do.
"""
import os
import pathlib
import sys

import torch

from stseq import bench
from stseq.bench import rnn

if len(sys.argv) < 2 or sys.argv[1].startswith("-") or any(
        a not in ("--one-thread",) and not a.startswith("--repeats=") for a in sys.argv[2:]):
    sys.exit(__doc__)  # --help, no OUT.json, or an unknown option: the usage, exit status 1

device = torch.device("cpu")
torch.set_num_threads(len(os.sched_getaffinity(0)))
one_thread = "--one-thread" in sys.argv[2:]
repeats = next((int(a.split("=", 1)[1]) for a in sys.argv[2:] if a.startswith("--repeats=")), 5)
grid = [s for s in rnn._SERVING + rnn._TRAINING if not one_thread or s.get("threads") == 1]
grid += rnn._LOADED
path = pathlib.Path(sys.argv[1])
record = {"command": "python benchmarks/results/rnn/serving.py " + " ".join(sys.argv[1:]),
          **bench.environment(device), "repeats": repeats,
          "load_average": {"start": os.getloadavg()}, "cases": []}
for group in bench.suite_groups(rnn, grid, device, torch.float32):
    rows = bench.run_group(group, device=device, dtype=torch.float32, repeats=repeats, warmup=2)
    record["cases"] += rows
    print("\n".join(bench.format_table(rows).splitlines()[1:]), flush=True)
    bench._write_record(path, record)
rnn.BUSY.stop()
