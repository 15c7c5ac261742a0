"""Catalogue-scale run (issue 21): a generated Taobao-shaped log of ~10^7 events over ~10^6 items,
through the cache, leave-one-out; per model (time-decay GRU, TimeSASRec) a bounded number of
training steps with the full-softmax loss (fused item_logsumexp, never [rows, items]) and a
chunked full-ranking evaluation of a slice of test users; events/s, evaluation users/s and the
process's peak memory (VmHWM) after each model.

Usage: python scale_run.py OUT.json [events] [items] [steps] [eval_users]
"""
import json
import os
import sys
import time

import torch

import stseq
import stseq.models
from stseq.data.cache import load_cached
from stseq.data.generate import generate_log


def peak_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


out = sys.argv[1]
events, items = (int(float(a)) for a in (sys.argv[2:3] or ["1e7"]) + (sys.argv[3:4] or ["1e6"]))
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 4
eval_users = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
work = f"/tmp/stseq-scale-{events}-{items}"
os.makedirs(work, exist_ok=True)
record = {"command": "python benchmarks/results/scoring/scale_run.py " + " ".join(sys.argv[1:]),
          "threads": torch.get_num_threads(), "load_start": os.getloadavg(), "runs": []}
start = time.perf_counter()
csv = os.path.join(work, "log.csv")
if not os.path.exists(csv):
    generate_log(csv, events=events, users=events // 100, items=items, seed=0)
record["generate_seconds"] = time.perf_counter() - start
start = time.perf_counter()
data, status = load_cached("taobao", csv, os.path.join(work, "cache"), integer_ids=True)
split = stseq.data.leave_one_out(data)
record.update(load_seconds=time.perf_counter() - start, cache=status, events=int(len(data.items)),
              users=int(data.num_users), items=int(data.num_items), peak_mib_after_load=peak_mib())
print(json.dumps({k: v for k, v in record.items() if k != "runs"}), flush=True)
loss = stseq.models.build_loss("ce")
for name in ("time-decay-gru", "timesasrec"):
    torch.manual_seed(0)
    model = stseq.models.build_model(name, split.train)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    targets, step_seconds = 0, []
    for step, batch in enumerate(stseq.data.training_batches(split.train, batch_size=128,
                                                             max_length=50, seed=0)):
        if step == steps:
            break
        tic = time.perf_counter()
        total, count = model.training_loss(batch, loss)
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
        step_seconds.append(time.perf_counter() - tic)
        targets += count
        print(f"{name} step {step}: {step_seconds[-1]:.1f} s, loss {float(total.detach() / count):.3f}",
              flush=True)
    model.eval()
    test = split.test.select(slice(0, eval_users))
    tic = time.perf_counter()
    with torch.no_grad():
        result = stseq.eval.evaluate(model.item_scores, split.interactions, test, ks=(10,))
    eval_seconds = time.perf_counter() - tic
    run = {"model": name, "steps": len(step_seconds), "targets": targets,
           "train_seconds": sum(step_seconds), "events_per_s": targets / sum(step_seconds),
           "eval_users": len(test), "eval_seconds": eval_seconds,
           "eval_users_per_s": len(test) / eval_seconds, "NDCG@10": result["NDCG@10"],
           "peak_mib": peak_mib()}
    print(json.dumps(run), flush=True)
    record["runs"].append(run)
    record["load_end"] = os.getloadavg()
    with open(out + ".partial", "w") as file:
        json.dump(record, file, indent=1)
    os.replace(out + ".partial", out)
    del model, optimizer
