"""The benchmark runner: its parity column must flag a wrong kernel, implementations are timed
interleaved, a quick run works and keeps what it measured, and `pytest benchmarks` runs."""

import json
import pathlib
import subprocess
import sys

import pytest
import torch

from stseq import bench, cli
from stseq.bench import measure, report, run_case, time_gap

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_parity_column_flags_a_perturbed_kernel():
    inputs = time_gap.make_inputs(batch=8, seq_len=12, window=3, num_buckets=16, dim=8)
    peer = lambda: time_gap.forward(inputs, "reference")  # noqa: E731
    good = run_case("op", "s", lambda: time_gap.forward(inputs, "native"), peer, peer="ref",
                    device=torch.device("cpu"), dtype=torch.float32, repeats=1)
    bad = run_case("op", "s", lambda: time_gap.forward(inputs, "native") * (1 + 1e-3), peer,
                   peer="ref", device=torch.device("cpu"), dtype=torch.float32, repeats=1)
    assert good["parity_ok"] and good["max_error"] < 1e-6
    assert not bad["parity_ok"] and bad["max_error"] > 5e-4


def test_bench_command_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(time_gap, "QUICK", [dict(batch=4, seq_len=6, window=2, num_buckets=8,
                                                 dim=4)])
    assert cli.main(["bench", "--quick", "--ops", "time_gap", "--repeats", "2", "--out",
                     str(tmp_path)]) == 0
    assert "time_gap_embedding forward+backward" in capsys.readouterr().out
    (result,) = tmp_path.glob("cpu-*.json")
    record = json.loads(result.read_text())
    assert record["cases"][0]["peer"] == time_gap.PEER and record["cases"][0]["speedup"] > 0
    assert result.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = report.summarize(tmp_path)
    assert f"results/{result.name}" in summary and "time_gap_embedding forward+backward" in summary


