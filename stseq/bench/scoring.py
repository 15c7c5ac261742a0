"""Benchmark cases of item scoring: ``item_logsumexp`` and the fused full-softmax cross-entropy
(forward + backward) against ``F.linear`` + ``torch.logsumexp`` / ``F.cross_entropy`` on the
materialised [M, N] logits; chunked full-ranking evaluation (rank of each user's target and
its top-10) against the same on materialised [users, N] scores; the default model's training
step with the fused loss against the same model with the materialised loss.

Where the [M, N] logits do not fit (N = 10^6: 25.6 GB of float32 logits for M = 6,400, and as
much again for their gradient, on a 24 GB machine) the peer is what a user would run instead:
the materialised loss over blocks of rows (each block's logits and gradient fit), summed.
Issue 21's CPU targets: fused CE at least as fast as the materialised path at N = 10^5
(M = 6,400, D = 128) with at most 1/20 of its peak memory; the training step >= 1.5x.
Evaluation throughput in users/s is users * 1000 / ms (the label gives the users).
``--scale [EVENTS]`` runs ``scale_run`` (at the end of this file) instead of the grid.
"""

import os
import time

import torch
import torch.nn.functional as F

from stseq.bench import measure
from stseq.eval.metrics import positions_from_counts, relevant_positions
from stseq.data import ItemScores
from stseq.eval.ranking import chunked_counts_above, chunked_topk
from stseq.models.losses import FullSoftmax
from stseq.ops import item_cross_entropy, item_logsumexp

PEER = "F.linear + F.cross_entropy (materialised)"
LSE_PEER = "F.linear + torch.logsumexp (materialised)"
BLOCK_PEER = "F.linear + F.cross_entropy over {blocks} row blocks ([M, N] does not fit)"
RANKING_PEER = "materialised [users, N] scores: rank counts + topk"
TRAINING_PEER = "same model, materialised loss (F.linear + F.cross_entropy)"
# Largest logits the materialised peers may build at once (float32 elements: 2.56 GB).
MATERIALISED_LIMIT = 6400 * 100_000
# In order of importance (a run stopped midway keeps the shapes measured so far): the issue's
# target shape, the training step, evaluation, 10^6 items (at M = 640: one fused forward +
# backward at M = 6,400 takes minutes on 2 shared cores, and the timing loop calls each function
# 1 + repeats times), then the rest of the grid.
FULL = ([dict(kind="loss", rows=6400, dim=128, items=100_000),
         dict(kind="training", items=100_000)]
        + [dict(kind="ranking", users=256, dim=128, items=n) for n in (100_000, 1_000_000)]
        + [dict(kind="loss", rows=640, dim=64, items=1_000_000, logsumexp=False)]
        + [dict(kind="loss", rows=6400, dim=d, items=n) for n, d in ((100_000, 64),
                                                                       (10_000, 64),
                                                                       (10_000, 128))])
QUICK = [dict(kind="loss", rows=256, dim=32, items=5000),
         dict(kind="ranking", users=64, dim=32, items=5000)]
# One warm-up call is the parity call itself: each call at N = 10^5 takes seconds.
WARMUP = 0


