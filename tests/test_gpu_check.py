"""The GPU check's parts that must work the first time on a GPU, tested on failures the CPU dry
run never produces: the summary writer, the sanitizer result parsing, the per-test timeout and
the script's argument parsing. (CI runs the whole dry run after the suite.)"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"
TESTS = pathlib.Path(__file__).resolve().parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


summary = _load("gpu_check_summary")
sanitize_ops = _load("sanitize_ops")

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0"
failures="1" skipped="1" tests="4"><testcase classname="tests.ops.test_rnn" name="test_ok"/>
<testcase classname="tests.ops.test_rnn" name="test_cuda_lstm_matches">
<failure message="AssertionError: max error 3e-2 &gt; 1e-2">trace</failure></testcase>
<testcase classname="tests.ops.test_rnn" name="test_skip"><skipped message="x"/></testcase>
<testcase classname="tests.ops.test_rnn" name="test_ok2"/></testsuite></testsuites>"""
BENCH = {"command": "stseq bench --quick --device cuda", "cases": [
    dict(op="lstm forward", shape="B=256", dtype="bfloat16", peer="torch.nn (cuDNN)",
         speedup=1.31, stseq_ms=1.0, peer_ms=1.31, max_error=1e-3, parity_ok=True),
    dict(op="time_lstm2 forward+backward", shape="B=256", dtype="float32", peer="reference",
         speedup=41.0, stseq_ms=1.0, peer_ms=41.0, max_error=0.2, parity_ok=False),
    dict(op="model training step", shape="m", dtype="float32", peer="ref", speedup=2.0,
         stseq_ms=1.0, peer_ms=2.0, max_error=0.0, parity_ok=True)]}


def _gpu_run(tmp_path):
    """The work folder and OUTDIR of a GPU run whose build passed and whose other steps
    failed in the ways the summary must report."""
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    out.mkdir()
    (work / "steps.tsv").write_text(
        "build\tpassed\t0\t150\t240\tCUDA\n"
        "info\tpassed\t0\t5\t30\tinfo.json\n"
        "cuda-tests\tfailed\t1\t60\t90\tcuda-tests.xml\n"
        "sanitizers\tfailed\t1\t70\t75\tsanitizer.log\n"
        "bench\ttimeout\t124\t100\t100\tbench-cuda.json\n")
    (work / "bench.log").write_text("lstm forward ...\nTraceback (most recent call last):\n"
                                    "  File x\nRuntimeError: CUDA error: out of memory\n")
    (work / "sanitizer.tsv").write_text(
        "memcheck\tlstm\tfailed\t1\t2\t20.0\nmemcheck\titem_logsumexp\tskipped\t3\t0\t5.0\n"
        "racecheck\tlstm\ttimeout\tNone\t0\t65.0\n")
    (out / "cuda-tests.xml").write_text(JUNIT)
    (out / "info.json").write_text(json.dumps({"devices": ["cpu", "cuda:0 NVIDIA H100"],
                                               "torch": "2.11.0", "native": {"cuda": True}}))
    (out / "bench-cuda.json").write_text(json.dumps(BENCH))
    return work, out


def test_summary_reports_every_failure_with_counts_and_first_errors(tmp_path, capsys):
    work, out = _gpu_run(tmp_path)
    assert summary.main(["--work", str(work), "--out", str(out), "--mode", "gpu"]) == 1
    result = json.loads((out / "summary.json").read_text())
    steps = {step["step"]: step for step in result["steps"]}
    assert result["passed"] is False and result["devices"][1] == "cuda:0 NVIDIA H100"
    assert steps["build"]["status"] == "passed" and steps["build"]["first_error"] is None
    assert steps["cuda-tests"]["counts"] == dict(tests=4, failures=1, errors=0, skipped=1,
                                                 passed=2)
    assert steps["cuda-tests"]["first_error"] == (
        "tests.ops.test_rnn::test_cuda_lstm_matches: AssertionError: max error 3e-2 > 1e-2")
    assert steps["sanitizers"]["first_error"] == "memcheck lstm: failed, 2 errors"
    assert result["sanitizer"]["racecheck"]["lstm"]["status"] == "timeout"
    assert result["sanitizer"]["racecheck"]["gru"] == {"status": "not run"}
    assert steps["sanitizers"]["counts"]["not run"] == 2 * len(summary.OPS) - 3
    assert steps["bench"]["first_error"] == "RuntimeError: CUDA error: out of memory"
    assert steps["bench"]["counts"] == {"cases": 3, "parity_mismatches": 1}
    by_op = result["bench"]["by_op"]
    assert by_op["lstm"]["torch.nn (cuDNN)"][0]["speedup"] == 1.31
    assert by_op["time_lstm"]["reference"][0]["parity_ok"] is False
    assert "model" in by_op and "lstm" not in result["bench"]["ops_without_rows"]
    assert "gru" in result["bench"]["ops_without_rows"]
    assert result["files"] == ["bench-cuda.json", "cuda-tests.xml", "info.json", "summary.json"]
    printed = capsys.readouterr().out
    assert "gpu_check gpu: FAILED" in printed and "1.31x" in printed