def test_interleaved_timing_alternates_the_order_of_the_calls():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b"), lambda: calls.append("c")]
    medians = measure.interleaved_medians_ms(fns, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == ["a", "b", "c"] + ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert len(medians) == 3 and all(m >= 0 for m in medians)


def test_a_shape_s_cases_are_timed_in_one_interleaved_run(monkeypatch):
    timed = []

    def fake_medians(fns, device, *, repeats, warmup):
        timed.append(fns)
        return [1.0, 2.0, 3.0, 12.0]  # stseq 1, peer 2, stseq 3, peer 12

    monkeypatch.setattr(measure, "interleaved_medians_ms", fake_medians)
    values = [torch.ones(3), torch.ones(3) * 1.5]
    fns = [lambda: values[0], lambda: values[0], lambda: values[1], lambda: values[1] * 2]
    rows = bench.run_group([("op forward", "B=3", fns[0], fns[1], "peer A"),
                            ("op forward", "B=3", fns[2], fns[3], "peer B")],
                           device=torch.device("cpu"), dtype=torch.float32, repeats=5)
    assert timed == [fns]
    assert [(r["peer"], r["speedup"], r["parity_ok"]) for r in rows] == [
        ("peer A", 2.0, True), ("peer B", 4.0, False)]
    assert all(r["load_1min"] >= 0 for r in rows)


class _Suite:
    """A fake suite: one case per shape; ``fail_at`` makes a shape's case raise."""

    PEER = "fake peer"
    QUICK = FULL = [1, 2]

    def __init__(self, fail_at=None):
        self.fail_at = fail_at

    def cases(self, grid, device, dtype):
        for shape in grid:
            if shape == self.fail_at:
                raise RuntimeError("Torch not compiled with CUDA enabled")
            value = torch.full((2,), float(shape))
            yield ("fake op", f"s={shape}", lambda v=value: v, lambda v=value: v.clone())


def test_json_is_written_after_every_family_with_threads_and_load(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SUITES", {"good": _Suite(), "broken": _Suite(fail_at=2)})
    args = cli.build_parser().parse_args(["bench", "--quick", "--repeats", "1", "--out",
                                          str(tmp_path)])
    with pytest.raises(RuntimeError, match="not compiled with CUDA"):
        bench.main(args)  # the second family fails after one case
    (result,) = tmp_path.glob("cpu-*.json")
    record = json.loads(result.read_text())
    assert [case["shape"] for case in record["cases"]] == ["s=1", "s=2"]  # the first family
    assert record["threads"] == torch.get_num_threads()
    assert len(record["load_average"]["start"]) == len(record["load_average"]["end"]) == 3


def test_planned_cases_tells_a_grid_without_cases_for_a_device():
    cpu = torch.device("cpu")
    assert bench.planned_cases(_Suite(), [1, 2], cpu, torch.float32) == (2, None)
    assert bench.planned_cases(_Suite(), [], cpu, torch.float32) == (0, None)
    assert bench.planned_cases(_Suite(fail_at=2), [1, 2], cpu, torch.float32) == (
        1, "RuntimeError: Torch not compiled with CUDA enabled")


def test_chart_keeps_the_title_and_long_labels_inside_the_image(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    rows = [dict(op="time_decay_attention forward+backward", dtype="bfloat16",
                 shape="batch=32,heads=4,seq_len=200,head_dim=32,jagged=True,causal=False",
                 peer="FlexAttention score_mod", speedup=speedup) for speedup in (0.5, 30.0)]
    title = "stseq vs peers on a long device name (stseq " + "--ops x " * 30 + ")"
    pixels = image.imread(report.speedup_chart(rows, tmp_path / "chart.png", title))
    border = [pixels[:3], pixels[-3:], pixels[:, :3], pixels[:, -3:]]
    assert all((edge[..., :3] == 1.0).all() for edge in border)  # nothing drawn at an edge


def _pytest_benchmarks(tmp_path, *args):
    """pytest on the checkout's benchmarks/ from outside the checkout (the installed stseq)."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_pytest_benchmarks_collects_and_runs_every_bench_file(tmp_path):
    collected = _pytest_benchmarks(tmp_path, str(BENCHMARKS), "--collect-only", "-q")
    assert collected.returncode == 0, collected.stdout + collected.stderr
    for path in BENCHMARKS.glob("bench_*.py"):
        assert f"{path.name}::test_" in collected.stdout, f"nothing collected from {path.name}"
    case = "bench_time_gap.py::test_time_gap_embedding[B256-L50-W8-NB64-D64-forward-native]"
    ran = _pytest_benchmarks(tmp_path, str(BENCHMARKS / case), "--benchmark-disable", "-q")
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout + ran.stderr


def test_rnn_serving_cases_run_in_inference_mode_with_their_threads_and_load():
    from stseq.bench import rnn

    shapes = [dict(cell="lstm", batch=2, seq_len=3, input_size=4, hidden=8, inference=True,
                   threads=1),
              dict(cell="gru", batch=2, seq_len=3, input_size=4, hidden=8, inference=True,
                   load=True)]
    threads = torch.get_num_threads()
    seen = []
    for name, shape, stseq_fn, peer_fn, _ in rnn.cases(shapes, torch.device("cpu"),
                                                       torch.float32):
        out, peer_out = stseq_fn(), peer_fn()
        assert not out[0].requires_grad and torch.allclose(out[0], peer_out[0], atol=1e-5)
        seen.append((name, shape, rnn.BUSY.process is not None))
    assert seen == [("lstm inference", "B=2,L=3,I=4,H=8,threads=1", False),
                    ("gru inference", "B=2,L=3,I=4,H=8,load=1 busy core", True)]
    assert torch.get_num_threads() == threads  # restored after each call
    rnn.BUSY.stop()
    assert rnn.BUSY.process is None
    assert any(s.get("load") for s in rnn.FULL) and any(s.get("threads") == 1 for s in rnn.FULL)
    assert {s["batch"] for s in rnn.FULL if s.get("inference")} == {1, 8, 64, 256}


def test_rnn_training_cases_match_torch_with_and_without_the_backward():
    from stseq.bench import rnn

    shape = dict(cell="lstm", batch=2, seq_len=3, input_size=4, hidden=8, training=True,
                 threads=1)
    seen = []
    for name, label, stseq_fn, peer_fn, _ in rnn.cases([shape], torch.device("cpu"),
                                                       torch.float32):
        out, peer_out = stseq_fn(), peer_fn()
        assert torch.allclose(out[0], peer_out[0], atol=1e-5)
        if name == "lstm forward+backward":  # (output, grad of the input, grad of W_hh)
            assert out[1].shape == (3, 2, 4) and torch.allclose(out[2], peer_out[2], atol=1e-5)
        seen.append((name, label))
    assert seen == [("lstm training forward", "B=2,L=3,I=4,H=8,threads=1"),
                    ("lstm forward+backward", "B=2,L=3,I=4,H=8,threads=1")]
    assert {(s["batch"], s["threads"]) for s in rnn.FULL if s.get("training")} == {
        (b, t) for b in (1, 8, 64) for t in (None, 1)}


def test_a_self_measuring_suite_reaches_the_written_record():
    # stseq bench --out writes what `measured` receives: a suite with its own run_suite() (data)
    import types

    row = {"op": "load", "shape": "rows=1", "dtype": "-", "stseq_ms": 1.0, "peer": "p",
           "peer_ms": 2.0, "speedup": 2.0, "max_error": 0.0, "parity_ok": True,
           "stseq_peak_mib": 1.0, "peer_peak_mib": 1.0}
    suite = types.SimpleNamespace(run_suite=lambda **_: [row])
    received = []
    rows = bench.run_family(suite, device=torch.device("cpu"), quick=True, repeats=1,
                            measured=received.extend)
    assert rows == [row] and received == [row]


@pytest.mark.parametrize("name", sorted(bench.SUITES))
def test_every_suite_dispatches_through_run_family(name, monkeypatch):
    # `stseq bench --ops NAME` reaches the suite's grid (or its run_suite) without timing it:
    # a module-level helper that happens to share the self-measuring hook's name once sent
    # `stseq bench --ops rnn` into a TypeError.
    suite = bench.SUITES[name]
    monkeypatch.setattr(bench, "run_group", lambda group, **_: [])
    if hasattr(suite, "run_suite"):
        monkeypatch.setattr(suite, "run_suite", lambda **_: [])
    assert bench.run_family(suite, device=torch.device("cpu"), quick=True, repeats=1) == []
