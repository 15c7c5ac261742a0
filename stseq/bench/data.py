"""``stseq bench --ops data``: the data pipeline at 10^6-10^7 rows against its peers.

- Loaders: every reader (table CSV and Parquet, Taobao, RecBole, MovieLens, SNAP, Foursquare)
  on files converted from one generated Taobao-shaped log (``stseq.data.generate``). Each load
  runs in a child process of its own, so that its wall time and peak memory (the child's
  ``VmHWM``: its own high-water mark, where ``ru_maxrss`` would carry the parent's over the
  fork; it includes the ~0.3 GB of importing torch and stseq, given as ``import_peak_mib``) are
  its own. At 10^6 rows the peer is stseq 0.1's Python parser (``data_python_parser``), timed
  interleaved with it (one load of each per round) and compared on its answer (the sorted
  events as (user id, time, item id) text: max_error 0 means the same events); at 10^7 rows the
  peer is the issue's target (15 s for CSV; the CSV load of the same rows for Parquet).
- Cache: loading the binary cache of the largest set (``stseq.data.cache``) in a child,
  against parsing its source (the target: under 5 s).
- Batches: training batches per second of the pipeline (``Prefetched(training_batches(...))``)
  on the memory-mapped cache and on the synthetic data, against the steps per second of the
  default model (``stseq.models.DEFAULT_MODEL``, batch 64, length 50) on those synthetic
  batches (the target: 10x).

Times are medians of the rounds; the load average and thread count are in each row.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEER = "stseq 0.1 Python parser"
QUICK = {"small": 10**6, "large": 10**7, "users_per_event": 0.05, "items_per_event": 0.2,
         "large_rounds": 1, "batches": 300, "model_steps": 10}
FULL = dict(QUICK, large_rounds=2, cache_rows=3 * 10**7, batches=1000, model_steps=30)
CSV_TARGET_SECONDS = 15.0  # 10^7 rows (user, item, timestamp) to Interactions
CACHE_TARGET_SECONDS = 5.0
PIPELINE_TARGET_RATIO = 10.0
TABLE_COLUMNS = {"user": "user", "item": "item", "timestamp": "timestamp"}
# loader name -> (file name, stseq call as (module path, function, keyword arguments))
FORMATS = {
    "table csv": ("events.csv", "load_table", {"columns": TABLE_COLUMNS}),
    "table parquet": ("events.parquet", "load_table", {"columns": TABLE_COLUMNS}),
    "taobao": ("UserBehavior.csv", "load_taobao", {}),
    "recbole": ("events.inter", "load_recbole", {}),
    "movielens": ("ratings.dat", "load_movielens", {}),
    "snap": ("loc-checkins.txt", "load_snap_checkins", {}),
    "foursquare": ("dataset_TSMC2014.txt", "load_foursquare", {}),
}
_CHILD = r"""
import hashlib, json, sys, time
def high_water_mib():  # this process's own peak RSS (ru_maxrss would include the parent's)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
spec = json.loads(sys.argv[1])
import numpy as np
import stseq.data, stseq.data.cache, stseq.bench.data_python_parser as old
imported = high_water_mib()
module = {"new": stseq.data, "old": old, "cache": stseq.data.cache}[spec["module"]]
start = time.perf_counter()
data = getattr(module, spec["function"])(*spec["args"], **spec["kwargs"])
seconds = time.perf_counter() - start
peak = high_water_mib()  # before the digest's strings
digest = None
if spec.get("digest"):
    users = np.repeat(data.user_ids.astype(str), data.lengths)
    items = data.item_ids.astype(str)[data.items]
    order = np.lexsort((items, data.timestamps, users))
    text = "\n".join(f"{u}\t{t}\t{i}" for u, t, i in zip(users[order], data.timestamps[order],
                                                          items[order]))
    digest = hashlib.sha256(text.encode()).hexdigest()
print(json.dumps({"seconds": seconds, "peak_mib": peak, "import_mib": imported,
                  "events": int(data.num_events), "digest": digest}))
