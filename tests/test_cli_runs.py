"""Run folders (issue 23 item 4): every ``stseq train`` gets its own folder with a ``latest``
link, nothing is overwritten without ``--overwrite``, ``--resume`` finds the run it continues,
and a run's summary holds that run's models."""

import csv
import json
import os

import pytest

from stseq.cli import main
from stseq.train import runs

TINY = ["--synthetic", "num_users=24", "--synthetic", "num_items=30", "--synthetic",
        "min_length=4", "--synthetic", "max_length=12", "--no-progress"]
GRU = ["--model", "gru4rec", "--no-baselines", "--epochs", "2", "--dim", "8", "--max-length",
       "8", "--batch-size", "16"]


def summary_models(folder):
    with (folder / "summary.csv").open() as file:
        return [row["model"] for row in csv.DictReader(file)]


def test_runs_never_overwrite_each_other(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--model", "markov", "--no-baselines"]) == 0
    first = tmp_path / "runs" / "synthetic" / "1"
    checkpoint = (first / "markov" / "checkpoint.pt").read_bytes()
    assert main(["train", *TINY, "--model", "most-popular", "--no-baselines"]) == 0
    second = tmp_path / "runs" / "synthetic" / "2"
    assert (first / "markov" / "checkpoint.pt").read_bytes() == checkpoint
    assert summary_models(first) == ["oracle", "markov"]
    assert summary_models(second) == ["oracle", "most-popular"]
    assert not (second / "markov").exists()
    assert os.readlink(tmp_path / "runs" / "synthetic" / "latest") == "2"
    assert "in runs/synthetic/2/" in capsys.readouterr().out


def test_a_named_folder_is_replaced_only_with_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    assert main(["train", *TINY, "--model", "markov", "--no-baselines", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "--model", "most-popular", "--no-baselines", "--out",
                 str(out)]) == 2
    assert capsys.readouterr().err == (f"stseq train: error: {out} already holds a run; pass "
                                       "--overwrite to replace it, --resume to continue it, or "
                                       "choose another --out\n")
    assert summary_models(out) == ["oracle", "markov"]
    (out / "notes.txt").write_text("mine")
    assert main(["train", *TINY, "--model", "most-popular", "--no-baselines", "--out", str(out),
                 "--overwrite"]) == 0
    assert summary_models(out) == ["oracle", "most-popular"]
    assert not (out / "markov").exists()  # the replaced run's models are gone
    assert (out / "notes.txt").read_text() == "mine"  # files stseq did not write are kept


def test_resume_finds_the_latest_run_and_refuses_another_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--resume", *GRU]) == 2
    assert "--resume: there is no run of synthetic in runs/synthetic/ to continue" in \
        capsys.readouterr().err
    assert main(["train", *TINY, *GRU]) == 0
    folder = tmp_path / "runs" / "synthetic" / "1"
    finished = json.loads((folder / "summary.json").read_text())["rows"]
    capsys.readouterr()
    assert main(["train", *TINY, *GRU, "--resume"]) == 0
    assert capsys.readouterr().out.startswith("Resuming runs/synthetic/1\n")
    assert json.loads((folder / "summary.json").read_text())["rows"][1]["NDCG@10"] == \
        finished[1]["NDCG@10"]
    assert len(json.loads((folder / "run.json").read_text())["resumed"]) == 1
    assert not (tmp_path / "runs" / "synthetic" / "2").exists()

    assert main(["train", *TINY, *GRU, "--resume", "--lr", "0.02"]) == 2
    assert capsys.readouterr().err.endswith("not resuming it: lr 0.01 in the checkpoint, 0.02 "
                                            "now\n")
    assert main(["train", *TINY, *GRU[:2], "--resume"]) == 2  # with the baselines this time
    assert "trained gru4rec, not most-popular, markov, gru4rec" in capsys.readouterr().err


def test_a_refused_run_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--model", "markov", "--no-baselines"]) == 0
    assert main(["train", *TINY, *GRU, "--option", "wings=2"]) == 2
    assert "bad options for model 'gru4rec'" in capsys.readouterr().err
    assert sorted(path.name for path in (tmp_path / "runs" / "synthetic").iterdir()) == [
        "1", "latest"]
    assert os.readlink(tmp_path / "runs" / "synthetic" / "latest") == "1"


def test_run_numbers_are_never_shared(tmp_path):
    assert runs.new_run(tmp_path, "events").name == "1"
    (tmp_path / "events" / "2").mkdir()  # taken meanwhile by another run
    assert runs.new_run(tmp_path, "events").name == "3"
    assert runs.latest_run(tmp_path, "events") == tmp_path / "events" / "3"
    assert runs.latest_run(tmp_path, "other") is None


@pytest.mark.parametrize("path, name", [("/data/events.csv", "events"),
                                        ("/data/my events (v2).tsv", "my_events__v2_")])
def test_data_name_of_a_file(path, name):
    assert runs.data_name({"source": "file", "path": path}) == name
