"""The trainer: a full run with its files, exact resume, early stopping, baselines, losses, data
parallelism over 2 gloo processes, and bad configuration."""

import io
import json
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stseq.data import leave_one_out, synthetic
from stseq.eval import MarkovChain, evaluate
from stseq.models import build_model
from stseq.train import (Progress, TrainConfig, Trainer, load_checkpoint, seed_everything,
                         shard_batch)

CONFIG = TrainConfig(epochs=2, batch_size=8, max_length=8, lr=1e-2, warmup_steps=2,
                     progress=False)


def small_split():
    data = synthetic(num_users=20, num_items=25, min_length=4, max_length=12, seed=5)
    return leave_one_out(data.interactions)


@pytest.fixture(scope="module")
def split():
    return small_split()


def fresh(name, split, seed=0, **options):
    seed_everything(seed)
    return build_model(name, split.train, **{"dim": 16, "max_length": 8, "dropout": 0.0,
                                             **options})


def test_fit_writes_logs_checkpoint_and_charts(split, tmp_path):
    config = replace(CONFIG, out=str(tmp_path), progress=True)
    result = Trainer(fresh("gru4rec", split), split, config).fit()
    assert [row["epoch"] for row in result["history"]] == [1, 2]
    assert result["test"]["NDCG@10"] >= 0 and set(result["test"]) >= {"HR@10", "NDCG@20"}
    assert 1 <= result["best_epoch"] <= 2
    logged = json.loads((tmp_path / "metrics.json").read_text())
    assert logged[-1]["train_loss"] == pytest.approx(result["history"][-1]["train_loss"])
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "valid_NDCG@10", "targets_per_s", "lr"} <= set(header)
    assert json.loads((tmp_path / "results.json").read_text())["test"] == result["test"]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def comparable(state):
    """The parts of a checkpoint that an exact resume must reproduce bit for bit."""
    history = [{k: v for k, v in row.items() if "seconds" not in k and "per_s" not in k}
               for row in state["history"]]
    return {"history": history, "epoch": state["epoch"], "step": state["step"],
            "best": (state["best_epoch"], state["best_value"]), "model": state["model"],
            "best_model": state["best_model"], "optimizer": state["optimizer"]["state"],
            "scheduler": state["scheduler"], "torch_rng": state["rng"]["torch"],
            "batch_order": state["rng"]["batches"]["state"]}


@pytest.mark.parametrize("window_phase", ["end", "random"])
def test_resume_is_exact(split, tmp_path, window_phase):
    """1 epoch, save, new trainer, load, 1 more == 2 epochs straight (dropout, the SVAE's
    sampled latent, batch order, the windows of a random phase, AdamW and the schedule all
    continue exactly)."""
    options = {"dropout": 0.2, "latent_dim": 8}
    config = replace(CONFIG, window_phase=window_phase)
    straight = replace(config, out=str(tmp_path / "straight"))
    Trainer(fresh("svae", split, **options), split, straight).fit()
    interrupted = replace(config, out=str(tmp_path / "interrupted"))
    first = Trainer(fresh("svae", split, **options), split, interrupted)
    assert first.fit(epochs=1)["test"] is None  # unfinished: no test evaluation yet
    resumed = Trainer(fresh("svae", split, seed=123, **options), split, interrupted)
    resumed.load(tmp_path / "interrupted" / "checkpoint.pt")
    assert resumed.fit()["test"] is not None
    expected = comparable(load_checkpoint(tmp_path / "straight" / "checkpoint.pt"))
    actual = comparable(load_checkpoint(tmp_path / "interrupted" / "checkpoint.pt"))
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_early_stopping_restores_the_best_epoch(split):
    config = replace(CONFIG, epochs=5, patience=1, lr=1e-12)  # nothing improves
    trainer = Trainer(fresh("gru4rec", split), split, config)
    result = trainer.fit()
    assert result["stopped_early"] and len(result["history"]) == 2
    assert result["best_epoch"] == 1


def test_counting_baseline_is_fitted(split, tmp_path):
    result = Trainer(build_model("markov", split.train), split,
                     replace(CONFIG, out=str(tmp_path))).fit()
    expected = evaluate(MarkovChain(split.train), split.interactions, split.test, max_length=8)
    assert result["test"] == expected.metrics
    assert load_checkpoint(tmp_path / "checkpoint.pt")["spec"]["name"] == "markov"


@pytest.mark.parametrize("loss", ["sampled", "bce"])
def test_sampled_losses_train(split, loss):
    config = replace(CONFIG, epochs=1, loss=loss, num_negatives=5)
    result = Trainer(fresh("sasrec", split, backend="reference", dim=32), split, config).fit()
    assert torch.isfinite(torch.tensor(result["history"][0]["train_loss"]))


def test_shard_batch_splits_rows(split):
    trainer = Trainer(fresh("gru4rec", split), split, CONFIG)
    batch = next(iter(trainer.batches))
    parts = [shard_batch(batch, rank, 3) for rank in range(3)]
    assert sum(len(part.users) for part in parts) == len(batch.users)
    torch.testing.assert_close(parts[1].items, batch.items[1::3])
    assert parts[2].pad_item == batch.pad_item


