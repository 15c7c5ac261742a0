"""Training: ``Trainer`` (AdamW, bfloat16 autocast on GPU, gradient clipping, early stopping on
validation NDCG@10, exact-resume checkpoints, progress with throughput, JSON/CSV logs, PNG
curves, DistributedDataParallel), ``TrainConfig`` and helpers.

Checkpoints (``stseq.train.checkpoint``) are written atomically, loaded with
``weights_only=True`` after their SHA-256 is verified, and refuse a resume with other data or
settings (``CheckpointError`` says what differs). ``stseq.train.runs`` gives every command-line
run its own folder.

Example::

    import stseq
    from stseq.train import Trainer, TrainConfig, seed_everything

    data = stseq.data.synthetic(seed=0)
    split = stseq.data.leave_one_out(data.interactions)
    seed_everything(0)
    model = stseq.models.build_model("timesasrec", split.train)
    result = Trainer(model, split, TrainConfig(epochs=10, out="runs/timesasrec")).fit()
    print(result["test"]["NDCG@10"])

    # resume an interrupted run exactly
    trainer = Trainer(stseq.models.build_model("timesasrec", split.train), split, config)
    trainer.load("runs/timesasrec/checkpoint.pt").fit()
"""

from stseq.train.checkpoint import (CheckpointError, load_checkpoint, save_checkpoint,
                                    split_fingerprint)
from stseq.files import atomic_write
from stseq.train.logs import plot_comparison, plot_curves, write_csv, write_json
from stseq.train.progress import Progress
from stseq.train.trainer import (Objective, TrainConfig, Trainer, resolve_device,
                                 seed_everything, shard_batch)

__all__ = ["CheckpointError", "Objective", "Progress", "TrainConfig", "Trainer", "atomic_write",
           "load_checkpoint", "plot_comparison", "plot_curves", "resolve_device",
           "save_checkpoint", "seed_everything", "shard_batch", "split_fingerprint",
           "write_csv", "write_json"]
