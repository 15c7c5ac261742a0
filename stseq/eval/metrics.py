"""Ranking metrics, as pure functions on tensors.

A target (query) has one or more relevant items. Its ranked list puts the relevant items at
0-based ``positions``; with ``R`` relevant items, ``h`` of them in the top ``K``:

    HR@K        = 1 if h > 0                      Recall@K = h / R
    Precision@K = h / K                           F1@K     = 2 P R / (P + R)
    NDCG@K      = sum_{relevant p < K} 1 / log2(p + 2)  /  sum_{r < min(R, K)} 1 / log2(r + 2)
    MRR         = 1 / (first relevant position + 1)    (over the full ranking)

A relevant item's position counts the competing items scored strictly higher (ties in its
favour) or higher-or-equal (``pessimistic``: ties against it), plus the relevant items ranked
before it.
"""

import math

import torch


def metric_names(ks):
    """Metric keys in report order: ``HR@K``, ``NDCG@K``, ``Recall@K``, ``Precision@K``,
    ``F1@K`` per K, then ``MRR``.

    Example::

        metric_names([10])   # ['HR@10', 'NDCG@10', 'Recall@10', 'Precision@10', 'F1@10', 'MRR']
    """
    return [f"{name}@{k}" for k in ks for name in ("HR", "NDCG", "Recall", "Precision", "F1")] + [
        "MRR"]


def check_ks(ks):
    """``ks`` as a tuple of positive ints (ValueError otherwise)."""
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def relevant_positions(scores, relevant, candidates, *, pessimistic=False):
    """0-based list positions of the relevant items.

    Args:
        scores: [B, N] float, no NaN.
        relevant: [B, R] int64 item ids, -1 for padding and for relevant items that are not
            ranked at all (e.g. excluded as already seen).
        candidates: [B, N] bool, the non-relevant items that compete with the relevant ones
            (all other items for full ranking, the sampled negatives for sampled ranking).
        pessimistic: count tied candidates as ranked above (otherwise below).

    Returns:
        [B, R] float64: position of each relevant item, ``inf`` where ``relevant`` is -1.

    Example::

        scores = torch.tensor([[0.1, 0.9, 0.5, 0.5]])
        relevant_positions(scores, torch.tensor([[2]]), torch.tensor([[1, 1, 0, 1]]).bool())
        # tensor([[1.]]) ; pessimistic=True gives 2 (item 3 ties with item 2)
    """
    relevant_scores = scores.gather(1, relevant.clamp(min=0))  # [B, R]
    above = torch.empty(relevant.shape, dtype=torch.int64, device=scores.device)
    for column in range(relevant.shape[1]):  # one [B, N] pass per relevant column
        target = relevant_scores[:, column, None]
        beaten = scores >= target if pessimistic else scores > target
        above[:, column] = (beaten & candidates).sum(1)
    return positions_from_counts(above, relevant_scores, relevant)


def positions_from_counts(above, relevant_scores, relevant):
    """0-based list positions [B, R] float64 of the relevant items from the number of competing
    items ranked above each (``above`` [B, R]) and their scores [B, R]: plus the relevant items
    ranked before it (higher score, or equal score and earlier column); ``inf`` where
    ``relevant`` is -1.

    Example::

        positions_from_counts(torch.tensor([[1, 0]]), torch.tensor([[0.5, 0.9]]),
                              torch.tensor([[2, 1]]))   # tensor([[2., 0.]])
    """
    valid = relevant >= 0
    # Relevant items ranked before each one: its place among the row's valid relevant scores.
    order = torch.where(valid, relevant_scores, relevant_scores.new_tensor(-math.inf))
    order = torch.argsort(order, dim=1, descending=True, stable=True)
    before = torch.empty_like(order).scatter_(
        1, order, torch.arange(relevant.shape[1], device=above.device).expand_as(order))
    positions = (above + before).double()
    return torch.where(valid, positions, positions.new_tensor(math.inf))


def _discounts(count, device):
    return 1.0 / torch.log2(torch.arange(count, device=device, dtype=torch.float64) + 2.0)


