"""Write ``summary.json`` for scripts/gpu_check.sh and print it as a short table.

Reads what the steps left: WORK/steps.tsv (step, status, exit code, seconds, budget, note, one
line per step), WORK/<step>.log, WORK/sanitizer.tsv (scripts/sanitize_ops.py), and in OUTDIR
info.json, cuda-tests.xml (JUnit) and bench-<device>.json (``stseq bench --out``). The summary
says per step: passed / failed / skipped / timeout, counts, the first error; per sanitizer
tool and op its result; per benchmark case the ratio against each peer, and which ops have no
benchmark row.

A dry run also lists, per benchmark suite, whether the grid the GPU run uses has CUDA cases.

    python scripts/gpu_check_summary.py --work WORK --out OUTDIR --mode gpu|dry-run [--quick]
"""

import argparse
import json
import pathlib
import re
import sys
import xml.etree.ElementTree as ElementTree

CASES_DIR = pathlib.Path(__file__).resolve().parent / "sanitize"
OPS = sorted(path.stem for path in CASES_DIR.glob("[!_]*.py"))  # the ops the GPU run checks
MAX_FILES = 8  # what comes back from the GPU machine
ERROR_LINE = re.compile(r"(\berror\b|\bError\b|CMake Error|FAILED|MISMATCH)")
BENCH_FIELDS = ("op", "shape", "dtype", "peer", "speedup", "stseq_ms", "peer_ms", "max_error",
                "parity_ok")


def first_error(text):
    """The first error a log shows: a Python traceback's exception line, else the first line
    that reads like an error (compiler, CMake, pytest, parity); None if none."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            rest = [ln for ln in lines[index + 1:] if ln and not ln.startswith((" ", "\t"))]
            return rest[0] if rest else line
    return next((line.strip() for line in lines if ERROR_LINE.search(line)), None)


def read_steps(work):
    """WORK/steps.tsv -> a list of step dicts, each with its log's first error."""
    steps = []
    for line in (work / "steps.tsv").read_text().splitlines():
        name, status, exit_code, seconds, budget, note = line.split("\t")
        log = work / f"{name}.log"
        error = first_error(log.read_text(errors="replace")) if log.exists() else None
        steps.append({"step": name, "status": status,
                      "exit_code": int(exit_code) if exit_code.lstrip("-").isdigit() else None,
                      "seconds": float(seconds), "budget_s": float(budget), "note": note or None,
                      "first_error": error if status in ("failed", "timeout") else None})
    return steps


def junit_counts(path):
    """Counts and the first failure of a JUnit XML file (pytest --junitxml)."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    for case in root.iter("testcase"):
        for outcome in ("failure", "error"):
            found = case.find(outcome)
            if found is not None:
                message = (found.get("message") or found.text or "").strip().splitlines()
                first = f"{case.get('classname')}::{case.get('name')}: "
                return counts, first + (message[0] if message else outcome)
    return counts, None


def read_sanitizer(path, tools):
    """WORK/sanitizer.tsv -> {tool: {op: {status, exit_code, errors, seconds}}}; a run of
    ``tools`` x OPS missing from the table (its step stopped first) is "not run"."""
    results = {tool: {op: {"status": "not run"} for op in OPS} for tool in tools}
    for line in path.read_text().splitlines():
        tool, op, status, exit_code, errors, seconds = line.split("\t")
        results.setdefault(tool, {})[op] = {
            "status": status, "exit_code": None if exit_code == "None" else int(exit_code),
            "errors": int(errors), "seconds": float(seconds)}
    return results


def op_of(case_name):
    """The checked op a benchmark row belongs to ("time_lstm2 forward" -> time_lstm), or the
    row's first word when it is none of them."""
    word = case_name.split()[0]
    stem = word.rstrip("0123456789")
    return stem if stem in OPS else word


def read_bench(paths):
    """The rows of ``stseq bench --out`` JSON files -> (cases, ratios by op and peer)."""
    cases = []
    for path in paths:
        record = json.loads(path.read_text())
        cases += [{field: row.get(field) for field in BENCH_FIELDS} for row in record["cases"]]
    by_op = {}
    for case in cases:
        peers = by_op.setdefault(op_of(case["op"]), {})
        peers.setdefault(case["peer"], []).append(
            {"case": f"{case['op']} [{case['shape']}] {case['dtype']}",
             "speedup": round(case["speedup"], 3), "parity_ok": case["parity_ok"]})
    return cases, by_op


def bench_plan(quick):
    """For a dry run: which benchmark suites have CUDA cases in the grid the GPU run uses ->
    {suite: {dtype: "cases" or "NONE"}} (stseq.bench.planned_cases)."""
    import torch

    from stseq.bench import ON_REQUEST, SUITES, planned_cases

    plan = {}
    for name, suite in SUITES.items():
        if name in ON_REQUEST:  # not run by `stseq bench` without --ops (CPU-only suites)
            continue
        grid = suite.QUICK if quick else suite.FULL
        for dtype in getattr(suite, "DTYPES", {}).get("cuda", (torch.float32,)):
            count, stopped = planned_cases(suite, grid, torch.device("cuda"), dtype)
            plan.setdefault(name, {})[str(dtype).removeprefix("torch.")] = (
                "cases" if count or stopped else "NONE")
    return plan