"""


def cases(grid, device, dtype):
    """The data suite has no per-call cases to interleave with the op suites: ``run`` measures
    it (loads in child processes); nothing runs on CUDA."""
    return iter(())


def _child(module, function, *args, digest=False, **kwargs):
    """One load in a fresh interpreter -> {"seconds", "peak_mib", "import_mib", "events",
    "digest"}."""
    spec = {"module": module, "function": function, "args": [str(a) for a in args],
            "kwargs": kwargs, "digest": digest}
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True,
                            text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{module}.{function}({args}) failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_formats(folder, rows, seed=0, names=None):
    """A generated Taobao-shaped log of ``rows`` events written in each format of ``names``
    (converted batch by batch with Arrow, so memory stays bounded). Returns {name: path}."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from stseq.data.generate import generate_log

    names = tuple(FORMATS) if names is None else names
    LINES = pcsv.WriteOptions(include_header=False, quoting_style="none", delimiter="\x01")
    folder = Path(folder)
    source = generate_log(folder / f"log-{rows}-{seed}.parquet", events=rows, seed=seed,
                          users=max(1, int(rows * QUICK["users_per_event"])),
                          items=max(1, int(rows * QUICK["items_per_event"])), coordinates=True)
    paths = {name: folder / f"{rows}-{FORMATS[name][0]}" for name in names}
    writers = {}
    try:
        for batch in pq.ParquetFile(source).iter_batches(batch_size=1 << 20):
            text = {name: pc.cast(batch.column(name), pa.string()) for name in batch.schema.names}
            stamp = batch.column("timestamp").cast(pa.timestamp("s"))
            lines = {
                "table csv": [text["user"], text["item"], text["timestamp"], ","],
                "taobao": [text["user"], text["item"], text["category"], text["behavior"],
                           text["timestamp"], ","],
                "recbole": [text["user"], text["item"], text["timestamp"], "\t"],
                "movielens": [text["user"], text["item"], pa.array(["4"] * len(batch)),
                              text["timestamp"], "::"],
                "snap": [text["user"], pc.strftime(stamp, format="%Y-%m-%dT%H:%M:%SZ"),
                         text["latitude"], text["longitude"], text["item"], "\t"],
                "foursquare": [text["user"], text["item"], text["category"], text["behavior"],
                               text["latitude"], text["longitude"],
                               pa.array(["480"] * len(batch)),
                               pc.strftime(stamp, format="%a %b %d %H:%M:%S +0000 %Y"), "\t"],
            }
            for name in names:
                if name == "table parquet":
                    table = pa.table({key: batch.column(key) for key in TABLE_COLUMNS})
                    if name not in writers:
                        writers[name] = pq.ParquetWriter(paths[name], table.schema)
                    writers[name].write_table(table)
                    continue
                if name not in writers:
                    writers[name] = pa.OSFile(str(paths[name]), "wb")
                    header = {"table csv": "user,item,timestamp\n",
                              "recbole": "user_id:token\titem_id:token\ttimestamp:float\n"}
                    writers[name].write(header.get(name, "").encode())
                *fields, separator = lines[name]
                joined = pc.binary_join_element_wise(*fields, separator)
                pcsv.write_csv(pa.table({"line": joined}), writers[name], write_options=LINES)
    finally:
        for writer in writers.values():
            writer.close()
    source.unlink()
    return paths


def _row(op, shape, ours, peer, peer_seconds, *, load, error=0.0, extra=None):
    return {"op": op, "shape": shape, "dtype": "-", "stseq_ms": 1000 * ours["seconds"],
            "peer": peer, "peer_ms": 1000 * peer_seconds, "speedup": peer_seconds /
            ours["seconds"], "max_error": error, "parity_ok": error == 0.0,
            "stseq_peak_mib": ours["peak_mib"], "peer_peak_mib": (extra or {}).pop(
                "peer_peak_mib", float("nan")), "load_1min": load, **(extra or {})}