def _data_parallel_worker(rank, world_size, init_file, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        split = small_split()
        trainer = Trainer(fresh("gru4rec", split), split, CONFIG)
        batch = next(iter(trainer.batches))
        loss = trainer.train_step(batch)
        torch.save({"loss": loss, "grads": {name: p.grad for name, p in
                                            trainer.model.named_parameters()},
                    "params": trainer.model.state_dict()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_data_parallel_matches_one_process(split, tmp_path):
    """2 CPU processes (gloo) on halves of a batch give the loss, gradients and updated
    weights of one process on the whole batch."""
    mp.spawn(_data_parallel_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    trainer = Trainer(fresh("gru4rec", split), split, CONFIG)
    loss = trainer.train_step(next(iter(trainer.batches)))
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["loss"] == pytest.approx(loss, rel=1e-6)
        for name, parameter in trainer.model.named_parameters():
            torch.testing.assert_close(result["grads"][name], parameter.grad, rtol=1e-5,
                                       atol=1e-7)
        # one AdamW step divides by sqrt(v) ~ |grad|: rounding-level gradient differences move
        # a weight by a small fraction of the step size (5e-3 here)
        torch.testing.assert_close(result["params"], trainer.model.state_dict(), rtol=1e-5,
                                   atol=1e-5)


def test_progress_line():
    stream = io.StringIO()
    progress = Progress("epoch 1/3", total=2, stream=stream)
    assert stream.getvalue() == "epoch 1/3 [....................] 0/2 batches | starting\n"
    progress.update(targets=100, loss=2.0)
    assert "1/2 batches" in progress.line() and " s left" in progress.line()
    progress.update(targets=300, loss=1.0)
    progress.close(" | valid NDCG@10 0.5")
    line = stream.getvalue().splitlines()[-1]
    assert "epoch 1/3" in line and "2/2 batches" in line and "targets/s" in line
    assert "loss 1.2500" in line and line.endswith("valid NDCG@10 0.5")
    assert "s left" not in line


def test_progress_redraws_a_terminal_line_in_place(monkeypatch):
    stream = io.StringIO()
    stream.isatty = lambda: True
    monkeypatch.setattr("stseq.train.progress.REFRESH_SECONDS", 0.0)
    progress = Progress("epoch 1/1", total=2, stream=stream)
    progress.update(targets=10, loss=1.0)
    progress.update(targets=10, loss=1.0)
    progress.close()
    drawn = stream.getvalue()
    assert drawn.count("\n") == 1 and drawn.count("\r") == 4  # start, 2 updates, close
    first, longer = drawn.split("\r")[1], drawn.split("\r")[2]
    assert len(longer) >= len(first)


def test_epoch_lines_say_the_time_left(split, capsys):
    Trainer(fresh("gru4rec", split), split, replace(CONFIG, epochs=2, progress=True)).fit()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 1/2 [") and lines[0].endswith("| starting")
    assert "| at most 1 more epoch, about " in lines[1]
    assert lines[3].startswith("epoch 2/2") and "more epoch" not in lines[3]


def test_bad_configuration(split, tmp_path):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="metric must be one of"):
        TrainConfig(metric="NDCG@5")
    for stride in (0, 51, 2.0, True):
        with pytest.raises(ValueError, match="stride must be an integer in"):
            TrainConfig(stride=stride)
    with pytest.raises(ValueError, match="window_phase must be one of"):
        TrainConfig(window_phase="start")
    with pytest.raises(ValueError, match="loss must be one of"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="num_negatives applies to the sampled losses"):
        TrainConfig(num_negatives=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a stseq checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    trainer = Trainer(fresh("gru4rec", split), split, replace(CONFIG, out=str(tmp_path)))
    trainer.save()
    with pytest.raises(ValueError, match="model gru4rec in the checkpoint, lstm now"):
        Trainer(fresh("lstm", split), split, CONFIG).load(tmp_path / "checkpoint.pt")


def test_window_phase_defaults_to_the_models(split):
    def phase(trainer):
        return "random" if trainer.batches.redraw is not None else "end"

    assert phase(Trainer(fresh("sasrec", split, num_heads=1), split, CONFIG)) == "random"
    assert phase(Trainer(fresh("gru4rec", split), split, CONFIG)) == "end"
    assert phase(Trainer(fresh("gru4rec", split), split,
                         replace(CONFIG, window_phase="random"))) == "random"
    assert phase(Trainer(fresh("sasrec", split, num_heads=1), split,
                         replace(CONFIG, window_phase="end"))) == "end"


def test_overlapping_windows_train_every_target_once(split):
    trainer = Trainer(fresh("sasrec", split, num_heads=1), split, replace(CONFIG, stride=3))
    plain = Trainer(fresh("sasrec", split, num_heads=1), split, CONFIG)

    def targets(batches):
        return sum(int((b.next_items != b.pad_item).sum()) for b in batches)

    assert len(trainer.batches.users) > len(plain.batches.users)
    assert targets(trainer.batches) == targets(plain.batches) == \
        int((split.train.lengths - 1).clip(min=0).sum())
    result = trainer.fit()
    assert len(result["history"]) == CONFIG.epochs and result["test"]["NDCG@10"] >= 0