def _attach_details(steps, out, work, mode):
    """Counts and first errors from the steps' own files (JUnit, sanitizer table, bench)."""
    details = {}
    for step in steps:
        if step["step"] == "cuda-tests" and (out / "cuda-tests.xml").exists():
            step["counts"], failure = junit_counts(out / "cuda-tests.xml")
            step["first_error"] = failure or step["first_error"]
        if step["step"] == "sanitizers" and (work / "sanitizer.tsv").exists():
            tools = ("cpu",) if mode == "dry-run" else ("memcheck", "racecheck")
            details["sanitizer"] = read_sanitizer(work / "sanitizer.tsv", tools)
            runs = [(tool, op, result) for tool, ops in details["sanitizer"].items()
                    for op, result in ops.items()]
            step["counts"] = {status: sum(r["status"] == status for _, _, r in runs)
                              for status in ("passed", "failed", "skipped", "timeout", "not run")}
            bad = [f"{tool} {op}: {r['status']}, {r.get('errors', 0)} errors"
                   for tool, op, r in runs if r["status"] in ("failed", "timeout")]
            step["first_error"] = bad[0] if bad else step["first_error"]
        if step["step"] == "bench":
            cases, by_op = read_bench(sorted(out.glob("bench-*.json")))
            mismatches = [c for c in cases if not c["parity_ok"]]
            step["counts"] = {"cases": len(cases), "parity_mismatches": len(mismatches)}
            if mismatches and not step["first_error"]:
                step["first_error"] = "parity MISMATCH: {op} [{shape}] {dtype} vs {peer}".format(
                    **mismatches[0])
            details["bench"] = {"by_op": by_op, "ops_without_rows": sorted(set(OPS) - set(by_op)),
                                "cases": cases}
    return details


def summarize(work, out, mode, quick):
    """The summary dict of a gpu_check.sh run."""
    steps = read_steps(work)
    details = _attach_details(steps, out, work, mode)
    if mode == "dry-run":
        details["bench_plan_cuda"] = bench_plan(quick)
    info = json.loads((out / "info.json").read_text()) if (out / "info.json").exists() else {}
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    files = sorted(set(files) | {"summary.json"})
    return {
        "mode": mode,
        "passed": all(step["status"] in ("passed", "skipped") for step in steps),
        "seconds": round(sum(step["seconds"] for step in steps), 1),
        "devices": info.get("devices"), "torch": info.get("torch"),
        "native": info.get("native"),
        "steps": steps, **details,
        "files": files, "too_many_files": len(files) > MAX_FILES,
    }


def print_table(summary):
    """The summary as the few lines a reader of the run's output tail needs."""
    print(f"gpu_check {summary['mode']}: {'PASSED' if summary['passed'] else 'FAILED'} in "
          f"{summary['seconds']:.0f} s on {summary['devices']}")
    for step in summary["steps"]:
        counts = ", ".join(f"{key} {value}" for key, value in step.get("counts", {}).items())
        print(f"  {step['step']:11} {step['status']:8} {step['seconds']:6.1f} s / "
              f"{step['budget_s']:.0f} s  {counts}  {step['note'] or ''}")
        if step["first_error"]:
            print(f"  {'':11} first error: {step['first_error'][:300]}")
    for tool, ops in summary.get("sanitizer", {}).items():
        print(f"  {tool:11} " + ", ".join(f"{op} {r['status']}" for op, r in ops.items()))
    bench = summary.get("bench")
    if bench:
        for op, peers in bench["by_op"].items():
            for peer, cases in peers.items():
                ratios = " ".join(f"{c['speedup']:.2f}x" for c in cases)
                print(f"  bench {op:22} vs {peer}: {ratios}")
        if bench["ops_without_rows"]:
            print(f"  bench: no rows for {', '.join(bench['ops_without_rows'])}")
    for suite, dtypes in summary.get("bench_plan_cuda", {}).items():
        missing = [dtype for dtype, cases in dtypes.items() if cases == "NONE"]
        if missing:
            print(f"  WARNING: the GPU run's bench grid of {suite} has no CUDA cases "
                  f"({', '.join(missing)}): the GPU summary will have no rows for it")
    if summary["too_many_files"]:
        print(f"  WARNING: {len(summary['files'])} files in OUTDIR, only {MAX_FILES} come back")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--mode", required=True, choices=["gpu", "dry-run"])
    parser.add_argument("--quick", action="store_true", help="the run used the QUICK grids")
    args = parser.parse_args(argv)
    summary = summarize(args.work, args.out, args.mode, args.quick)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_table(summary)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