def test_first_error_finds_compiler_and_python_errors():
    build = "-- Configuring\n[3/8] nvcc rnn_cuda.cu\nrnn_cuda.cu(12): error: identifier x\n"
    assert summary.first_error(build) == "rnn_cuda.cu(12): error: identifier x"
    assert summary.first_error("all good\n") is None
    python = "Traceback (most recent call last):\n  File a\n    x()\nValueError: bad\n"
    assert summary.first_error(python) == "ValueError: bad"


def test_sanitizer_results_are_parsed_from_its_summary_line():
    report = "========= Invalid __global__ read of size 4\n========= ERROR SUMMARY: 7 errors\n"
    assert sanitize_ops.reported_errors(report) == 7
    assert sanitize_ops.reported_errors("========= ERROR SUMMARY: 0 errors\n") == 0
    assert sanitize_ops.status_of(1, 7) == "failed"
    assert sanitize_ops.status_of(0, 0) == "passed"
    assert sanitize_ops.status_of(sanitize_ops.SKIPPED, 0) == "skipped"
    assert sanitize_ops.status_of(None, 0) == "timeout"
    assert "item_logsumexp" in sanitize_ops.CASES and "lstm" in sanitize_ops.CASES


def test_per_test_timeout_fails_a_slow_test_and_stops(tmp_path):
    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_slow():\n    time.sleep(30)\n\ndef test_next():\n    pass\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "per_test_timeout", "-p", "no:cacheprovider",
         "-x", "--per-test-timeout", "1", "--junitxml", str(tmp_path / "junit.xml"),
         str(tmp_path / "test_slow.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(TESTS), "PATH": ""})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ran longer than --per-test-timeout=1 s" in result.stdout
    assert "1 failed" in result.stdout and "test_next" not in result.stdout
    counts, first = summary.junit_counts(tmp_path / "junit.xml")
    assert counts["failures"] == 1 and "TimeoutError" in first


@pytest.mark.parametrize("args, code, text", [
    (["--help"], 0, "Usage: scripts/gpu_check.sh"),
    (["--dry-run"], 2, "OUTDIR missing"),
    (["--quick", "--bogus", "out"], 2, "unknown option --bogus"),
    (["a", "b"], 2, "one OUTDIR only"),
])
def test_gpu_check_arguments(args, code, text):
    result = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code
    assert text in result.stdout + result.stderr


def test_a_failed_build_skips_the_steps_that_need_it_and_still_summarizes(tmp_path):
    shim = tmp_path / "python3"  # fails the build (pip), runs everything else for real
    shim.write_text("#!/usr/bin/env bash\n"
                    'if [ "$1 $2" = "-m pip" ]; then echo "CMake Error: no CUDA compiler"; '
                    "exit 1; fi\n"
                    f'exec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    out = tmp_path / "out"
    result = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), "--quick", str(out)],
                            env=dict(os.environ, PYTHON=str(shim)), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr
    steps = {s["step"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}
    assert steps["build"]["status"] == "failed"
    assert steps["build"]["first_error"] == "CMake Error: no CUDA compiler"
    assert steps["info"]["status"] == "passed"
    for name in ("cuda-tests", "sanitizers", "bench"):
        assert (steps[name]["status"], steps[name]["note"]) == (
            "skipped", "needs the build, which failed")
    assert "CMake Error" in (out / "build.log").read_text()