def _median_result(results):
    return {"seconds": statistics.median(r["seconds"] for r in results),
            "peak_mib": max(r["peak_mib"] for r in results),
            "import_mib": results[0]["import_mib"], "events": results[0]["events"],
            "digest": results[0]["digest"]}


def measure_loaders(folder, rows, *, rounds, with_peer):
    """Rows of every loader at ``rows`` events: ``rounds`` interleaved rounds, the old parser
    as peer when ``with_peer``, else the target."""
    paths = write_formats(folder, rows)
    results, peers = {name: [] for name in FORMATS}, {name: [] for name in FORMATS}
    for _ in range(rounds):
        for name, (_, function, kwargs) in FORMATS.items():
            results[name].append(_child("new", function, paths[name], digest=with_peer,
                                        **kwargs))
            if with_peer:
                peers[name].append(_child("old", function, paths[name], digest=True, **kwargs))
    out = []
    for name in FORMATS:
        ours = _median_result(results[name])
        extra = {"rows": rows, "rows_per_s": rows / ours["seconds"], "events": ours["events"],
                 "import_peak_mib": ours["import_mib"], "rounds": rounds,
                 "threads": len(os.sched_getaffinity(0))}
        if with_peer:
            theirs = _median_result(peers[name])
            extra.update(peer_peak_mib=theirs["peak_mib"],
                         peer_rows_per_s=rows / theirs["seconds"])
            error = 0.0 if ours["digest"] == theirs["digest"] else 1.0
            out.append(_row(f"load {name}", f"rows={rows:.0e}", ours, PEER, theirs["seconds"],
                            load=os.getloadavg()[0], error=error, extra=extra))
        elif name == "table parquet":
            csv_seconds = _median_result(results["table csv"])["seconds"]
            out.append(_row(f"load {name}", f"rows={rows:.0e}", ours, "table csv (same rows)",
                            csv_seconds, load=os.getloadavg()[0], extra=extra))
        else:
            out.append(_row(f"load {name}", f"rows={rows:.0e}", ours,
                            f"target {CSV_TARGET_SECONDS:.0f} s", CSV_TARGET_SECONDS,
                            load=os.getloadavg()[0], extra=extra))
        print(f"  load {name} rows={rows:.0e}: {ours['seconds']:.2f} s, "
              f"{rows / ours['seconds']:.3g} rows/s, peak {ours['peak_mib']:.0f} MiB", flush=True)
    return out, paths


def measure_cache(folder, source, rows, *, rounds):
    """Build the cache of ``source`` (a table file) once, then load it ``rounds`` times in a
    child against parsing the source."""
    from stseq.data.cache import load_cached

    cache = Path(folder) / f"cache-{rows}"
    start = time.perf_counter()
    load_cached("table", source, cache, columns=TABLE_COLUMNS)
    build = time.perf_counter() - start
    loads = [_child("cache", "read_cache", cache) for _ in range(rounds)]
    parse = _child("new", "load_table", source, columns=TABLE_COLUMNS)
    ours = _median_result(loads)
    return _row("cache load", f"rows={rows:.1e}", ours, "parse the source", parse["seconds"],
                load=os.getloadavg()[0], extra={
                    "rows": rows, "target_seconds": CACHE_TARGET_SECONDS,
                    "build_seconds": build, "source": Path(source).name,
                    "peer_peak_mib": parse["peak_mib"], "import_peak_mib": ours["import_mib"],
                    "cache_mib": sum(f.stat().st_size for f in cache.iterdir()) / 2**20,
                    "threads": len(os.sched_getaffinity(0))})


