"""Reference twin of ``item_logsumexp``: the materialised log-sum-exp over the catalogue.

Builds the whole [M, N] score matrix (``F.linear``) and reduces it with ``torch.logsumexp``,
so it is exactly the computation the fused op replaces (same NaN/inf behaviour, autograd by
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
