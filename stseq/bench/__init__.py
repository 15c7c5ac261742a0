"""The benchmark runner behind ``stseq bench``: every op against its peer in the same run.

Each case records stseq's median time, the peer's (the two, and every other implementation of
the same shape, timed interleaved: one call of each per round), their ratio, the max relative
parity error of that case (flagged against the dtype's tolerance) and both peak memories;
results print as a table and, with ``--out``, go to ``<out>/<device>-<date>.json`` with the
command, git commit, device name and versions (rewritten after every shape, so a run stopped
midway keeps what it measured), next to a PNG chart of the speedups (when matplotlib is
installed).
CPU runs use every core this process may run on (``os.sched_getaffinity``); the JSON records
the thread count and the machine's load average at the start and end of the run (and the
1-minute load after each shape) beside the figures.
"""

import datetime
import itertools
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

import torch

# report is imported where used: `python -m stseq.bench.report` must find it not yet imported.
from stseq.bench import (data, measure, models, rnn, scoring, time_decay_attention,
                         time_gap, time_rnn)

# op family -> module with QUICK/FULL grids and cases(grid, device, dtype), which yields
# (name, shape, stseq_fn, peer_fn) against the module's PEER, or (..., peer_fn, peer_name) for
# several peers; an optional DTYPES maps a device type to the dtypes to run (default float32),
# an optional TOLERANCES a dtype to the parity tolerance (default measure.TOLERANCES), an
# optional WARMUP the warm-up calls per function (default 1 quick, 3 full).
# A suite with run(quick=, repeats=, device=) measures itself (data: loads in child processes).
SUITES = {"time_gap": time_gap, "rnn": rnn, "time_rnn": time_rnn, "time_rnn_floor": time_rnn.FLOOR,
          "time_decay_attention": time_decay_attention, "models": models, "scoring": scoring,
          "data": data}
# Suites run only when named in --ops (minutes of file generation and loading).
ON_REQUEST = ("data",)
COLUMNS = ("op", "shape", "dtype", "stseq ms", "peer", "peer ms", "speedup", "max err",
           "parity", "stseq MiB", "peer MiB")


def run_group(cases, *, device, dtype, repeats, warmup=3, tolerances=None):
    """Measure cases that share one shape, their stseq and peer functions timed interleaved
    (:func:`measure.interleaved_medians_ms`); ``cases`` holds (name, shape, stseq_fn, peer_fn,
    peer) tuples. Returns one result row (a dict) per case, parity against ``tolerances`` by
    dtype (default ``measure.TOLERANCES``).

    Example::

        rows = run_group([("op forward", "B=8", ours, torch_fn, "torch")],
                         device=torch.device("cpu"), dtype=torch.float32, repeats=10)
    """
    errors = [measure.max_relative_error(stseq_fn(), peer_fn())
              for _, _, stseq_fn, peer_fn, _ in cases]
    fns = [fn for _, _, stseq_fn, peer_fn, _ in cases for fn in (stseq_fn, peer_fn)]
    medians = measure.interleaved_medians_ms(fns, device, repeats=repeats, warmup=warmup)
    load_1min = os.getloadavg()[0]
    rows = []
    for index, ((name, shape, stseq_fn, peer_fn, peer), error) in enumerate(zip(cases, errors)):
        stseq_ms, peer_ms = medians[2 * index], medians[2 * index + 1]
        rows.append({
            "op": name, "shape": shape, "dtype": str(dtype).removeprefix("torch."),
            "stseq_ms": stseq_ms, "peer": peer, "peer_ms": peer_ms,
            "speedup": peer_ms / stseq_ms, "max_error": error,
            "parity_ok": measure.parity_ok(error, dtype, tolerances),
            "stseq_peak_mib": measure.peak_memory_mb(stseq_fn, device),
            "peer_peak_mib": measure.peak_memory_mb(peer_fn, device), "load_1min": load_1min,
        })
    return rows


def run_case(name, shape, stseq_fn, peer_fn, *, peer, device, dtype, repeats, warmup=3,
             tolerances=None):
    """Measure one case (stseq and peer timed interleaved); returns its result row.

    Example::

        row = run_case("op forward", "B=8", ours, torch_fn, peer="torch",
                       device=torch.device("cpu"), dtype=torch.float32, repeats=10)
    """
    return run_group([(name, shape, stseq_fn, peer_fn, peer)], device=device, dtype=dtype,
                     repeats=repeats, warmup=warmup, tolerances=tolerances)[0]


