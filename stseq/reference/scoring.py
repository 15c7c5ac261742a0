"""Reference twins of ``item_logsumexp`` and ``item_cross_entropy``: the materialised
log-sum-exp and cross-entropy over the catalogue.

Build the whole [M, N] score matrix (``F.linear``) and reduce it with ``torch.logsumexp`` /
``F.cross_entropy``, so they are exactly the computations the fused ops replace (same NaN/inf behaviour, autograd by
torch). Written for clarity; use it as the oracle, never for large catalogues.
"""

import torch
import torch.nn.functional as F


def item_logsumexp(hidden, weight, bias=None):
    """log sum_j exp(hidden[m] . weight[j] + bias[j]) for every row m, materialised.

    Args:
        hidden: [M, D] floating point.
        weight: [N, D], the item table (same dtype as hidden).
        bias: [N] or None.

    Returns:
        [M] in the accumulation dtype: float64 for float64 inputs, float32 otherwise.

    Example::

        hidden, weight = torch.randn(4, 8), torch.randn(100, 8)
        lse = item_logsumexp(hidden, weight)   # [4]
    """
    accumulate = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    scores = F.linear(hidden.to(accumulate), weight.to(accumulate),
                      None if bias is None else bias.to(accumulate))  # [M, N]
    return torch.logsumexp(scores, dim=1)


def item_cross_entropy(hidden, weight, bias, targets, *, ignore_index=-100, label_smoothing=0.0):
    """Per-row ``F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="none")``,
    materialised, in the accumulation dtype.

    Args:
        hidden: [M, D] floating point; weight: [N, D]; bias: [N] or None.
        targets: [M] int64 item ids, or ``ignore_index`` (loss 0).
        ignore_index, label_smoothing: as in ``F.cross_entropy``.

    Returns:
        [M] losses: float64 for float64 inputs, float32 otherwise.

    Example::

        hidden, weight = torch.randn(4, 8), torch.randn(100, 8)
        losses = item_cross_entropy(hidden, weight, None, torch.tensor([3, 0, 99, 5]))  # [4]
    """
    accumulate = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    scores = F.linear(hidden.to(accumulate), weight.to(accumulate),
                      None if bias is None else bias.to(accumulate))  # [M, N]
    return F.cross_entropy(scores, targets, reduction="none", ignore_index=ignore_index,
                           label_smoothing=label_smoothing)
