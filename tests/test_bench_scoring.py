"""``stseq bench --ops scoring --scale EVENTS``: the catalogue-scale run at a tiny size writes
its training and evaluation rows (events/s, users/s, peak memory) like the other suites."""

import json
import math
import tempfile

from stseq import cli
from stseq.bench import scoring


def test_scale_run_writes_training_and_evaluation_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "work"))
    monkeypatch.setattr(scoring, "SCALE_STEPS", 2)
    monkeypatch.setattr(scoring, "SCALE_EVAL_USERS", 40)
    assert cli.main(["bench", "--ops", "scoring", "--scale", "10000", "--out",
                     str(tmp_path / "out")]) == 0
    assert "training step (scale run)" in capsys.readouterr().out
    (result,) = (tmp_path / "out").glob("cpu-*-scale.json")
    record = json.loads(result.read_text())
    ops = [row["op"] for row in record["cases"]]
    assert ops == [f"{model} {what} (scale run)" for model in scoring.SCALE_MODELS
                   for what in ("training step", "full-ranking evaluation")]
    for row in record["cases"]:
        assert "events=99" in row["shape"] and row["stseq_ms"] > 0 and row["stseq_peak_mib"] > 0
        assert math.isnan(row["speedup"]) and row["peer"] == scoring.SCALE_PEER
    training, evaluation = record["cases"][:2]
    assert training["steps"] == 2 and training["events_per_s"] > 0
    assert "eval_users=40," in evaluation["shape"] and evaluation["users_per_s"] > 0
    assert 0.0 <= evaluation["ndcg_at_10"] <= 1.0
    assert list((tmp_path / "work" / "stseq-scale").glob("log-10000-1500.csv"))


def test_scale_needs_the_scoring_suite_alone(capsys):
    assert cli.main(["bench", "--ops", "scoring", "time_gap", "--scale", "1000"]) == 2
    assert "--ops scoring --scale" in capsys.readouterr().err