def suite_groups(suite, grid, device, dtype):
    """The suite's cases as lists of (name, shape, stseq_fn, peer_fn, peer) sharing one shape,
    in the order the suite yields them (a case without a peer name gets ``suite.PEER``).

    Example::

        for group in suite_groups(time_gap, time_gap.QUICK, torch.device("cpu"), torch.float32):
            rows = run_group(group, device=torch.device("cpu"), dtype=torch.float32, repeats=3)
    """
    cases = ((name, shape, stseq_fn, peer_fn, peer[0] if peer else suite.PEER)
             for name, shape, stseq_fn, peer_fn, *peer in suite.cases(grid, device, dtype))
    for _, group in itertools.groupby(cases, key=lambda case: case[1]):
        yield list(group)


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


def planned_cases(suite, grid, device, dtype):
    """How many cases ``suite`` yields for ``device`` and ``dtype`` before one cannot be built
    on this machine -> (count, that error or None). On a CPU-only machine, with ``device``
    cuda, it tells whether a grid has CUDA cases at all (count 0 and no error: none).

    Example::

        planned_cases(rnn, rnn.QUICK, torch.device("cuda"), torch.bfloat16)  # (0, None)
    """
    count = 0
    try:
        for _ in suite.cases(grid, device, dtype):
            count += 1
    except (RuntimeError, AssertionError) as error:  # torch: "not compiled with CUDA enabled"
        return count, f"{type(error).__name__}: {error}"
    return count, None


def run_family(suite, *, device, quick, repeats, measured=None):
    """Every case of one suite (its QUICK or FULL grid, each of its dtypes for ``device``),
    printed a shape at a time -> result rows; ``measured(rows)``, when given, is called with
    each shape's rows as soon as they are measured (``main`` writes them out).

    Example::

        rows = run_family(time_gap, device=torch.device("cpu"), quick=True, repeats=3)
    """
    if hasattr(suite, "run_suite"):  # a suite that measures itself (data)
        rows = suite.run_suite(quick=quick, repeats=repeats, device=device)
        if rows:
            print("\n".join(format_table(rows).splitlines()[1:]), flush=True)
            if measured is not None:
                measured(rows)
        return rows
    rows = []
    grid = suite.QUICK if quick else suite.FULL
    for dtype in getattr(suite, "DTYPES", {}).get(device.type, (torch.float32,)):
        for group in suite_groups(suite, grid, device, dtype):
            rows += run_group(group, device=device, dtype=dtype, repeats=repeats,
                              warmup=getattr(suite, "WARMUP", 1 if quick else 3),
                              tolerances=getattr(suite, "TOLERANCES", None))
            print("\n".join(format_table(rows[-len(group):]).splitlines()[1:]), flush=True)
            if measured is not None:
                measured(rows[-len(group):])
    return rows


def _write_record(path, record):
    """Write the run's JSON atomically, with the load average now as its end."""
    record["load_average"]["end"] = os.getloadavg()
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)


def main(args):
    """``stseq bench``: run the grids, print the table; with ``args.out`` write the JSON after
    every shape (a run stopped midway keeps what it measured) and the chart at the end."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("stseq bench: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    names = args.ops or [name for name in SUITES if name not in ON_REQUEST]
    unknown = sorted(set(names) - set(SUITES))
    if unknown:
        print(f"stseq bench: unknown ops {unknown}; choose from {sorted(SUITES)}", file=sys.stderr)
        return 2
    scale = getattr(args, "scale", None)
    if scale is not None and (names != ["scoring"] or device.type != "cpu"):
        print("stseq bench: --scale is the scoring suite's catalogue-scale run on the CPU: use "
              "--ops scoring --scale [EVENTS]", file=sys.stderr)
        return 2
    repeats = args.repeats or (3 if args.quick else 10)
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    record = {"command": "stseq " + " ".join(sys.argv[1:]), **environment(device),
              "repeats": repeats, "load_average": {"start": os.getloadavg()}, "cases": []}
    path = None
    if args.out:
        suffix = "-scale" if scale is not None else ""  # beside the grid's run of the day
        path = pathlib.Path(args.out) / f"{device.type}-{record['date'][:10]}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
    def measured(rows):  # written after every shape: a run stopped midway keeps its rows
        record["cases"] += rows
        if path:
            _write_record(path, record)

    if scale is not None:
        measured(scoring.scale_run(scale, workdir=os.path.join(tempfile.gettempdir(),
                                                               "stseq-scale")))
    for family in names if scale is None else ():
        run_family(SUITES[family], device=device, quick=args.quick, repeats=repeats,
                   measured=measured)
    print()
    print(format_table(record["cases"]))
    if path and scale is None:
        _write_chart(path, record)
    return 0 if all(row["parity_ok"] for row in record["cases"]) else 1


def _write_chart(path, record):
    from stseq.bench import report

    print(f"\nwrote {path}")
    chart = report.speedup_chart(record["cases"], path.with_suffix(".png"),
                                 f"stseq vs peers on {record['device']} ({record['command']})")
    print(f"wrote {chart}" if chart else "no chart: pip install matplotlib (stseq[plot])")
