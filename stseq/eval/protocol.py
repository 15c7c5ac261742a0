"""The evaluation protocol: ``evaluate`` (full ranking by default, in chunks) and
``recommend`` (top-K item ids with scores).

A scoring function takes a ``stseq.data.Batch`` (users' histories and query times, never the
targets) and returns ``[B, num_items]`` scores, higher is better, or an
``stseq.data.ItemScores`` that produces them by item chunks (a model's
``item_scores``). Full ranking and ``recommend`` run by item chunks either way
(``stseq.eval.ranking``): with ``ItemScores`` no [B, num_items] tensor is ever built.
"""

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from stseq.data.batching import DenseItemScores, ItemScores, make_batch, score_batch
from stseq.data.splits import Targets, ranges
from stseq.eval.metrics import (check_ks, positions_from_counts, ranking_metrics,
                                relevant_positions)
from stseq.eval.ranking import DEFAULT_CHUNK, check_chunk_size, chunked_counts_above, chunked_topk

logger = logging.getLogger("stseq.eval")


@dataclass(frozen=True)
class EvaluationResult:
    """Mean metrics over the targets.

    Fields:
        metrics: name -> value, ties counted in the target's favour (a relevant item's rank
            counts the items scored strictly higher). Names are ``HR@K``, ``NDCG@K``,
            ``Recall@K``, ``Precision@K``, ``F1@K``, ``MRR``, prefixed ``sampled_`` when ranked
            against sampled negatives.
        pessimistic: the same with ties counted against the target.
        num_targets: targets evaluated.
        protocol: how it was measured (ranking, negatives, exclude_seen, seen_targets, ...).

    Example::

        result = evaluate(model_score, split.interactions, split.test)
        result["NDCG@10"], result.pessimistic["NDCG@10"]
        result.fraction_of(oracle_metrics)["NDCG@10"]   # share of the oracle's NDCG@10
    """

    metrics: dict
    pessimistic: dict
    num_targets: int
    protocol: dict

    def __getitem__(self, name):
        return self.metrics[name]

    def fraction_of(self, reference):
        """name -> this metric / ``reference[name]`` for the names both have (e.g. the
        oracle's expected metrics)."""
        return {name: value / reference[name] for name, value in self.metrics.items()
                if reference.get(name)}

    def __str__(self):
        values = ", ".join(f"{name} {value:.4f}" for name, value in self.metrics.items())
        tied = ", ".join(f"{name} {value:.4f}" for name, value in self.pessimistic.items()
                         if value != self.metrics[name])
        ties = f" (ties against: {tied})" if tied else ""
        return f"{self.num_targets} targets, {self.protocol['ranking']}: {values}{ties}"


class Recommendations(NamedTuple):
    """``recommend``'s answer: users [U], items [U, k] item ids best first, scores [U, k]."""

    users: torch.Tensor
    items: torch.Tensor
    scores: torch.Tensor


def _seen_pairs(interactions, users, positions, device):
    """(rows [T], items [T]) int64: the items among each user's events before ``positions``."""
    flat = ranges(interactions.offsets[users], positions)
    rows = np.repeat(np.arange(len(users)), positions)
    return (torch.from_numpy(rows).to(device),
            torch.from_numpy(interactions.items[flat].astype(np.int64)).to(device))


def item_scores_of(score, batch, num_items):
    """Call a scoring function on ``batch`` under ``torch.no_grad``: its ``ItemScores``, or its
    [B, num_items] tensor (checked by ``score_batch``) wrapped as ``DenseItemScores``."""
    with torch.no_grad():
        result = score(batch)
    if isinstance(result, ItemScores):
        if (result.num_rows, result.num_items) != (len(batch.users), num_items):
            raise ValueError(f"the score function's ItemScores cover "
                             f"[{result.num_rows}, {result.num_items}] scores, expected "
                             f"[{len(batch.users)}, {num_items}]")
        return result
    return DenseItemScores(score_batch(lambda _: result, batch, num_items))


def _padded_relevant(targets):
    """[T, R] int64 relevant items padded with -1."""
    counts = targets.num_relevant
    width = max(int(counts.max(initial=0)), 1)
    padded = np.full((len(targets), width), -1, dtype=np.int64)
    rows = np.repeat(np.arange(len(targets)), counts)
    padded[rows, ranges(np.zeros_like(counts), counts)] = targets.items
    return padded