def make_loss_inputs(*, rows, dim, items, device="cpu", dtype=torch.float32, seed=0):
    """hidden [M, D], weight [N, D], bias [N] (leaves with gradients) and targets [M], scaled
    like a trained model's scores (a few units)."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=generator)
    weight = torch.randn(items, dim, generator=generator) * dim ** -0.5
    bias = torch.randn(items, generator=generator) * 0.1
    targets = torch.randint(0, items, (rows,), generator=generator)
    leaves = [x.to(device, dtype).requires_grad_() for x in (hidden, weight, bias)]
    return (*leaves, targets.to(device))


def _gradients(loss, leaves):
    return (loss.detach(), *torch.autograd.grad(loss, leaves))


def fused_cross_entropy(hidden, weight, bias, targets):
    """Mean fused cross-entropy and its gradients."""
    return _gradients(item_cross_entropy(hidden, weight, bias, targets), (hidden, weight, bias))


def materialised_cross_entropy(hidden, weight, bias, targets, *, blocks=1):
    """Mean F.linear + F.cross_entropy and its gradients, over ``blocks`` blocks of rows."""
    grads = [torch.zeros_like(x) for x in (hidden, weight, bias)]
    total = hidden.new_zeros(())
    for rows in torch.arange(len(targets), device=targets.device).chunk(blocks):
        loss = F.cross_entropy(F.linear(hidden[rows], weight, bias), targets[rows],
                               reduction="sum") / len(targets)
        total += loss.detach()
        for grad, part in zip(grads, torch.autograd.grad(loss, (hidden, weight, bias))):
            grad += part
    return (total, *grads)


def fused_logsumexp(hidden, weight, bias):
    return _gradients(item_logsumexp(hidden, weight, bias).mean(), (hidden, weight, bias))


def materialised_logsumexp(hidden, weight, bias):
    lse = torch.logsumexp(F.linear(hidden, weight, bias), dim=1)
    return _gradients(lse.mean(), (hidden, weight, bias))


def _loss_cases(shape, device, dtype):
    rows, dim, items = shape["rows"], shape["dim"], shape["items"]
    inputs = make_loss_inputs(rows=rows, dim=dim, items=items, device=device, dtype=dtype)
    label = f"M={rows},D={dim},N={items}"
    blocks = -(-rows * items // MATERIALISED_LIMIT)
    if shape.get("logsumexp", True) and blocks == 1:
        yield ("item_logsumexp fwd+bwd", label, lambda: fused_logsumexp(*inputs[:3]),
               lambda: materialised_logsumexp(*inputs[:3]), LSE_PEER)
    peer = PEER if blocks == 1 else BLOCK_PEER.format(blocks=blocks)
    yield ("fused CE fwd+bwd", label, lambda: fused_cross_entropy(*inputs),
           lambda: materialised_cross_entropy(*inputs, blocks=blocks), peer)


def _ranking_cases(shape, device, dtype):
    users, dim, items = shape["users"], shape["dim"], shape["items"]
    generator = torch.Generator().manual_seed(1)
    rows = torch.randn(users, dim, generator=generator).to(device, dtype)
    weight = (torch.randn(items, dim, generator=generator) * dim ** -0.5).to(device, dtype)
    relevant = torch.randint(0, items, (users, 1), generator=generator).to(device)

    def chunked():
        scores = ItemScores(lambda start, end: F.linear(rows, weight[start:end]),
                            lambda ids: torch.einsum("bd,brd->br", rows, weight[ids]), users,
                            items, rows.device)
        targets, above, _ = chunked_counts_above(scores, relevant)
        return positions_from_counts(above, targets, relevant), chunked_topk(scores, 10)[0]

    def materialised():
        scores = F.linear(rows, weight)  # [users, N]
        competing = torch.ones_like(scores, dtype=torch.bool).scatter_(1, relevant, False)
        return (relevant_positions(scores, relevant, competing), scores.topk(10, dim=1).values)

    yield ("full-ranking evaluation (rank + top-10)", f"users={users},D={dim},N={items}",
           chunked, materialised, RANKING_PEER)


def _training_cases(shape, device, dtype):
    from stseq.data import leave_one_out, synthetic, training_batches
    from stseq.models import DEFAULT_MODEL, build_model

    data = synthetic(num_users=300, num_items=shape["items"], min_length=20, max_length=100,
                     seed=0)
    train = leave_one_out(data.interactions).train
    torch.manual_seed(0)
    model = build_model(DEFAULT_MODEL, train, dim=128, max_length=50, dropout=0.0).to(device)
    batch = next(iter(training_batches(train, batch_size=128, max_length=50, seed=0)))
    batch = batch.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]

    def step(loss):
        total, count = model.training_loss(batch, loss)
        return torch.autograd.grad(total / count, parameters)

    yield (f"{DEFAULT_MODEL} training step, fused loss", f"B=128,L=50,D=128,N={shape['items']}",
           lambda: step(FullSoftmax()), lambda: step(FullSoftmax(fused=False)), TRAINING_PEER)


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn, peer) for every entry of the grid."""
    builders = {"loss": _loss_cases, "ranking": _ranking_cases, "training": _training_cases}
    for shape in grid:
        if shape.get("device", device.type) != device.type:
            continue
        yield from builders[shape["kind"]](shape, device, dtype)


# Full-softmax losses summed over 10^5..10^6 items in float32 in another order: relative
# differences of a few 1e-6 in the loss and of up to ~1e-5 in the largest gradients.
TOLERANCES = {dtype: 5 * tolerance for dtype, tolerance in measure.TOLERANCES.items()}


