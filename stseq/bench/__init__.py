"""The benchmark runner behind ``stseq bench``: every op against its peer in the same run.

Each case records stseq's median time, the peer's, their ratio, the max relative parity error
of that case (flagged against the dtype's tolerance) and both peak memories; results print as a
table and, with ``--out``, go to ``<out>/<device>-<date>.json`` with the command, git commit,
device name and versions, next to a PNG chart of the speedups (when matplotlib is installed).
CPU runs use every core this process may run on (``os.sched_getaffinity``).
"""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

import torch

from stseq.bench import (measure, models, report, rnn, time_decay_attention, time_gap,
                         time_rnn)

# op family -> module with QUICK/FULL grids and cases(grid, device, dtype), which yields
# (name, shape, stseq_fn, peer_fn) against the module's PEER, or (..., peer_fn, peer_name) for
# several peers; an optional DTYPES maps a device type to the dtypes to run (default float32),
# an optional TOLERANCES a dtype to the parity tolerance (default measure.TOLERANCES).
SUITES = {"time_gap": time_gap, "rnn": rnn, "time_rnn": time_rnn, "time_rnn_floor": time_rnn.FLOOR,
          "time_decay_attention": time_decay_attention, "models": models}
COLUMNS = ("op", "shape", "dtype", "stseq ms", "peer", "peer ms", "speedup", "max err",
           "parity", "stseq MiB", "peer MiB")


def run_case(name, shape, stseq_fn, peer_fn, *, peer, device, dtype, repeats, warmup=3,
             tolerances=None):
    """Measure one case; returns its result row as a dict (parity against ``tolerances``, by
    dtype, default ``measure.TOLERANCES``)."""
    error = measure.max_relative_error(stseq_fn(), peer_fn())
    stseq_ms = measure.median_ms(stseq_fn, device, repeats=repeats, warmup=warmup)
    peer_ms = measure.median_ms(peer_fn, device, repeats=repeats, warmup=warmup)
    return {
        "op": name, "shape": shape, "dtype": str(dtype).removeprefix("torch."),
        "stseq_ms": stseq_ms, "peer": peer, "peer_ms": peer_ms, "speedup": peer_ms / stseq_ms,
        "max_error": error, "parity_ok": measure.parity_ok(error, dtype, tolerances),
        "stseq_peak_mib": measure.peak_memory_mb(stseq_fn, device),
        "peer_peak_mib": measure.peak_memory_mb(peer_fn, device),
    }


def format_table(rows):
    """Rows as an aligned text table."""
    cells = [COLUMNS] + [(
        r["op"], r["shape"], r["dtype"], f"{r['stseq_ms']:.3f}", r["peer"], f"{r['peer_ms']:.3f}",
        f"{r['speedup']:.2f}x", f"{r['max_error']:.1e}", "ok" if r["parity_ok"] else "MISMATCH",
        f"{r['stseq_peak_mib']:.1f}", f"{r['peer_peak_mib']:.1f}") for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths))
                     for row in cells)


def _git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=pathlib.Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment(device):
    """Device name, versions, threads and git commit of this run."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    from stseq.info import info

    report = info()
    return {"device": name or platform.machine(), "threads": torch.get_num_threads(),
            "torch": report["torch"], "triton": report["triton"], "stseq": report["stseq"],
            "python": report["python"], "git_commit": _git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def main(args):
    """``stseq bench``: run the grids, print the table, write JSON when ``args.out`` is set."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("stseq bench: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    names = args.ops or list(SUITES)
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        print(f"stseq bench: unknown ops {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    repeats = args.repeats or (3 if args.quick else 10)
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows = []
    for family in names:
        suite = SUITES[family]
        grid = suite.QUICK if args.quick else suite.FULL
        for dtype in getattr(suite, "DTYPES", {}).get(device.type, (torch.float32,)):
            for name, shape, stseq_fn, peer_fn, *peer in suite.cases(grid, device, dtype):
                rows.append(run_case(name, shape, stseq_fn, peer_fn,
                                     peer=peer[0] if peer else suite.PEER,
                                     device=device, dtype=dtype, repeats=repeats,
                                     warmup=1 if args.quick else 3,
                                     tolerances=getattr(suite, "TOLERANCES", None)))
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    if args.out:
        env = environment(device)
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{device.type}-{env['date'][:10]}.json"
        record = {"command": "stseq " + " ".join(sys.argv[1:]), **env, "repeats": repeats,
                  "cases": rows}
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {path}")
        chart = report.speedup_chart(rows, path.with_suffix(".png"),
                                     f"stseq vs peers on {env['device']} ({record['command']})")
        print(f"wrote {chart}" if chart else "no chart: pip install matplotlib (stseq[plot])")
    mismatches = [r for r in rows if not r["parity_ok"]]
    return 1 if mismatches else 0