def evaluate(score, interactions, targets, *, ks=(10, 20), max_length=50, batch_size=256,
             exclude_seen=False, negatives=None, seed=0, device=None, chunk_size=DEFAULT_CHUNK):
    """Rank every item for each target and average the metrics.

    Args:
        score: ``Batch -> [B, num_items]`` scores or ``ItemScores`` (called under
            ``torch.no_grad``).
        interactions: the events the targets index into (``split.interactions``).
        targets: ``stseq.data.Targets`` (``split.valid`` / ``split.test``).
        ks: cut-offs for HR / NDCG / Recall / Precision / F1.
        max_length: most recent history events per row given to ``score``.
        batch_size: targets per batch. Full ranking counts the items above each relevant one
            by chunks of ``chunk_size`` items: with ``ItemScores`` memory stays
            O(batch_size * chunk_size); sampled ranking builds [batch_size, num_items].
        exclude_seen: drop the items of each user's history (before the target) from the
            ranking; a relevant item already seen then counts as missed. Logged, and the number
            of such targets is in ``protocol["seen_targets"]``.
        negatives: None for full ranking; an int ranks the relevant items against that many
            negatives drawn uniformly (without replacement, seeded by ``seed``) from the other
            items, and labels every metric ``sampled_``.
        device: where batches are sent before ``score`` (default: stay on the CPU).

    Returns:
        ``EvaluationResult``.

    Example::

        popular = stseq.eval.MostPopular(split.train)
        print(evaluate(popular, split.interactions, split.test, ks=(10,)))
    """
    ks = check_ks(ks)
    if not isinstance(targets, Targets):
        raise ValueError(f"targets must be stseq.data.Targets, got {type(targets).__name__}")
    if len(targets) == 0:
        raise ValueError("targets is empty: nothing to evaluate")
    if (targets.num_relevant < 1).any():
        raise ValueError("every target needs at least one relevant item")
    if negatives is not None and (not isinstance(negatives, int) or negatives < 1):
        raise ValueError("negatives must be None (full ranking) or a positive int, got "
                         f"{negatives}")
    if batch_size < 1 or max_length < 1:
        raise ValueError(f"batch_size and max_length must be >= 1, got {batch_size}, {max_length}")
    check_chunk_size(chunk_size)
    num_items = interactions.num_items
    ranking = "full ranking" if negatives is None else f"sampled: {negatives} uniform negatives"
    logger.info("evaluating %d targets, %s over %d items, exclude_seen=%s", len(targets), ranking,
                num_items, exclude_seen)
    generator = None
    totals = {True: {}, False: {}}
    seen_targets = 0
    padded = _padded_relevant(targets)
    for start in range(0, len(targets), batch_size):
        chunk = targets.select(slice(start, start + batch_size))
        batch = make_batch(interactions, chunk.users, np.maximum(chunk.positions - max_length, 0),
                           chunk.positions, chunk.query_times)
        if device is not None:
            batch = batch.to(device)
        item_scores = item_scores_of(score, batch, num_items)
        relevant = torch.from_numpy(padded[start:start + batch_size])
        seen = None
        if exclude_seen:
            seen = _seen_pairs(interactions, chunk.users, chunk.positions, "cpu")
            already = torch.isin(torch.arange(len(chunk))[:, None] * num_items + relevant,
                                 seen[0] * num_items + seen[1]) & (relevant >= 0)
            seen_targets += int(already.any(1).sum())
            relevant = torch.where(already, -1, relevant)
        count = torch.from_numpy(chunk.num_relevant)
        if negatives is None:
            where = item_scores.device
            relevant = relevant.to(where)
            exclude = None if seen is None else (seen[0].to(where), seen[1].to(where))
            targets_scores, above, at_or_above = chunked_counts_above(
                item_scores, relevant, exclude=exclude, chunk_size=chunk_size)
            for pessimistic, counts in ((False, above), (True, at_or_above)):
                positions = positions_from_counts(counts, targets_scores, relevant)
                _add(totals[pessimistic], ranking_metrics(positions, count.to(where), ks))
            continue
        scores = item_scores.chunk(0, num_items)  # sampled ranking: [B, N] random keys anyway
        where = scores.device
        original = torch.from_numpy(padded[start:start + batch_size]).to(where)
        relevant = relevant.to(where)
        rows = torch.arange(len(chunk), device=where)[:, None].expand_as(original)
        candidates = torch.ones(len(chunk), num_items, dtype=torch.bool, device=where)
        candidates[rows[original >= 0], original[original >= 0]] = False
        if seen is not None:
            candidates[seen[0].to(where), seen[1].to(where)] = False
        if generator is None:
            generator = torch.Generator(device=where).manual_seed(seed)
        keys = torch.rand(candidates.shape, generator=generator, device=where)
        keys = torch.where(candidates, keys, -1.0)
        top = keys.topk(min(negatives, num_items), dim=1)
        candidates = torch.zeros_like(candidates).scatter_(1, top.indices, top.values >= 0)
        for pessimistic in (False, True):
            positions = relevant_positions(scores, relevant, candidates, pessimistic=pessimistic)
            _add(totals[pessimistic], ranking_metrics(positions, count.to(where), ks))
    if exclude_seen:
        logger.info("exclude_seen: %d of %d targets had a relevant item already seen (counted "
                    "as missed)", seen_targets, len(targets))
    prefix = "" if negatives is None else "sampled_"
    metrics, pessimistic = ({prefix + name: total / len(targets) for name, total in
                             totals[flag].items()} for flag in (False, True))
    protocol = {"ranking": ranking, "negatives": negatives, "exclude_seen": exclude_seen,
                "seen_targets": seen_targets if exclude_seen else None, "ks": ks,
                "max_length": max_length, "num_items": num_items}
    return EvaluationResult(metrics, pessimistic, len(targets), protocol)


