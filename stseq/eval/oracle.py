"""What a model could reach on synthetic data: the metrics expected when each next item is
drawn from the true distribution of ``stseq.data.synthetic``'s oracle."""

import numpy as np
import torch

from stseq.data.batching import make_batch, score_batch
from stseq.data.splits import Targets
from stseq.eval.metrics import check_ks, expected_metrics


def oracle_metrics(oracle, targets, ks=(10, 20), *, score=None, pessimistic=False, max_length=50,
                   batch_size=256, device=None):
    """Mean expected HR@K, NDCG@K, Recall@K, Precision@K, F1@K and MRR over next-item
    ``targets`` when each next item is drawn from ``oracle``'s true distribution (a
    ``stseq.data.Oracle``), ranking by it (the ceiling) or by a scoring function ``score``
    (``Batch -> [B, num_items]``, fed the last ``max_length`` events as in
    :func:`stseq.eval.evaluate`, batches sent to ``device``). A model's expected metrics are free
    of the sampling noise of the realised targets, so comparing them with the ceiling is exact
    for the given histories. Computed in chunks of ``batch_size``.

    Example::

        ceiling = stseq.eval.oracle_metrics(data.oracle, split.test, ks=(10,))
        markov = stseq.eval.oracle_metrics(data.oracle, split.test, ks=(10,),
                                           score=stseq.eval.MarkovChain(split.train))
        markov["NDCG@10"] / ceiling["NDCG@10"]
    """
    ks = check_ks(ks)
    if (not isinstance(targets, Targets) or len(targets) == 0
            or (targets.num_relevant != 1).any()):
        raise ValueError("expected metrics need non-empty next-item targets (one relevant "
                         "item each)")
    totals = {}
    for start in range(0, len(targets), batch_size):
        chunk = targets.select(slice(start, start + batch_size))
        scores = None
        if score is not None:
            batch = make_batch(oracle.interactions, chunk.users,
                               np.maximum(chunk.positions - max_length, 0), chunk.positions,
                               chunk.query_times)
            if device is not None:
                batch = batch.to(device)
            scores = score_batch(score, batch, oracle.num_items).cpu()
        values = expected_metrics(torch.from_numpy(oracle.probabilities(chunk)), ks,
                                  scores=scores, pessimistic=pessimistic)
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + float(value.sum())
    return {name: total / len(targets) for name, total in totals.items()}
