"""Full ranking by item chunks: the top-k items and the ranks of relevant items over all N
items without holding [rows, N] scores, memory O(rows * (chunk + k)).

A scoring function may return, instead of a [B, N] tensor, an ``ItemScores`` (``stseq.data``): the scores of B
rows produced one chunk of items at a time (``chunk(start, end) -> [B, end - start]``) plus the
scores of given items (``at(items [B, R]) -> [B, R]``). ``SequentialRecommender.item_scores``
returns one; ``DenseItemScores`` wraps a [B, N] tensor so that both take one path.

Tie rule (the materialised reference is ``torch.sort(scores, descending=True, stable=True)``):
higher score first; equal scores in increasing item id. ``torch.topk`` itself leaves the order
of equal scores unspecified (on the CPU it differs from run to run of the selection), so the
running top-k selects on a key that is unique per item: the score's order-preserving integer
image in the high 32 bits and the complement of the item id in the low 32 bits (float32
scores; -0.0 counts as 0.0; float64 scores are compared in float64 through a stable sort).
"""

import torch

from stseq.data.batching import DenseItemScores

DEFAULT_CHUNK = 8192


def _order_keys(values):
    """int64 [B, C] keys of float32 ``values`` [B, C] whose signed order is the float order
    (NaN above +inf, -0.0 equal to 0.0), shifted into the high 32 bits."""
    values = values.float() + 0.0  # -0.0 -> 0.0
    values = torch.where(torch.isnan(values), float("nan"), values)  # one NaN bit pattern
    bits = values.view(torch.int32).to(torch.int64)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits << 32


def _key_values(keys):
    """The float32 scores back from ``_order_keys`` keys."""
    bits = keys >> 32
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int32)
    return bits.view(torch.float32)


def _masked(chunk, excluded, start):
    """``chunk`` [B, C] with the excluded (rows, items) pairs inside it set to -inf."""
    if excluded is None:
        return chunk
    rows, items = excluded
    inside = (items >= start) & (items < start + chunk.shape[1])
    return chunk.index_put((rows[inside], items[inside] - start),
                           chunk.new_tensor(float("-inf")))


def chunked_topk(item_scores, k, *, exclude=None, chunk_size=DEFAULT_CHUNK):
    """The ``k`` best items of every row, by chunks of ``chunk_size`` items with a running
    top-k: ties in increasing item id (see the module's tie rule).

    Args:
        item_scores: an ``ItemScores`` (or a [B, N] tensor).
        k: items per row, 1 <= k <= N.
        exclude: None or (rows [T], items [T]) int64 pairs whose scores count as -inf (e.g.
            each user's seen items); they still fill the list when fewer than k remain, as in
            ``scores.masked_fill(seen, -inf).topk(k)``.
        chunk_size: items per chunk.

    Returns:
        (values [B, k], items [B, k] int64), best first.

    Example::

        values, items = chunked_topk(torch.tensor([[0.5, 0.9, 0.5, 0.1]]), 2)
        # values [[0.9, 0.5]], items [[1, 0]] (item 0 before item 2: lower id wins the tie)
    """
    if isinstance(item_scores, torch.Tensor):
        item_scores = DenseItemScores(item_scores)
    num_items = item_scores.num_items
    if not isinstance(k, int) or not 1 <= k <= num_items:
        raise ValueError(f"k must be an int in [1, num_items={num_items}], got {k!r}")
    check_chunk_size(chunk_size)
    best_values = best_items = best_keys = None
    for start in range(0, num_items, chunk_size):
        end = min(num_items, start + chunk_size)
        chunk = _masked(item_scores.chunk(start, end), exclude, start)  # [B, C]
        if chunk.dtype == torch.float64:
            ids = torch.arange(start, end, device=chunk.device).expand_as(chunk)
            best_values, best_items = _merge_stable(best_values, best_items, chunk, ids, k)
            continue
        keys = _chunk_keys(chunk.float(), min(k, chunk.shape[1]), start)
        if best_keys is not None:
            keys = torch.cat([best_keys, keys], dim=1)
        best_keys = keys.topk(min(k, keys.shape[1]), dim=1).values  # unique keys: one order
    if best_keys is not None:
        best_items = 0xFFFFFFFF - (best_keys & 0xFFFFFFFF)
        best_values = _key_values(best_keys)
    return best_values, best_items