def _add(totals, values):
    for name, value in values.items():
        totals[name] = totals.get(name, 0.0) + float(value.sum())


def recommend(score, interactions, users=None, *, k=10, at_time=None, exclude_seen=False,
              max_length=50, batch_size=256, device=None, chunk_size=DEFAULT_CHUNK):
    """Top-``k`` items for ``users`` after their whole history.

    Args:
        score: ``Batch -> [B, num_items]`` scores.
        interactions: the users' events.
        users: user indices (default: every user).
        k: items per user.
        at_time: query time in seconds (one for all, or one per user); default each user's
            last event time (required for users without events).
        exclude_seen: never recommend an item the user already has.
        chunk_size: items per chunk of the running top-k (memory O(batch_size * (chunk_size
            + k)) with ``ItemScores``). Ties: the lower item id first
            (``stseq.eval.ranking``).

    Returns:
        ``Recommendations(users, items, scores)``; ``interactions.item_ids[items]`` gives the
        raw ids.

    Example::

        top = recommend(stseq.eval.MostPopular(data), data, users=[0, 1], k=5)
        top.items   # [2, 5]
    """
    users = np.arange(interactions.num_users) if users is None else np.asarray(users, np.int64)
    if users.size and (users.min() < 0 or users.max() >= interactions.num_users):
        raise ValueError(f"users must be in [0, {interactions.num_users})")
    if not 1 <= k <= interactions.num_items:
        raise ValueError(f"k must be in [1, num_items={interactions.num_items}], got {k}")
    positions = interactions.lengths[users]
    if at_time is None:
        if (positions == 0).any():
            raise ValueError(f"user {users[positions == 0][0]} has no events: pass at_time")
        query = interactions.timestamps[interactions.offsets[users] + positions - 1]
    else:
        query = np.broadcast_to(np.asarray(at_time, dtype=np.int64), users.shape)
    found_items, found_scores = [], []
    for start in range(0, len(users), batch_size):
        part = slice(start, start + batch_size)
        batch = make_batch(interactions, users[part], np.maximum(positions[part] - max_length, 0),
                           positions[part], query[part])
        if device is not None:
            batch = batch.to(device)
        item_scores = item_scores_of(score, batch, interactions.num_items)
        exclude = None
        if exclude_seen:
            where = item_scores.device
            exclude = _seen_pairs(interactions, users[part], positions[part], where)
        values, items = chunked_topk(item_scores, k, exclude=exclude, chunk_size=chunk_size)
        found_items.append(items)
        found_scores.append(values)
    empty = torch.zeros(0, k)
    return Recommendations(torch.from_numpy(users),
                           torch.cat(found_items) if found_items else empty.long(),
                           torch.cat(found_scores) if found_scores else empty)
