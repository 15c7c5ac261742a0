"""The trainer: AdamW with warm-up and cosine decay, bfloat16 autocast on GPU, gradient clipping,
early stopping on validation NDCG@10, checkpoints with exact resume, progress with throughput,
JSON/CSV logs and PNG curves, and data parallelism over torch.distributed.
"""

import copy
import dataclasses
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from stseq.data import Prefetched, training_batches
from stseq.data.batching import WINDOW_PHASES
from stseq.eval import evaluate, metric_names
from stseq.models.losses import build_loss
from stseq.train.checkpoint import (CHECKPOINT_FORMAT, CheckpointError, capture_rng,
                                    load_checkpoint, resume_differences, restore_rng,
                                    save_checkpoint, split_fingerprint)
from stseq.train.logs import plot_curves, write_csv, write_json
from stseq.train.progress import Progress

logger = logging.getLogger("stseq.train")

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainConfig:
    """How to train.

    Fields:
        epochs: most passes over the training transitions.
        batch_size: windows per step (the global batch under data parallelism).
        max_length: events per window (and history given to the model when evaluating).
        stride: events between the ends of a user's consecutive training windows (None:
            ``max_length``, windows that do not overlap); smaller overlaps them so that every
            target is trained once with at least ``max_length - stride + 1`` events of history,
            at about ``max_length / stride`` times the cost per epoch
            (``stseq.data.training_batches``).
        window_phase: ``"end"`` (the same windows every epoch, ending at each user's last
            training event), ``"random"`` (each epoch shifts each user's windows by a random
            0..stride-1 events: other cuts of the sequences every epoch; see
            ``stseq.data.training_batches``) or None (the default): the model's
            ``window_phase``, "random" for the attention recommenders (on fixed windows they fit
            the cuts), "end" for the others (the time-decay GRU did worse with "random").
        lr, weight_decay: AdamW's (weight decay on matrices only, not on biases or norms).
        warmup_steps: linear warm-up; then cosine decay to ``min_lr_ratio * lr`` at the end.
        clip_norm: gradient-norm clipping (None: off).
        patience: stop after this many epochs without a better validation ``metric``.
        metric: validation metric for early stopping and the best checkpoint.
        loss, num_negatives: ``stseq.models.losses.build_loss`` arguments ("ce" default).
        seed: seeds python, numpy, torch and the batch order.
        deterministic: ``torch.use_deterministic_algorithms(True)``.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        amp: bfloat16 autocast on CUDA (ignored on CPU).
        eval_batch_size: targets per evaluation chunk.
        progress: draw progress lines on stderr.
        out: folder for the checkpoint, metrics.json / .csv and curves.png (None: no files).
    """

    epochs: int = 20
    batch_size: int = 128
    max_length: int = 50
    stride: int | None = None
    window_phase: str | None = None
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    clip_norm: float | None = 1.0
    patience: int = 3
    metric: str = "NDCG@10"
    loss: str = "ce"
    num_negatives: int | None = None
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: bool = True
    eval_batch_size: int = 256
    progress: bool = True
    out: str | None = None

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_length", "patience", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.stride is not None and (isinstance(self.stride, bool)
                                        or not isinstance(self.stride, int)
                                        or not 1 <= self.stride <= self.max_length):
            raise ValueError(f"stride must be an integer in [1, max_length={self.max_length}] "
                             f"or None, got {self.stride!r}")
        if self.window_phase is not None and self.window_phase not in WINDOW_PHASES:
            raise ValueError(f"window_phase must be one of {WINDOW_PHASES}, got "
                             f"{self.window_phase!r}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError(f"lr must be > 0 and weight_decay, warmup_steps >= 0, got "
                             f"{self.lr}, {self.weight_decay}, {self.warmup_steps}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")
        if self.metric not in metric_names((10,)):
            raise ValueError(f"metric must be one of {metric_names((10,))}, got {self.metric!r}")
        build_loss(self.loss, num_negatives=self.num_negatives)  # validates both