def _chunk_keys(chunk, k, start):
    """Keys (see ``_order_keys``) of at least the ``k`` best items of ``chunk`` [B, C] under the
    tie rule: those of ``topk``'s k when no row has a tie across its k-th value (the common
    case: one pass of topk and one count), else of every item."""
    top = chunk.topk(k, dim=1)
    kth = top.values[:, -1:]
    boundary_ties = ((chunk >= kth) | torch.isnan(chunk)).sum(1) != k
    if bool(boundary_ties.any()):
        ids = torch.arange(start, start + chunk.shape[1], device=chunk.device)
        return _order_keys(chunk) | (0xFFFFFFFF - ids)
    return _order_keys(top.values) | (0xFFFFFFFF - (top.indices + start))


def _merge_stable(values, items, chunk, ids, k):
    """Running top-k of float64 scores: the kept list (lower ids first among ties) then the
    chunk, ordered by a stable descending sort."""
    if values is not None:
        chunk, ids = torch.cat([values, chunk], dim=1), torch.cat([items, ids], dim=1)
    order = torch.sort(chunk, dim=1, descending=True, stable=True).indices[:, :k]
    return chunk.gather(1, order), ids.gather(1, order)


def chunked_counts_above(item_scores, relevant, *, exclude=None, chunk_size=DEFAULT_CHUNK):
    """For each relevant item, the number of competing items scored strictly higher and
    higher-or-equal, by item chunks. Competing: every item that is not one of the row's
    relevant items and not excluded.

    Args:
        item_scores: ``ItemScores`` of B rows (or a [B, N] tensor).
        relevant: [B, R] int64 item ids, -1 for padding.
        exclude: None or (rows [T], items [T]) pairs that do not compete.

    Returns:
        (relevant_scores [B, R], above [B, R] int64, at_or_above [B, R] int64).

    Example::

        scores = torch.tensor([[0.1, 0.9, 0.5, 0.5]])
        chunked_counts_above(scores, torch.tensor([[2]]), chunk_size=2)
        # (tensor([[0.5]]), tensor([[1]]), tensor([[2]]))
    """
    if isinstance(item_scores, torch.Tensor):
        item_scores = DenseItemScores(item_scores)
    check_chunk_size(chunk_size)
    valid = relevant >= 0
    targets = item_scores.at(relevant.clamp(min=0))  # [B, R]
    _check_no_nan(targets)
    rows = torch.arange(relevant.shape[0], device=relevant.device)[:, None].expand_as(relevant)
    num_items = item_scores.num_items
    pairs = rows[valid] * num_items + relevant[valid]  # [T] (row, item) that do not compete
    if exclude is not None:
        pairs = torch.cat([pairs, exclude[0] * num_items + exclude[1]])
    pairs = torch.unique(pairs)  # a seen item counts once however often it was seen
    left_rows, left_items = pairs // num_items, pairs % num_items
    above = torch.zeros(relevant.shape, dtype=torch.int64, device=relevant.device)
    at_or_above = torch.zeros_like(above)
    for start in range(0, item_scores.num_items, chunk_size):
        end = min(item_scores.num_items, start + chunk_size)
        chunk = item_scores.chunk(start, end)  # [B, C]
        _check_no_nan(chunk)
        inside = (left_items >= start) & (left_items < end)
        out_rows = left_rows[inside]
        out_scores = chunk[out_rows, left_items[inside] - start]  # [T'] scores not competing
        for column in range(relevant.shape[1]):  # one [B, C] pass per relevant column
            target = targets[:, column, None]
            out_target = target[out_rows, 0]
            above[:, column] += (chunk > target).sum(1) - torch.zeros_like(
                above[:, column]).index_add_(0, out_rows, (out_scores > out_target).long())
            at_or_above[:, column] += (chunk >= target).sum(1) - torch.zeros_like(
                above[:, column]).index_add_(0, out_rows, (out_scores >= out_target).long())
    return targets, above, at_or_above


def check_chunk_size(chunk_size):
    """ValueError unless ``chunk_size`` is an int >= 1."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1, got {chunk_size!r}")


def _check_no_nan(scores):
    if torch.isnan(scores).any():
        row = int(torch.nonzero(torch.isnan(scores))[0, 0])
        raise ValueError(f"the score function returned NaN for row {row}")
