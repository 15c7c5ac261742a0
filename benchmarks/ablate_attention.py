"""Ablations of the attention recommenders: train one model under one set of options for
several seeds on one data set and append one JSON line per run (best validation NDCG@10, test
NDCG@10 / HR@10 of the best epoch, seconds per epoch, threads, load average).

Example::

    OMP_NUM_THREADS=1 python benchmarks/ablate_attention.py --model sasrec --seeds 0 1 \
        --epochs 10 --tag dropout0.5 --option dropout=0.5 \
        --out benchmarks/results/models/sasrec-ablations/runs.jsonl
"""

import argparse
import json
import os
import time

import numpy as np
import torch

from stseq.data.batching import WINDOW_PHASES
from stseq.data.splits import Split
from stseq.models import build_model
from stseq.train.command import DEFAULT_BATCH_SIZE, DEFAULT_LR, key_values
from stseq.train.experiment import data_spec, load_data
from stseq.train.trainer import TrainConfig, Trainer, seed_everything


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="ml-100k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--warmup-steps", type=int, default=TrainConfig.warmup_steps)
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay)
    parser.add_argument("--stride", type=int, default=None,
                        help="TrainConfig.stride (default: max_length, no overlap)")
    parser.add_argument("--window-phase", default=None, choices=WINDOW_PHASES,
                        help="TrainConfig.window_phase: end or random (default: the model's)")
    parser.add_argument("--train-shift", type=int, default=0,
                        help="diagnostic: shorten (< 0) or lengthen (> 0) each user's training "
                             "prefix by this many events (-1: the validation target then has "
                             "two events never seen as inputs before it, as the test target "
                             "has; +1 trains on the validation target)")
    parser.add_argument("--track-test", action="store_true",
                        help="also evaluate the test targets after every epoch (recorded as "
                             "test_curve; never used to select the epoch)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = data_spec(args.data)
    _, _, split = load_data(spec)
    if args.train_shift:
        lengths = np.clip(split.train.lengths + args.train_shift, 1, split.interactions.lengths)
        split = Split(split.interactions, split.interactions.prefix(lengths), split.valid,
                      split.test, f"{split.name}, training shifted by {args.train_shift}")
    options = {"max_length": 50, **key_values(args.option, "--option")}
    for seed in args.seeds:
        seed_everything(seed)
        model = build_model(args.model, split.train, **options)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                             stride=args.stride, window_phase=args.window_phase,
                             patience=args.patience, seed=seed,
                             device="cpu", progress=False)
        start = time.perf_counter()
        trainer = Trainer(model, split, config)
        test_curve = []
        if args.track_test:  # one epoch at a time, the test figure of each epoch on the side
            while not trainer.finished:
                trainer.fit(epochs=1)  # the last call restores the best epoch's weights
                this_epoch = not trainer.finished or trainer.best_epoch == trainer.epoch
                test_curve.append(round(trainer.evaluate(split.test, ks=(10,))["NDCG@10"], 4)
                                  if this_epoch else None)  # None: that epoch's weights are gone
        result = trainer.fit()
        seconds = time.perf_counter() - start
        history = result["history"]
        row = {"tag": args.tag, "model": args.model, "data": args.data, "seed": seed,
               "options": options, "lr": args.lr, "batch_size": args.batch_size,
               "warmup_steps": args.warmup_steps,
               "weight_decay": args.weight_decay, "stride": args.stride,
               "window_phase": args.window_phase or model.window_phase,
               **({"train_shift": args.train_shift} if args.train_shift else {}),
               "epochs": len(history),
               "best_epoch": result["best_epoch"], "valid_NDCG@10": result["best_valid"],
               "valid_curve": [round(r["valid_NDCG@10"], 4) for r in history],
               **({"test_curve": test_curve} if args.track_test else {}),
               "test_NDCG@10": result["test"]["NDCG@10"], "test_HR@10": result["test"]["HR@10"],
               "seconds": seconds,
               "train_seconds_per_epoch": sum(r["train_seconds"] for r in history) / len(history),
               "threads": torch.get_num_threads(), "loadavg": os.getloadavg()[0]}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as file:
            file.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
