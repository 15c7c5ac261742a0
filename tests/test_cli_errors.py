"""Every error a user can cause through the command line ends with exit status 2 and one clear
line on stderr, never a traceback (issue 16 item 11); ``--debug`` shows the traceback."""

import shutil

import pytest

from stseq.cli import main
from stseq.train import load_checkpoint, save_checkpoint

TINY = ["--synthetic", "num_users=24", "--synthetic", "num_items=30", "--synthetic",
        "min_length=4", "--synthetic", "max_length=12", "--no-progress"]
GRU = ["--model", "gru4rec", "--no-baselines", "--epochs", "1", "--dim", "8", "--max-length",
       "8", "--batch-size", "16"]
INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def inter_rows(users=6, items=9):
    return "".join(f"{u}\t{(u * 7 + t) % items}\t{1_700_000_000 + 60 * t}\n" for u in range(users)
                   for t in range(5))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data files and checkpoints, good and bad: name -> path."""
    root = tmp_path_factory.mktemp("cli-errors")
    paths = {"root": root, "gru": root / "gru", "events": root / "events.inter"}
    paths["events"].write_text(INTER_HEADER + inter_rows())
    assert main(["train", *TINY, *GRU, "--out", str(paths["gru"])]) == 0
    assert main(["train", "--data", str(paths["events"]), "--model", "markov", "--no-baselines",
                 "--no-progress", "--out", str(root / "events-run")]) == 0
    good = paths["gru"] / "gru4rec" / "checkpoint.pt"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0x10
    (root / "flipped.pt").write_bytes(bytes(data))
    (root / "garbage.pt").write_bytes(b"\x80\x04garbage" * 10)
    state = load_checkpoint(good)
    del state["optimizer"]
    save_checkpoint(state, root / "incomplete.pt")
    # the data file changes after training (one more item)
    changed = root / "changed-run"
    shutil.copytree(root / "events-run", changed)
    (root / "events.inter").write_text(INTER_HEADER + inter_rows(items=10))
    (root / "parquet.parquet").write_bytes(b"PAR1 not really")
    (root / "empty.inter").write_text("")
    (root / "noon.inter").write_text(INTER_HEADER + "1\t2\tnoon\n")
    (root / "no-header.csv").write_text("")
    return paths


def fill(argv, files):
    return [str(files["root"] / arg[1:]) if arg.startswith("@") else arg for arg in argv]


CASES = {
    # bad options
    "epochs 0": (["train", "--epochs", "0"], "argument --epochs: invalid positive integer"),
    "lr text": (["train", "--lr", "fast"], "argument --lr: invalid positive number value"),
    "lr negative": (["train", "--lr", "-1"], "argument --lr: invalid positive number"),
    "lr nan": (["train", "--lr", "nan"], "argument --lr: invalid positive number"),
    "dropout 1.5": (["train", "--dropout", "1.5"], "argument --dropout: invalid number in"),
    "batch size": (["train", "--batch-size", "x"], "argument --batch-size: invalid positive"),
    "device": (["train", "--device", "gpu"], "argument --device: invalid device"),
    "no cuda": (["train", *TINY, "--model", "gru4rec", "--no-baselines", "--device", "cuda"],
                "torch sees no CUDA device"),
    "model": (["train", "--model", "nope"], "argument --model: invalid choice: 'nope'"),
    "split": (["train", "--split", "random"], "argument --split: invalid choice"),
    "synthetic no =": (["train", "--synthetic", "num_users"], "must look like KEY=VALUE"),
    "synthetic key": (["train", "--synthetic", "users=3"], "--synthetic 'users' is not one of"),
    "synthetic value": (["train", "--synthetic", "num_users=abc"],
                        "--synthetic num_users takes an integer, got 'abc'"),
    "synthetic float seed": (["train", "--synthetic", "seed=1.5"],
                             "--synthetic seed takes an integer, got 1.5"),
    "synthetic range": (["train", "--synthetic", "num_users=0"],
                        "num_users must be a positive integer, got 0"),
    "synthetic elsewhere": (["train", "--data", "@events.inter", "--synthetic", "seed=1"],
                            "--synthetic options apply to --data synthetic only"),
    "option": (["train", *TINY, "--model", "gru4rec", "--option", "wings=2"],
               "bad options for model 'gru4rec'"),
    "negatives with ce": (["train", "--num-negatives", "5"], "--num-negatives applies to"),
    "format synthetic": (["train", "--format", "recbole"], "--format is for data files"),
    "overwrite alone": (["train", "--overwrite"], "--overwrite applies to --out DIR"),
    "overwrite resume": (["train", "--overwrite", "--resume"], "contradict each other"),
    "out is a file": (["train", *TINY, "--out", "@events.inter"], "is a file, not a folder"),
    "k 0": (["recommend", "@gru/gru4rec/checkpoint.pt", "--user", "1", "-k", "0"],
            "argument -k: invalid positive integer"),
    "k too big": (["recommend", "@gru/gru4rec/checkpoint.pt", "--user", "1", "-k", "99"],
                  "k must be in [1, num_items=30], got 99"),
    "at-time text": (["recommend", "@gru/gru4rec/checkpoint.pt", "--user", "1", "--at-time",
                      "noon"], "argument --at-time: invalid int value"),
    "no user": (["recommend", "@gru/gru4rec/checkpoint.pt"], "the following arguments are "
                "required: --user"),
    "negatives 0": (["evaluate", "@gru/gru4rec/checkpoint.pt", "--negatives", "0"],
                    "argument --negatives: invalid positive integer"),
    "no command": ([], "the following arguments are required: COMMAND"),
    "unknown command": (["fit"], "argument COMMAND: invalid choice: 'fit'"),
    "unknown option": (["evaluate", "x.pt", "--fast"], "unrecognized arguments: --fast"),
    "newline in a value": (["evaluate", "x.pt", "-k", "\n"], "unrecognized arguments: -k"),
    # data files
    "missing data": (["train", "--data", "@missing.inter"], "no data file at"),
    "data folder": (["train", "--data", "@gru"], "no data file at"),
    "unknown format": (["train", "--data", "@no-header.csv"], "cannot tell the format of"),
    "damaged parquet": (["train", "--data", "@parquet.parquet", "--format", "table",
                         "--columns", "user=u,item=i,timestamp=t"],
                        "parquet.parquet: not a readable Parquet file"),
    "table without columns": (["train", "--data", "@no-header.csv", "--format", "table"],
                              "format 'table' needs a column mapping"),
    "columns bad": (["train", "--data", "@no-header.csv", "--format", "table", "--columns",
                     "user"], "--columns must look like KEY=VALUE"),
    "no usable events": (["train", "--data", "@noon.inter"],
                         "no usable events after preprocessing"),
    "empty file": (["train", "--data", "@empty.inter"], "empty.inter"),
    # checkpoints
    "missing checkpoint": (["evaluate", "@nothing.pt"], "no checkpoint at"),
    "run folder": (["evaluate", "@gru"], "is a folder: pass a checkpoint.pt file, e.g."),
    "flipped byte": (["evaluate", "@flipped.pt"], "is damaged: its content does not match"),
    "garbage": (["recommend", "@garbage.pt", "--user", "1"], "is not a stseq checkpoint"),
    "missing key": (["evaluate", "@incomplete.pt"], "is incomplete: it lacks optimizer"),
    "data changed": (["evaluate", "@changed-run/markov/checkpoint.pt"],
                     "has changed since it was trained: items 9 in the checkpoint, 10 now"),
    "resume another item count": (["train", *TINY[:-1], "--synthetic", "num_items=31",
                                   "--no-progress", *GRU, "--out", "@gru", "--resume"],
                                  "items 30 in the checkpoint, 31 now"),
    "resume nothing": (["train", "--out", "@empty-run", "--resume"], "there is no run in"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_errors_exit_2_with_one_line(case, files, capsys, monkeypatch):
    argv, expected = CASES[case]
    monkeypatch.chdir(files["root"])
    code = main(fill(argv, files))
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.count("\n") == 1 and error.startswith("stseq"), error
    assert "Traceback" not in error and expected in error, error


def test_debug_shows_the_traceback(files, monkeypatch):
    monkeypatch.chdir(files["root"])
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        main(["--debug", "evaluate", "nothing.pt"])
    monkeypatch.setenv("STSEQ_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        main(["evaluate", "nothing.pt"])
