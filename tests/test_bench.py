"""The benchmark runner: its parity column must flag a wrong kernel, and a quick run works."""

import json

import torch

from stseq import cli
from stseq.bench import report, run_case, time_gap


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
