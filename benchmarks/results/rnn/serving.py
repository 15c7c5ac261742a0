"""The serving and loaded cases of stseq/bench/rnn.py (the committed FULL grid's _SERVING with
threads=1 and _LOADED), run through stseq.bench's own run_group and written as a stseq bench
record: the full `stseq bench --ops rnn` grid did not fit the session's time on this loaded
machine (torch.nn's two-thread calls took seconds)."""
import os, pathlib, sys
import torch
from stseq import bench
from stseq.bench import rnn
device = torch.device("cpu")
torch.set_num_threads(len(os.sched_getaffinity(0)))
grid = [s for s in rnn._SERVING if s.get("threads") == 1] + rnn._LOADED
record = {"command": "python /tmp/engine_perf/serving.py (stseq.bench.run_group over stseq.bench.rnn._SERVING threads=1 + _LOADED, repeats 5), under taskset -c 1", **bench.environment(device),
          "repeats": 5, "load_average": {"start": os.getloadavg()}, "cases": []}
path = pathlib.Path(sys.argv[1])
for group in bench.suite_groups(rnn, grid, device, torch.float32):
    rows = bench.run_group(group, device=device, dtype=torch.float32, repeats=5, warmup=2)
    record["cases"] += rows
    print("\n".join(bench.format_table(rows).splitlines()[1:]), flush=True)
    bench._write_record(path, record)
rnn.BUSY.stop()
