"""Run every compute-sanitizer case (``scripts/sanitize/<op>.py``: one small forward + backward
of the op's CUDA or Triton kernels).

On a GPU, each case runs under ``compute-sanitizer --tool memcheck`` and ``--tool racecheck``,
all of them in parallel processes (the start of torch under the sanitizer dominates, and each
process uses one core). PyTorch's caching allocator is switched off there, so that memcheck sees
every tensor as its own allocation and catches an out-of-bounds access into a neighbour.
With ``--cpu`` (the dry run) each case runs once, in this process, on the CPU: the C++ kernels
and Triton's interpreter, no sanitizer.

    python scripts/sanitize_ops.py --log sanitizer.log --results sanitizer.tsv [--cpu]

LOG gets every run's output, one section per tool and op; RESULTS one line per run:
tool, op, status (passed, failed, skipped, timeout), exit code, errors the sanitizer reported,
seconds.
"""

import argparse
import concurrent.futures
import contextlib
import io
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
import time
import traceback

CASES_DIR = pathlib.Path(__file__).resolve().parent / "sanitize"
CASES = sorted(path.stem for path in CASES_DIR.glob("[!_]*.py"))
TOOLS = ("memcheck", "racecheck")
SKIPPED = 3  # a case's exit status when its op does not exist yet (scripts/sanitize/_case.py)
SANITIZER_FOUND_ERRORS = 99  # compute-sanitizer's exit status when it reported errors
SANITIZER_PLACES = ("/usr/local/cuda/bin/compute-sanitizer",
                    "/usr/local/cuda/compute-sanitizer/compute-sanitizer")


def find_sanitizer():
    """compute-sanitizer on PATH, next to nvcc, or in the usual CUDA folders; None if absent."""
    nvcc = shutil.which("nvcc")
    beside_nvcc = [str(pathlib.Path(nvcc).parent / "compute-sanitizer")] if nvcc else []
    found = shutil.which("compute-sanitizer")
    return found or next((p for p in [*beside_nvcc, *SANITIZER_PLACES] if os.access(p, os.X_OK)),
                         None)


def status_of(exit_code, errors):
    """passed / failed / skipped / timeout from a run's exit code and sanitizer error count."""
    if exit_code is None:
        return "timeout"
    if exit_code == SKIPPED and not errors:
        return "skipped"
    return "passed" if exit_code == 0 and not errors else "failed"


def reported_errors(output):
    """The error count of compute-sanitizer's "ERROR SUMMARY: N errors" line (0 if none)."""
    match = re.search(r"ERROR SUMMARY: (\d+) error", output)
    return int(match.group(1)) if match else 0


def _sanitized(tool, case, sanitizer, deadline):
    # API-call errors are left out: PyTorch's and Triton's driver probes (cuGetProcAddress
    # and the like) fail by design; a failed launch still raises in the case itself.
    command = [sanitizer, "--tool", tool, "--error-exitcode", str(SANITIZER_FOUND_ERRORS),
               "--report-api-errors", "no", sys.executable, str(CASES_DIR / f"{case}.py"),
               "--device", "cuda"]
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=max(1.0, deadline - time.monotonic()))
        output, exit_code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as expired:
        partial = expired.stdout or ""
        partial = partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        output, exit_code = partial + "\n[timed out]", None
    return tool, case, exit_code, reported_errors(output), time.perf_counter() - start, output


def _in_process(case):
    """Run a case's script here (``--device cpu``) -> (exit code, its output)."""
    sys.argv = [str(CASES_DIR / f"{case}.py"), "--device", "cpu"]
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            exit_code = 0
        except SystemExit as exit_:
            exit_code = exit_.code or 0
        except Exception:  # noqa: BLE001  (a broken case is a failed result, not a crash)
            traceback.print_exc()
            exit_code = 1
    return exit_code, output.getvalue()


def run_on_cpu(cases, report):
    """Every case once in this process on the CPU, each result passed to ``report``."""
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any case imports stseq
    sys.path.insert(0, str(CASES_DIR))
    for case in cases:
        start = time.perf_counter()
        exit_code, output = _in_process(case)
        report(("cpu", case, exit_code, 0, time.perf_counter() - start, output))


def run_on_gpu(cases, tools, jobs, timeout, report):
    """Every case under every tool, ``jobs`` processes at a time, each result passed to
    ``report`` as soon as it is in."""
    sanitizer = find_sanitizer()
    if sanitizer is None:
        for tool in tools:
            for case in cases:
                report((tool, case, 127, 0, 0.0, "compute-sanitizer not found (PATH, next to "
                        "nvcc, /usr/local/cuda)"))
        return
    deadline = time.monotonic() + timeout
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_sanitized, tool, case, sanitizer, deadline)
                   for tool in tools for case in cases]
        for future in concurrent.futures.as_completed(futures):
            report(future.result())


class Report:
    """Appends each result to the log (a section with the run's output) and the results table
    at once, so that a run stopped by its timeout keeps what finished."""

    def __init__(self, log_path, results_path):
        self.log_path, self.results_path = log_path, results_path
        self.statuses = []
        open(results_path, "w").close()

    def __call__(self, result):
        tool, case, exit_code, errors, seconds, output = result
        status = status_of(exit_code, errors)
        self.statuses.append(status)
        with open(self.log_path, "a") as log:
            log.write(f"===== {tool} {case}: {status} (exit {exit_code}, {errors} sanitizer "
                      f"errors, {seconds:.1f} s)\n{output.rstrip()}\n")
        with open(self.results_path, "a") as table:
            table.write(f"{tool}\t{case}\t{status}\t{exit_code}\t{errors}\t{seconds:.1f}\n")
        print(f"{tool:9} {case:22} {status} ({seconds:.1f} s)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, help="file the runs' output is appended to")
    parser.add_argument("--results", required=True, help="TSV file of the results")
    parser.add_argument("--cpu", action="store_true", help="dry run: each case on the CPU")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="parallel processes")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds for all the GPU runs together")
    args = parser.parse_args(argv)
    report = Report(args.log, args.results)
    if args.cpu:
        run_on_cpu(args.cases, report)
    else:
        run_on_gpu(args.cases, args.tools, args.jobs, args.timeout, report)
    return 1 if {"failed", "timeout"} & set(report.statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
