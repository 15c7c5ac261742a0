"""Timing, peak memory and parity measurements shared by every benchmark suite.

Implementations compared with each other are timed interleaved (one call of each per round),
never one after the other, since the shared machines' load changes during a run.

CPU: wall-clock medians after warm-up, with glibc's malloc keeping freed buffers of up to 32 MiB
for reuse (the steady state of its dynamic mmap threshold in a warmed-up process); peak memory
is the rise of the process's resident-set high-water mark (reset through /proc/self/clear_refs)
over one call made while buffers over 64 KiB are mapped and unmapped, not kept.
CUDA: CUDA-event medians after warm-up and torch.cuda.max_memory_allocated above the memory in
use before the call.
"""

import ctypes
import gc
import statistics
import time

import torch

# Tolerances on the max relative error (max |a - b| / max |b|) by dtype: above it a case is
# flagged as a parity MISMATCH.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2,
              torch.float16: 1e-2}

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TIMING_MALLOC = (32 * 2**20, 64 * 2**20)  # (mmap, trim) thresholds: reuse freed buffers
_MEMORY_MALLOC = (64 * 2**10, 128 * 2**10)  # map large buffers, so the RSS peak sees them


def _set_malloc(thresholds):
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: timings and the RSS peak are taken as malloc behaves
        return
    mmap_threshold, trim_threshold = thresholds
    libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    if thresholds == _MEMORY_MALLOC:
        libc.malloc_trim(0)  # give back the kept free buffers, or the call reuses them unseen


_set_malloc(_TIMING_MALLOC)


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_one_call_ms(fn, device):
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def interleaved_medians_ms(fns, device, *, repeats, warmup=3):
    """Median milliseconds of each of ``fns`` over ``repeats`` rounds after ``warmup`` calls of
    each. Every round calls each function once, in the listed order and the reverse order by
    turns, so a change of machine load during the run hits every function alike.

    Example::

        stseq_ms, peer_ms = interleaved_medians_ms([stseq_fn, peer_fn], torch.device("cpu"),
                                                   repeats=10)
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    _synchronize(device)
    times = [[] for _ in fns]
    for round_index in range(repeats):
        order = range(len(fns)) if round_index % 2 == 0 else reversed(range(len(fns)))
        for index in order:
            times[index].append(_time_one_call_ms(fns[index], device))
    return [statistics.median(each) for each in times]


def median_ms(fn, device, *, repeats, warmup=3):
    """Median milliseconds of ``fn()`` over ``repeats`` timed calls after ``warmup`` calls."""
    return interleaved_medians_ms([fn], device, repeats=repeats, warmup=warmup)[0]


def _rss_bytes(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} missing from /proc/self/status")


def peak_memory_mb(fn, device):
    """Peak memory (MiB) that one call of ``fn()`` adds above what was in use before it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    _set_malloc(_MEMORY_MALLOC)
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # reset VmHWM to the current resident set
        before = _rss_bytes("VmRSS:")
        fn()
        return max(0, _rss_bytes("VmHWM:") - before) / 2**20
    finally:
        _set_malloc(_TIMING_MALLOC)


def max_relative_error(actual, expected):
    """max |actual - expected| / max |expected| over tensors (or sequences of tensors)."""
    if isinstance(actual, torch.Tensor):
        actual, expected = [actual], [expected]
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        e = e.detach().double()
        scale = e.abs().max().item() if e.numel() else 0.0
        diff = (a.detach().double() - e).abs().max().item() if e.numel() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def parity_ok(error, dtype, tolerances=None):
    """Whether a max relative error is within the tolerance of ``dtype`` (in ``tolerances``,
    default ``TOLERANCES``: one op against its twin)."""
    return error <= (TOLERANCES if tolerances is None else tolerances)[dtype]
