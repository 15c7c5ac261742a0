"""Benchmark cases of the recommenders' training step: forward, full-softmax loss and backward
of one batch, the model's stseq.nn layers on the default kernels (``backend="auto"``) vs the
same model, same weights, on the eager reference twins. Dropout is off so both compute the same
gradients; the optimiser step (identical work for both) is left out.

The issue's target: the default kernels train at least 1.3x faster than the reference on CPU.
"""

import torch

from stseq.bench import measure
from stseq.data import leave_one_out, synthetic, training_batches
from stseq.models import MODELS, FullSoftmax, build_model

PEER = "same model on reference twins"
TRAINABLE = [name for name, cls in MODELS.items() if cls.trainable]
_DATA = dict(num_users=300, num_items=2000, min_length=20, max_length=100, seed=0)
_BASE = dict(batch=128, seq_len=50, dim=128)
# The README's default time-aware model at the trainer's default shape; the full grid: every
# trainable model.
QUICK = [dict(_BASE, model="time-decay-gru")]
FULL = [dict(_BASE, model=name) for name in TRAINABLE]
DTYPES = {"cpu": (torch.float32,), "cuda": (torch.float32, torch.bfloat16)}
# Parity of every gradient of a whole model: each op is within measure.TOLERANCES of its twin,
# and the rounding differences compound through the layers, the attention pooling and the loss
# (float32 models land between 4e-7 and 1e-5), so ten times the one-op tolerance.
TOLERANCES = {dtype: 10 * tolerance for dtype, tolerance in measure.TOLERANCES.items()}


def make_case(*, model, batch, seq_len, dim, device="cpu", seed=0):
    """(native model, reference model with the same weights, one training batch) on
    ``device``; the synthetic data has coordinates, so the geo models use them."""
    train = leave_one_out(synthetic(**_DATA).interactions).train
    torch.manual_seed(seed)
    fast = build_model(model, train, dim=dim, max_length=seq_len, dropout=0.0, backend="auto")
    slow = build_model(model, train, dim=dim, max_length=seq_len, dropout=0.0,
                       backend="reference")
    slow.load_state_dict(fast.state_dict())
    rows = next(iter(training_batches(train, batch_size=batch, max_length=seq_len, seed=seed)))
    return fast.to(device), slow.to(device), rows.to(device)


def training_step(model, batch, dtype):
    """Loss forward + backward of one batch (autocast to ``dtype`` unless float32) -> the
    gradients of every trainable parameter. Seeded, so that SVAE draws the same latent noise for
    both backends."""
    torch.manual_seed(0)
    parameters = [p for p in model.parameters() if p.requires_grad]
    device_type = batch.items.device.type
    with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32):
        total, count = model.training_loss(batch, FullSoftmax())
    return torch.autograd.grad(total / count, parameters)


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn) for every model of the grid."""
    for shape in grid:
        fast, slow, batch = make_case(**shape, device=device)
        fast.train()
        slow.train()
        label = ",".join(f"{key}={value}" for key, value in shape.items())
        yield ("model training step", label,
               lambda fast=fast, batch=batch: training_step(fast, batch, dtype),
               lambda slow=slow, batch=batch: training_step(slow, batch, dtype))