def ranking_metrics(positions, num_relevant, ks):
    """Per-target metric values from list positions.

    Args:
        positions: [B, R] float, 0-based positions of the relevant items (``inf``: not ranked
            or padding).
        num_relevant: [B] int, relevant items per target (>= 1; may exceed the finite
            positions when some relevant items were not ranked).
        ks: cut-offs.

    Returns:
        dict metric name (see ``metric_names``) -> [B] float64.

    Example::

        ranking_metrics(torch.tensor([[2.0]]), torch.tensor([1]), [1, 5])["NDCG@5"]
        # tensor([0.5000], dtype=torch.float64)   (1 / log2(2 + 2))
    """
    num_relevant = num_relevant.to(torch.float64)
    out = {}
    finite = torch.isfinite(positions)
    gain = torch.where(finite, 1.0 / torch.log2(positions.clamp(max=1e300) + 2.0),
                       positions.new_tensor(0.0))
    for k in ks:
        inside = positions < k
        hits = inside.sum(1).double()
        ideal = torch.cumsum(_discounts(k, positions.device), 0)
        ideal = ideal[(num_relevant.clamp(max=k) - 1).long()]
        precision, recall = hits / k, hits / num_relevant
        total = precision + recall
        out[f"HR@{k}"] = (hits > 0).double()
        out[f"NDCG@{k}"] = torch.where(inside, gain, 0.0).sum(1) / ideal
        out[f"Recall@{k}"] = recall
        out[f"Precision@{k}"] = precision
        out[f"F1@{k}"] = torch.where(total > 0, 2 * precision * recall / total.clamp(min=1e-300),
                                     0.0)
    first = positions.min(1).values
    out["MRR"] = torch.where(torch.isfinite(first), 1.0 / (first.clamp(max=1e300) + 1.0), 0.0)
    return {name: out[name] for name in metric_names(ks)}


def expected_metrics(probabilities, ks, *, scores=None, pessimistic=False):
    """Expected metric values when the next item is drawn from ``probabilities`` (one relevant
    item per target), ranking by the probabilities themselves (the oracle) or by ``scores``.

    Args:
        probabilities: [B, N] true next-item distributions (rows sum to 1).
        ks: cut-offs.
        scores: [B, N] a model's scores; None ranks by ``probabilities`` (a strict order).
        pessimistic: with ``scores``, count tied items as ranked above (as in
            ``evaluate``'s ``pessimistic`` metrics); otherwise below.

    Returns:
        dict metric name -> [B] float64: the probability-weighted value over every possible
        next item j of the metric with j as the target. Ranking by the probabilities, HR@K is
        the sum of the K largest, NDCG@K their sum discounted by 1 / log2(rank + 2), MRR the
        sum over all ranks of p / (rank + 1); always Recall@K = HR@K, Precision@K = HR@K / K,
        F1@K = 2 HR@K / (K + 1).

    Example::

        expected_metrics(torch.tensor([[0.5, 0.3, 0.2]]), [1])["HR@1"]   # tensor([0.5000])
    """
    probabilities = probabilities.double()
    if scores is None:
        weights = torch.sort(probabilities, dim=1, descending=True).values  # [B, N]
        positions = torch.arange(weights.shape[1], device=weights.device, dtype=torch.float64)
        positions = positions.expand_as(weights)
    else:
        if scores.shape != probabilities.shape:
            raise ValueError(f"scores must have the shape of probabilities "
                             f"{tuple(probabilities.shape)}, got {tuple(scores.shape)}")
        weights = probabilities
        ordered = torch.sort(scores, dim=1).values  # ascending [B, N]
        count = scores.shape[1]
        if pessimistic:
            positions = count - 1 - torch.searchsorted(ordered, scores.contiguous(), right=False)
        else:
            positions = count - torch.searchsorted(ordered, scores.contiguous(), right=True)
        positions = positions.double()  # items scored above each item
    gain = 1.0 / torch.log2(positions + 2.0)
    out = {}
    for k in ks:
        inside = positions < k
        hit = torch.where(inside, weights, 0.0).sum(1)
        out[f"HR@{k}"] = hit
        out[f"NDCG@{k}"] = torch.where(inside, weights * gain, 0.0).sum(1)
        out[f"Recall@{k}"] = hit
        out[f"Precision@{k}"] = hit / k
        out[f"F1@{k}"] = 2 * hit / (k + 1)
    out["MRR"] = (weights / (positions + 1.0)).sum(1)
    return {name: out[name] for name in metric_names(ks)}