# The catalogue-scale run (``stseq bench --ops scoring --scale [EVENTS]``): a generated
# Taobao-shaped log of EVENTS events (10^7 by default), EVENTS / 100 users and 0.15 * EVENTS
# item ids (1.5 M at 10^7; about 0.85 M of them occur), through the binary cache,
# leave-one-out; per model a few training steps with the full-softmax loss (fused, never
# [rows, items]) and a chunked full-ranking evaluation of a slice of the test users.
SCALE_EVENTS = 10_000_000
SCALE_MODELS = ("time-decay-gru", "timesasrec")
SCALE_STEPS, SCALE_EVAL_USERS = 4, 2000
SCALE_PEER = "none: the materialised [rows, items] logits do not fit"


def _peak_mib():
    """This process's peak resident memory (VmHWM) in MiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def _reset_peak():
    """Restart VmHWM at the current resident size (Linux; elsewhere the peak stays the
    process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def _scale_row(op, shape, seconds, peak, load, **extra):
    return {"op": op, "shape": shape, "dtype": "float32", "stseq_ms": 1000 * seconds,
            "peer": SCALE_PEER, "peer_ms": float("nan"), "speedup": float("nan"),
            "max_error": 0.0, "parity_ok": True, "stseq_peak_mib": peak,
            "peer_peak_mib": float("nan"), "load_1min": load, **extra}


def scale_run(events=SCALE_EVENTS, *, workdir, steps=None, eval_users=None, models=SCALE_MODELS):
    """Result rows of the catalogue-scale run: per model one training row (ms per step,
    ``events_per_s`` = training targets per second) and one evaluation row (ms for
    ``eval_users`` users, ``users_per_s``), each with the process's peak memory since the
    model was built. The generated log and its cache stay in ``workdir`` for the next run.

    Example::

        rows = scale_run(10_000, workdir="/tmp/stseq-scale", steps=1, eval_users=50)
    """
    import stseq.eval
    import stseq.models
    from stseq.data import leave_one_out, training_batches
    from stseq.data.cache import load_cached
    from stseq.data.generate import generate_log

    steps = SCALE_STEPS if steps is None else steps
    eval_users = SCALE_EVAL_USERS if eval_users is None else eval_users
    items = max(1, int(events * 0.15))
    os.makedirs(workdir, exist_ok=True)
    csv = os.path.join(workdir, f"log-{events}-{items}.csv")
    if not os.path.exists(csv):
        generate_log(csv, events=events, users=max(1, events // 100), items=items, seed=0)
    data, _ = load_cached("taobao", csv, os.path.join(workdir, f"cache-{events}-{items}"),
                          integer_ids=True)
    split = leave_one_out(data)
    size = f"events={len(data.items)},users={data.num_users},items={data.num_items}"
    print(f"  scale run: {size}", flush=True)
    loss = stseq.models.build_loss("ce")
    rows = []
    for name in models:
        _reset_peak()
        torch.manual_seed(0)
        model = stseq.models.build_model(name, split.train)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        targets, seconds = 0, []
        batches = training_batches(split.train, batch_size=128, max_length=50, seed=0)
        for _, batch in zip(range(steps), batches):
            tic = time.perf_counter()
            total, count = model.training_loss(batch, loss)
            optimizer.zero_grad()
            (total / count).backward()
            optimizer.step()
            seconds.append(time.perf_counter() - tic)
            targets += count
        train_peak = _peak_mib()
        rows.append(_scale_row(f"{name} training step (scale run)", f"B=128,L=50,{size}",
                               sum(seconds) / len(seconds), train_peak, os.getloadavg()[0],
                               steps=len(seconds), events_per_s=targets / sum(seconds)))
        model.eval()
        test = split.test.select(slice(0, eval_users))
        tic = time.perf_counter()
        with torch.no_grad():
            result = stseq.eval.evaluate(model.item_scores, split.interactions, test, ks=(10,))
        elapsed = time.perf_counter() - tic
        rows.append(_scale_row(f"{name} full-ranking evaluation (scale run)",
                               f"eval_users={len(test)},{size}", elapsed, _peak_mib(),
                               os.getloadavg()[0], users_per_s=len(test) / elapsed,
                               ndcg_at_10=float(result["NDCG@10"])))
        del model, optimizer
    return rows
