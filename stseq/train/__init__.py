"""Training: ``Trainer`` (AdamW, bfloat16 autocast on GPU, gradient clipping, early stopping on
validation NDCG@10, exact-resume checkpoints, progress with throughput, JSON/CSV logs, PNG
curves, DistributedDataParallel), ``TrainConfig`` and helpers.

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

from stseq.train.logs import plot_comparison, plot_curves, write_csv, write_json
from stseq.train.progress import Progress
from stseq.train.trainer import (Objective, TrainConfig, Trainer, load_checkpoint,
                                 resolve_device, seed_everything, shard_batch)

__all__ = ["Objective", "Progress", "TrainConfig", "Trainer", "load_checkpoint",
           "plot_comparison", "plot_curves", "resolve_device", "seed_everything",
           "shard_batch", "write_csv", "write_json"]
