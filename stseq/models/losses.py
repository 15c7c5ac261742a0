"""Training losses over the item catalogue. Each is called as
``loss(hidden [M, D], targets [M], weight [N, D], bias [N], offsets=None) -> [M]`` per-target
losses, where ``weight`` / ``bias`` are the model's scoring layer, so sampled losses never build
the full [M, N] logits, and ``offsets`` (``SequentialRecommender.score_offsets``) is None or
further score terms: ``offsets(columns [M, K] item ids) -> [M, K]`` and
``offsets.add_to(logits [M, N]) -> [M, N]`` (``stseq.models.base.ScoreOffsets``).

- ``FullSoftmax`` (the default, ``"ce"``): cross-entropy over all N items.
- ``SampledSoftmax`` (``"sampled"``): cross-entropy over the target and ``num_negatives``
  uniformly drawn items shared by the batch (a negative equal to the row's target is masked).
- ``BinaryCrossEntropy`` (``"bce"``): the target against ``num_negatives`` uniform negatives
  per target, each scored by a sigmoid (the original SASRec loss).

Negatives come from torch's global generator, so seeding and checkpointing it (the trainer
does) makes them reproducible.
"""

import torch
import torch.nn.functional as F


class FullSoftmax:
    """Cross-entropy over every item.

    Example::

        loss = FullSoftmax()
        per_target = loss(hidden, targets, *model.output_weights())   # [M]
    """

    name = "ce"

    def __call__(self, hidden, targets, weight, bias, offsets=None):
        logits = F.linear(hidden, weight.to(hidden.dtype), bias.to(hidden.dtype)).float()
        if offsets is not None:
            logits = offsets.add_to(logits)  # [M, N]
        return F.cross_entropy(logits, targets, reduction="none")


class SampledSoftmax:
    """Cross-entropy over the target and ``num_negatives`` uniform negatives shared by all
    targets of the call (uniform proposal, so no log-Q correction is needed).

    Example::

        loss = SampledSoftmax(num_negatives=100)
        per_target = loss(hidden, targets, *model.output_weights())   # [M]
    """

    name = "sampled"

    def __init__(self, num_negatives=100):
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def __call__(self, hidden, targets, weight, bias, offsets=None):
        negatives = torch.randint(0, weight.shape[0], (self.num_negatives,),
                                  device=targets.device)  # [S]
        positive, negative = _scored(hidden, targets, negatives, weight, bias,
                                     offsets)  # [M], [M, S]
        negative = negative.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([positive[:, None], negative], dim=1)  # [M, 1 + S]
        return -torch.log_softmax(logits, dim=1)[:, 0]


class BinaryCrossEntropy:
    """Binary cross-entropy of the target (label 1) and ``num_negatives`` uniform negatives
    per target (label 0); a negative equal to the target is not counted.

    Example::

        loss = BinaryCrossEntropy(num_negatives=1)
        per_target = loss(hidden, targets, *model.output_weights())   # [M]
    """

    name = "bce"

    def __init__(self, num_negatives=1):
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def __call__(self, hidden, targets, weight, bias, offsets=None):
        negatives = torch.randint(0, weight.shape[0], (len(targets), self.num_negatives),
                                  device=targets.device)  # [M, S]
        positive, negative = _scored(hidden, targets, negatives, weight, bias, offsets)
        keep = (negatives != targets[:, None]).to(negative.dtype)
        return F.softplus(-positive) + (F.softplus(negative) * keep).sum(dim=1)


def _scored(hidden, targets, negatives, weight, bias, offsets):
    """float32 scores of each row's target [M] and of its negatives (item ids [S] shared by
    every row, or [M, S]) as [M, S]."""
    weight, bias = weight.to(hidden.dtype), bias.to(hidden.dtype)
    positive = ((hidden * weight[targets]).sum(-1) + bias[targets]).float()  # [M]
    if negatives.dim() == 1:  # one matrix product
        negative = F.linear(hidden, weight[negatives], bias[negatives])
    else:
        negative = torch.einsum("md,msd->ms", hidden, weight[negatives]) + bias[negatives]
    negative = negative.float()  # [M, S]
    if offsets is not None:
        positive = positive + offsets(targets[:, None])[:, 0]  # [M]
        negative = negative + offsets(negatives.expand(len(targets), -1))
    return positive, negative


LOSSES = {"ce": FullSoftmax, "sampled": SampledSoftmax, "bce": BinaryCrossEntropy}


def build_loss(name="ce", *, num_negatives=None):
    """The loss called ``name`` (``"ce"``, ``"sampled"`` or ``"bce"``); ``num_negatives``
    for the sampled ones (default 100 for ``"sampled"``, 1 for ``"bce"``).

    Example::

        loss = build_loss("sampled", num_negatives=200)
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    if name == "ce":
        if num_negatives is not None:
            raise ValueError("num_negatives applies to the sampled losses, not to 'ce'")
        return FullSoftmax()
    return LOSSES[name]() if num_negatives is None else LOSSES[name](num_negatives)
