"""``stseq train | evaluate | recommend`` on a tiny synthetic set and a tiny data file: the
table, reloading checkpoints, and messages in the user's terms (issue 23 items 6-8)."""

import argparse
import json
import sys

import pytest

from stseq import cli
from stseq.cli import main
from stseq.train import command

TINY = ["--synthetic", "num_users=24", "--synthetic", "num_items=30", "--synthetic",
        "min_length=4", "--synthetic", "max_length=12"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
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
    assert json.loads((out / "run.json").read_text())["models"] == ["most-popular", "markov",
                                                                    "gru4rec"]


def test_evaluate_reloads_the_checkpoint(trained, capsys):
    code, out = trained
    assert main(["evaluate", str(out / "gru4rec" / "checkpoint.pt")]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    ndcg = next(row["NDCG@10"] for row in summary["rows"] if row["model"] == "gru4rec")
    assert f"NDCG@10 {ndcg:.4f}" in text  # the same test metrics as after training
    assert "fraction of the oracle (expected): NDCG@10" in text


def test_evaluate_explains_ties(trained, capsys):
    _, out = trained
    assert main(["evaluate", str(out / "markov" / "checkpoint.pt")]) == 0
    text = capsys.readouterr().out
    assert "with ties against the target (items scored exactly as high as it ranked ahead of " \
           "it, the worst case; above, behind it): HR@10" in text
    assert "(ties against:" not in text


def test_recommend_lists_top_k_and_explains_the_score(trained, capsys):
    _, out = trained
    assert main(["recommend", str(out / "markov" / "checkpoint.pt"), "--user", "0", "3",
                 "-k", "4"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0] == "user\trank\titem\tscore"
    assert [line.split("\t")[:2] for line in lines[1:]] == [
        [user, str(rank)] for user in ("0", "3") for rank in range(1, 5)]
    assert captured.err.startswith("score: how often the item followed the user's last item")
    assert main(["recommend", str(out / "gru4rec" / "checkpoint.pt"), "--user", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("score: the natural log of the probability that gru4rec")
    scores = [float(line.split("\t")[3]) for line in captured.out.splitlines()[1:]]
    assert all(score <= 0 for score in scores)  # log-probabilities


def test_recommend_at_time_before_the_last_event(trained, capsys):
    _, out = trained
    checkpoint = str(out / "gru4rec" / "checkpoint.pt")
    assert main(["recommend", checkpoint, "--user", "3", "--at-time", "0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("stseq recommend: error: --at-time 0 is before user 3's last event")
    assert "row" not in error and "position" not in error
    assert main(["recommend", checkpoint, "--user", "3", "--at-time", str(2**40)]) == 0


def test_recommend_unknown_user(trained, capsys):
    _, out = trained
    assert main(["recommend", str(out / "markov" / "checkpoint.pt"), "--user", "999"]) == 2
    assert "unknown user id '999'" in capsys.readouterr().err


def test_data_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "tiny.inter"
    rows = [f"{u}\t{(u * 7 + t) % 9}\t{1_700_000_000 + 60 * t}" for u in range(6)
            for t in range(5)]
    data.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + "\n".join(rows) + "\n")
    assert main(["train", "--data", str(data), "--model", "markov", "--no-baselines",
                 "--no-progress"]) == 0
    assert "markov" in capsys.readouterr().out
    assert (tmp_path / "runs" / "tiny" / "1" / "markov" / "checkpoint.pt").is_file()


def test_without_matplotlib_no_chart_is_claimed(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = tmp_path / "run"
    assert main(["train", *TINY, "--model", "markov", "--no-baselines", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"checkpoints and logs in {out}/ (no charts: matplotlib is not installed" in text
    assert "charts in" not in text
    assert not list(out.rglob("*.png"))


def test_the_comparison_chart_has_a_title(tmp_path, capsys, monkeypatch):
    axes = pytest.importorskip("matplotlib.axes")
    titles = []
    real = axes.Axes.set_title
    monkeypatch.setattr(axes.Axes, "set_title",
                        lambda self, label, *a, **k: titles.append(label) or real(
                            self, label, *a, **k))
    assert main(["train", *TINY, "--model", "markov", "--out", str(tmp_path / "run")]) == 0
    assert titles == ["synthetic: test NDCG@10 and HR@10 per model (leave-one-out split, full "
                      "ranking over 30 items)"]
    assert (tmp_path / "run" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def subcommands():
    parser = cli.build_parser()
    choices = next(action.choices for action in parser._actions
                   if isinstance(action, argparse._SubParsersAction))
    return [("stseq", parser), *((f"stseq {name}", sub) for name, sub in choices.items())]


@pytest.mark.parametrize("name, parser", subcommands(), ids=lambda value: str(value)[:20])
def test_help_gives_every_option_a_text_and_its_default(name, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        text = formatter._expand_help(action) if action.help else ""
        assert text, f"{name} {action.option_strings or action.dest} has no help"
        if action.option_strings and not action.required:
            assert "default" in text, f"{name} {action.option_strings} does not give its default"


def test_help_exits_cleanly(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--epochs EPOCHS       most passes over the data (default: 10)" in text
    assert "--no-amp              no bfloat16 autocast on GPU (default: off)" in text


def test_the_main_job_announces_its_duration_first(tmp_path, capsys, monkeypatch):
    """``stseq train`` with no arguments says how long it takes before any work starts."""
    monkeypatch.chdir(tmp_path)
    calls = []

    def run_models(names, spec, config, **options):
        calls.append((names, capsys.readouterr().out))
        return [{"model": "markov", "time_aware": False, "NDCG@10": 0.5, "HR@10": 0.5}]

    monkeypatch.setattr("stseq.train.command.run_models", run_models)
    assert main(["train"]) == 0
    (names, printed), = calls
    assert names == ["most-popular", "markov", "time-decay-gru"]
    assert printed.startswith(f"The main job: most-popular, markov, time-decay-gru on the "
                              f"synthetic data. It takes about {command.MAIN_JOB_SECONDS} s on "
                              f"{command.MAIN_JOB_MACHINE}")
