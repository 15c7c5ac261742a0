"""Training losses over the item catalogue. Each is called as
``loss(hidden [M, D], targets [M], weight [N, D], bias [N], mixture=None) -> [M]`` per-target
losses, where ``weight`` / ``bias`` are the model's scoring layer, so sampled losses never build
the full [M, N] logits, and ``mixture`` (``SequentialRecommender.transition_mixture``) is None
or turns the logits of a candidate set into the log-probabilities the model predicts:
``mixture.log_probs(logits [M, N]) -> [M, N]`` over all items,
``mixture.log_probs(logits [M, K], columns [M, K]) -> [M, K]`` over the item ids ``columns``
(``stseq.models.base.TransitionMixture``).

- ``FullSoftmax`` (the default, ``"ce"``): cross-entropy over all N items.
- ``SampledSoftmax`` (``"sampled"``): cross-entropy over the target and ``num_negatives``
  uniformly drawn items shared by the batch (a negative equal to the row's target is masked).
- ``BinaryCrossEntropy`` (``"bce"``): the target against ``num_negatives`` uniform negatives
  per target, each scored by a sigmoid (the original SASRec loss); with a mixture, each
  candidate's probability is its mixture probability among the row's candidates.

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

    def __call__(self, hidden, targets, weight, bias, mixture=None):
        logits = F.linear(hidden, weight.to(hidden.dtype), bias.to(hidden.dtype)).float()
        if mixture is None:
            return F.cross_entropy(logits, targets, reduction="none")
        return F.nll_loss(mixture.log_probs(logits), targets, reduction="none")  # [M]


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

    def __call__(self, hidden, targets, weight, bias, mixture=None):
        negatives = torch.randint(0, weight.shape[0], (self.num_negatives,),
                                  device=targets.device)  # [S]
        positive, negative = _scored(hidden, targets, negatives, weight, bias)  # [M], [M, S]
        hit = negatives[None, :] == targets[:, None]  # [M, S]
        logits = torch.cat([positive[:, None], negative.masked_fill(hit, float("-inf"))], dim=1)
        return -_log_probs(logits, targets, negatives.expand(len(targets), -1), hit,
                           mixture)[:, 0]


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

    def __call__(self, hidden, targets, weight, bias, mixture=None):
        negatives = torch.randint(0, weight.shape[0], (len(targets), self.num_negatives),
                                  device=targets.device)  # [M, S]
        positive, negative = _scored(hidden, targets, negatives, weight, bias)
        hit = negatives == targets[:, None]
        keep = (~hit).to(negative.dtype)
        if mixture is None:
            return F.softplus(-positive) + (F.softplus(negative) * keep).sum(dim=1)
        logits = torch.cat([positive[:, None], negative.masked_fill(hit, float("-inf"))], dim=1)
        log_p = _log_probs(logits, targets, negatives, hit, mixture)  # [M, 1 + S]
        # log(1 - p) of the negatives, at most log(1 - 1e-6) so that p -> 1 stays finite
        log_rest = torch.log1p(-log_p[:, 1:].exp().clamp(max=1 - 1e-6))
        return -log_p[:, 0] - (log_rest * keep).sum(dim=1)


def _scored(hidden, targets, negatives, weight, bias):
    """float32 scores of each row's target [M] and of its negatives (item ids [S] shared by
    every row, or [M, S]) as [M, S]."""
    weight, bias = weight.to(hidden.dtype), bias.to(hidden.dtype)
    positive = ((hidden * weight[targets]).sum(-1) + bias[targets]).float()  # [M]
    if negatives.dim() == 1:  # one matrix product
        negative = F.linear(hidden, weight[negatives], bias[negatives])
    else:
        negative = torch.einsum("md,msd->ms", hidden, weight[negatives]) + bias[negatives]
    return positive, negative.float()  # [M], [M, S]


def _log_probs(logits, targets, negatives, hit, mixture):
    """[M, 1 + S] log-probabilities over each row's candidates (its target, then its negatives
    [M, S], those equal to the target (``hit``) left out with -inf logits): the log-softmax,
    or the mixture's."""
    if mixture is None:
        return torch.log_softmax(logits, dim=1)
    columns = torch.cat([targets[:, None], negatives.masked_fill(hit, -1)], dim=1)
    return mixture.log_probs(logits, columns)


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
