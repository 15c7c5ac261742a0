"""``stseq train | evaluate | recommend`` on a tiny synthetic set and a tiny data file."""

import json

import pytest

from stseq.cli import main

TINY = ["--synthetic", "num_users=24", "--synthetic", "num_items=30", "--synthetic",
        "min_length=4", "--synthetic", "max_length=12"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", *TINY, "--model", "gru4rec", "--epochs", "2", "--dim", "16",
                 "--max-length", "8", "--batch-size", "8", "--out", str(out), "--no-progress"])
    return code, out


def test_train_prints_the_table_against_the_oracle(trained, capsys):
    code, out = trained
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [row["model"] for row in summary["rows"]] == ["oracle", "most-popular", "markov",
                                                         "gru4rec"]
    for row in summary["rows"]:
        assert 0 <= row["NDCG@10/oracle"] <= 1.0 + 1e-9, row
    assert summary["rows"][0]["NDCG@10/oracle"] == 1.0
    for name in ("most-popular", "markov", "gru4rec"):
        assert (out / name / "checkpoint.pt").is_file()
    assert (out / "summary.csv").read_text().startswith("model,time_aware,NDCG@10,HR@10")


def test_evaluate_reloads_the_checkpoint(trained, capsys):
    code, out = trained
    assert main(["evaluate", str(out / "gru4rec" / "checkpoint.pt")]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    ndcg = next(row["NDCG@10"] for row in summary["rows"] if row["model"] == "gru4rec")
    assert f"NDCG@10 {ndcg:.4f}" in text  # the same test metrics as after training
    assert "fraction of the oracle (expected): NDCG@10" in text


def test_recommend_lists_top_k(trained, capsys):
    code, out = trained
    assert main(["recommend", str(out / "markov" / "checkpoint.pt"), "--user", "0", "3",
                 "-k", "4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "user\trank\titem\tscore"
    assert [line.split("\t")[:2] for line in lines[1:]] == [
        [user, str(rank)] for user in ("0", "3") for rank in range(1, 5)]


def test_data_file_and_clear_errors(tmp_path, capsys):
    data = tmp_path / "tiny.inter"
    rows = [f"{u}\t{(u * 7 + t) % 9}\t{1_700_000_000 + 60 * t}" for u in range(6)
            for t in range(5)]
    data.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    assert main(["train", "--data", str(data), "--model", "markov", "--no-baselines", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    assert "markov" in capsys.readouterr().out

    assert main(["train", "--data", str(tmp_path / "missing.inter")]) == 2
    assert "no data file at" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("u,i,t\n")
    assert main(["train", "--data", str(bad)]) == 2
    assert "cannot tell the format of bad.csv" in capsys.readouterr().err
    malformed = tmp_path / "malformed.inter"
    malformed.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n")
    assert main(["train", "--data", str(malformed)]) == 2
    error = capsys.readouterr().err
    assert "no usable events after preprocessing" in error and "1 bad timestamp" in error
    assert main(["train", "--synthetic", "num_users"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "no-such-model"])
    assert "invalid choice: 'no-such-model'" in capsys.readouterr().err


def test_recommend_unknown_user(trained, capsys):
    _, out = trained
    assert main(["recommend", str(out / "markov" / "checkpoint.pt"), "--user", "999"]) == 2
    assert "unknown user id '999'" in capsys.readouterr().err