def measure_pipeline(cache_folder, *, batches, model_steps, synthetic_options=None, rounds=3):
    """Batches per second of the pipeline (memory-mapped cache and synthetic data) against the
    default model's training steps per second on the synthetic batches, interleaved."""
    import torch

    from stseq.data import Prefetched, leave_one_out, synthetic, training_batches
    from stseq.data.cache import read_cache
    from stseq.models import DEFAULT_MODEL, build_model
    from stseq.train.trainer import TrainConfig, Trainer

    split = leave_one_out(synthetic(seed=0, **(synthetic_options or {})).interactions)
    config = TrainConfig(epochs=1, batch_size=64, max_length=50, progress=False, device="cpu")
    trainer = Trainer(build_model(DEFAULT_MODEL, split.train, max_length=50), split, config)
    mapped = read_cache(cache_folder) if cache_folder is not None else None
    pipelines = {"synthetic": training_batches(split.train, batch_size=64, max_length=50)}
    if mapped is not None:
        pipelines["cache"] = training_batches(mapped, batch_size=64, max_length=50)

    def pipeline_rate(name):
        count, start = 0, time.perf_counter()
        while count < batches:
            for _ in Prefetched(pipelines[name]):
                count += 1
                if count == batches:
                    break
        return count / (time.perf_counter() - start)

    def model_rate():
        iterator = iter(pipelines["synthetic"])
        steps = [next(iterator) for _ in range(model_steps)]
        start = time.perf_counter()
        for batch in steps:
            trainer.train_step(batch)
        return model_steps / (time.perf_counter() - start)

    rates = {name: [] for name in [*pipelines, "model"]}
    for _ in range(rounds):  # interleaved
        for name in pipelines:
            rates[name].append(pipeline_rate(name))
        rates["model"].append(model_rate())
    model = statistics.median(rates["model"])
    rows = []
    for name in pipelines:
        rate = statistics.median(rates[name])
        rows.append({"op": f"training batches ({name})", "shape": "B=64,L=50", "dtype": "-",
                     "stseq_ms": 1000 / rate, "peer": f"{DEFAULT_MODEL} train step",
                     "peer_ms": 1000 / model, "speedup": rate / model, "max_error": 0.0,
                     "parity_ok": True, "stseq_peak_mib": float("nan"),
                     "peer_peak_mib": float("nan"), "load_1min": os.getloadavg()[0],
                     "batches_per_s": rate, "model_steps_per_s": model,
                     "target_ratio": PIPELINE_TARGET_RATIO,
                     "threads": torch.get_num_threads()})
        print(f"  batches ({name}): {rate:.0f}/s vs {DEFAULT_MODEL} {model:.1f} steps/s",
              flush=True)
    return rows


def run_suite(*, quick, repeats, device, workdir=None):
    """Every measurement of the suite -> result rows (see the module docstring)."""
    if device.type != "cpu":
        print("  data: runs on the CPU only (skipped on", device.type + ")")
        return []
    grid = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        base = subprocess.run([sys.executable, "-c", "import stseq.data; print(next(int(line."
                               "split()[1]) for line in open('/proc/self/status') if line."
                               "startswith('VmHWM')) / 1024)"],
                              capture_output=True, text=True, check=True)
        print(f"  import stseq.data alone: peak {float(base.stdout):.0f} MiB", flush=True)
        rows, _ = measure_loaders(folder, grid["small"], rounds=repeats, with_peer=True)
        large, paths = measure_loaders(folder, grid["large"], rounds=grid["large_rounds"],
                                       with_peer=False)
        rows += large
        source, cache_rows = paths.get("table parquet", paths["table csv"]), grid["large"]
        if "cache_rows" in grid:
            cache_rows = grid["cache_rows"]
            source = write_formats(folder, cache_rows, names=("table parquet",))[
                "table parquet"]
        rows.append(measure_cache(folder, source, cache_rows, rounds=max(repeats, 1)))
        print(f"  cache load rows={cache_rows:.1e}: {rows[-1]['stseq_ms'] / 1000:.2f} s",
              flush=True)
        rows += measure_pipeline(Path(folder) / f"cache-{cache_rows}", batches=grid["batches"],
                                 model_steps=grid["model_steps"],
                                 synthetic_options=grid.get("synthetic"),
                                 rounds=grid.get("pipeline_rounds", 3))
    return rows