def seed_everything(seed, *, deterministic=False):
    """Seed python, numpy and torch (all devices); optionally make torch deterministic.

    Example::

        seed_everything(0, deterministic=True)
        model = stseq.models.build_model("gru4rec", split.train)   # same weights every run
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def resolve_device(name):
    """``torch.device`` for ``"auto"`` (the current CUDA device when there is one), ``"cpu"``,
    ``"cuda[:N]"``."""
    if name == "auto":
        return (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                else torch.device("cpu"))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def shard_batch(batch, rank, world_size):
    """Rows ``rank::world_size`` of a ``Batch`` (this process's part of a global batch).

    Example::

        local = shard_batch(batch, dist.get_rank(), dist.get_world_size())
    """
    rows = torch.arange(rank, len(batch.users), world_size, device=batch.users.device)
    return dataclasses.replace(batch, **{
        field.name: getattr(batch, field.name).index_select(0, rows)
        for field in dataclasses.fields(batch) if isinstance(getattr(batch, field.name),
                                                              torch.Tensor)})


class Objective(torch.nn.Module):
    """``model.training_loss`` as a module's forward (what DistributedDataParallel wraps)."""

    def __init__(self, model, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch):
        return self.model.training_loss(batch, self.loss)


def _learning_rate_factor(step, warmup_steps, total_steps, min_ratio):
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Trains a ``stseq.models`` recommender on a ``stseq.data.Split``.

    Every epoch passes over all training transitions (``training_batches``), then evaluates the
    validation targets (full ranking); the best epoch by ``config.metric`` is kept, training
    stops after ``patience`` epochs without improvement, and ``fit`` ends by restoring the best
    weights and evaluating the test targets. Counting baselines are fitted instead.

    Under ``torch.distributed`` (e.g. launched with ``torchrun``; the process group must be
    initialised first, gloo on CPU or nccl on GPU), every process draws the same global batch
    and trains on its rows ``rank::world_size`` through DistributedDataParallel; the loss is
    normalised by the global number of targets, so losses and gradients equal one process's on
    the whole batch. Only rank 0 writes files.

    Args:
        model: from ``stseq.models.build_model``.
        split: ``stseq.data.Split``.
        config: ``TrainConfig``.
        data_spec: JSON-able description of the data, stored in checkpoints so that
            ``stseq evaluate`` / ``recommend`` can reload it.

    Example::

        seed_everything(0)
        model = stseq.models.build_model("timesasrec", split.train)
        trainer = Trainer(model, split, TrainConfig(epochs=10, out="runs/timesasrec"))
        result = trainer.fit()
        result["test"]["NDCG@10"]
    """

    def __init__(self, model, split, config=None, *, data_spec=None):
        self.config = config = config or TrainConfig()
        self.model, self.split, self.data_spec = model, split, data_spec
        self.device = resolve_device(config.device)
        self.rank, self.world_size = ((dist.get_rank(), dist.get_world_size())
                                      if dist.is_available() and dist.is_initialized() else (0, 1))
        self.out = Path(config.out) if config.out is not None and self.rank == 0 else None
        self.epoch, self.step = 0, 0
        self.history, self.best_epoch, self.best_value, self.bad_epochs = [], 0, -math.inf, 0
        self.best_state, self.finished = None, False
        seed_everything(config.seed, deterministic=config.deterministic)
        if not model.trainable:
            return
        self.model.to(self.device)
        self.loss = build_loss(config.loss, num_negatives=config.num_negatives)
        self.batches = training_batches(split.train, batch_size=config.batch_size,
                                        max_length=config.max_length, stride=config.stride,
                                        window_phase=config.window_phase
                                        or getattr(model, "window_phase", "end"),
                                        seed=config.seed)
        if len(self.batches) == 0:
            raise ValueError("the training split has no transitions (every user needs two "
                             "events)")
        self.objective = Objective(model, self.loss)
        if self.world_size > 1:
            self.objective = DistributedDataParallel(
                self.objective, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
        total = config.epochs * len(self.batches)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _learning_rate_factor(
                step, config.warmup_steps, total, config.min_lr_ratio))

    # Steps ------------------------------------------------------------------------------------
    def autocast(self):
        """bfloat16 autocast on CUDA when ``config.amp``; a no-op elsewhere."""
        return torch.autocast("cuda", dtype=torch.bfloat16,
                              enabled=self.config.amp and self.device.type == "cuda")

    def train_step(self, batch):
        """One optimiser step on a (global) training batch; returns its mean loss over all
        targets of the global batch."""
        batch = batch.to(self.device, non_blocking=True)
        targets = int((batch.next_items != batch.pad_item).sum())
        if self.world_size > 1:
            batch = shard_batch(batch, self.rank, self.world_size)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            total, _ = self.objective(batch)
        # DDP averages gradients over processes: scale so the result is sum / global targets
        (total * (self.world_size / max(targets, 1))).backward()
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        loss = total.detach().float()
        if self.world_size > 1:
            dist.all_reduce(loss)
        return float(loss) / max(targets, 1)

    def train_epoch(self, progress=None):
        """One pass over the training transitions -> {"train_loss", "targets_per_s", ...};
        ``progress``: a ``Progress`` to update (default: a silent one)."""
        if progress is None:
            progress = Progress("", len(self.batches), enabled=False)
        for batch in Prefetched(self.batches, pin_memory=self.device.type == "cuda"):
            targets = int((batch.next_items != batch.pad_item).sum())
            progress.update(targets=targets, loss=self.train_step(batch))
        return {"train_loss": progress.mean_loss, "train_seconds": progress.elapsed,
                "targets_per_s": progress.throughput, "lr": self.scheduler.get_last_lr()[0]}

    def evaluate(self, targets, *, ks=(10, 20), exclude_seen=False):
        """``stseq.eval.evaluate`` of the model on ``targets`` of the split (full ranking)."""
        if not self.model.trainable:
            return evaluate(self.model.score, self.split.interactions, targets, ks=ks,
                            max_length=self.config.max_length,
                            batch_size=self.config.eval_batch_size, exclude_seen=exclude_seen)
        self.model.eval()
        with self.autocast():
            return evaluate(self.model.item_scores, self.split.interactions, targets, ks=ks,
                            max_length=self.config.max_length,
                            batch_size=self.config.eval_batch_size, exclude_seen=exclude_seen,
                            device=self.device)

    # The loop ---------------------------------------------------------------------------------
    def fit(self, epochs=None):
        """Train until ``config.epochs`` (or early stopping), at most ``epochs`` more epochs in
        this call (None: no limit; a later ``fit`` or a resumed trainer goes on). When training
        ends: restore the best weights, evaluate the test targets.

        Returns:
            {"history": per-epoch records, "best_epoch", "best_valid", "test": metrics dict or
            None while unfinished, "stopped_early", "train_seconds"}.
        """
        if not self.model.trainable:
            return self._fit_baseline()
        config = self.config
        metric = config.metric
        remaining = config.epochs - self.epoch if epochs is None else epochs
        while remaining > 0 and not self.finished:
            remaining -= 1
            progress = Progress(f"epoch {self.epoch + 1}/{config.epochs}", len(self.batches),
                                enabled=config.progress and self.rank == 0)
            record = {"epoch": self.epoch + 1, **self.train_epoch(progress)}
            suffix = ""
            if len(self.split.valid):
                start = time.perf_counter()
                valid = self.evaluate(self.split.valid, ks=(10,))
                record.update({f"valid_{k}": v for k, v in valid.metrics.items()})
                record["valid_seconds"] = time.perf_counter() - start
                suffix = f" | valid {metric} {valid[metric]:.4f}"
                value = valid[metric]
            else:
                value = -record["train_loss"]
            self.epoch += 1
            self.history.append(record)
            if value > self.best_value:
                self.best_value, self.best_epoch, self.bad_epochs = value, self.epoch, 0
                self.best_state = copy.deepcopy(self.model.state_dict())
            else:
                self.bad_epochs += 1
            stopped = self.bad_epochs >= config.patience
            self.finished = stopped or self.epoch >= config.epochs
            progress.close(suffix + self._time_left())
            if stopped:
                logger.info("early stop after epoch %d: no better validation %s for %d epochs",
                            self.epoch, metric, config.patience)
            self.save()
            self._write_logs()
        return self._finish()

    def _time_left(self):
        """The progress suffix ``" | at most N more epochs, about S s"``, at the mean pace of
        the epochs so far (empty after the last epoch)."""
        epochs = self.config.epochs - self.epoch
        if epochs <= 0 or self.finished:
            return ""
        seconds = epochs * sum(row["train_seconds"] + row.get("valid_seconds", 0.0)
                               for row in self.history) / len(self.history)
        return f" | at most {epochs} more epoch{'s' * (epochs > 1)}, about {seconds:.0f} s"

    def _finish(self):
        result = {"history": self.history, "best_epoch": self.best_epoch,
                  "best_valid": self.best_value if self.best_epoch else None, "test": None,
                  "stopped_early": self.finished and self.epoch < self.config.epochs,
                  "train_seconds": sum(row["train_seconds"] for row in self.history)}
        if self.finished:
            self.model.load_state_dict(self.best_state)
            result["test"] = self.evaluate(self.split.test).metrics
            if self.out is not None:
                write_json(self.out / "results.json", {k: v for k, v in result.items()
                                                       if k != "history"})
                plot_curves(self.history, self.out / "curves.png", metric=self.config.metric)
        return result

    def _fit_baseline(self):
        start = time.perf_counter()
        self.model.fit(self.split.train)
        self.finished = True
        seconds = time.perf_counter() - start
        valid = self.evaluate(self.split.valid, ks=(10,)).metrics if len(self.split.valid) else {}
        self.history = [{"epoch": 0, "train_seconds": seconds,
                         **{f"valid_{k}": v for k, v in valid.items()}}]
        self.save()
        return {"history": self.history, "best_epoch": 0, "best_valid": valid.get(
                    self.config.metric), "test": self.evaluate(self.split.test).metrics,
                "stopped_early": False, "train_seconds": seconds}

    def _write_logs(self):
        if self.out is None:
            return
        write_json(self.out / "metrics.json", self.history)
        write_csv(self.out / "metrics.csv", self.history)

    # Checkpoints ------------------------------------------------------------------------------
    @property
    def data_fingerprint(self):
        """``split_fingerprint`` of the trainer's split (stored in checkpoints)."""
        return split_fingerprint(self.split)

    def checkpoint(self):
        """Everything needed to resume exactly, as a dict of tensors and plain values (see
        ``save``)."""
        state = {"format": CHECKPOINT_FORMAT, "spec": self.model.spec,
                 "trainable": bool(self.model.trainable), "data": self.data_spec, "data_fingerprint": self.data_fingerprint,
                 "config": dataclasses.asdict(self.config), "epoch": self.epoch,
                 "finished": self.finished, "history": self.history,
                 "best_epoch": self.best_epoch, "best_value": self.best_value,
                 "bad_epochs": self.bad_epochs}
        if not self.model.trainable:
            return state
        state.update(
            model=self.model.state_dict(), best_model=self.best_state, step=self.step,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            rng=capture_rng(self.batches._rng))
        return state

    def save(self, path=None):
        """Write the checkpoint (model, best model, optimizer, scheduler, RNG states, epoch,
        history, model spec, data spec and the fingerprints of data and configuration) to
        ``path`` (default ``out/checkpoint.pt``) atomically: a crash during the save leaves the
        previous checkpoint. Only rank 0 writes. Returns the path or None."""
        if path is None:
            if self.out is None:
                return None
            path = self.out / CHECKPOINT_NAME
        elif self.rank != 0:
            return None
        return save_checkpoint(self.checkpoint(), path)

    def load(self, path):
        """Restore the state saved by ``save`` so that ``fit`` continues exactly where the
        saved run was (same batches, dropout masks, negatives and optimizer state). A
        ``CheckpointError`` refuses a checkpoint of another model, data or configuration and
        says what differs.

        Example::

            trainer = Trainer(model, split, config)
            trainer.load("runs/x/checkpoint.pt")
            trainer.fit()
        """
        state = load_checkpoint(path)
        differences = resume_differences(
            state, spec=self.model.spec, config=dataclasses.asdict(self.config),
            data_fingerprint=self.data_fingerprint, data_spec=self.data_spec)
        if differences:
            raise CheckpointError(f"{path} is the checkpoint of another run; not resuming it: "
                                  + "; ".join(differences))
        self.epoch, self.finished = state["epoch"], state["finished"]
        self.history = state["history"]
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.bad_epochs = state["bad_epochs"]
        if not self.model.trainable:
            return self
        self.model.load_state_dict(state["model"])
        self.best_state, self.step = state["best_model"], state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.batches._rng)
        self.batches.passes = self.epoch  # one pass per epoch: the next pass's windows
        return self
