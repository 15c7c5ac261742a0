"""Evaluation: full-ranking metrics, the protocol, top-K recommendation and baselines.

- ``evaluate(score, interactions, targets, *, ks=(10, 20), max_length=50, batch_size=256,
  exclude_seen=False, negatives=None, device=None) -> EvaluationResult``: ``score`` maps a
  ``stseq.data.Batch`` to ``[B, num_items]`` scores; every item is ranked (sampled ranking only
  with ``negatives=n``, its metrics prefixed ``sampled_``). Metrics: HR@K, NDCG@K, Recall@K,
  Precision@K, F1@K, MRR; ranks count items scored strictly higher (``.metrics``) and, ties
  against, higher-or-equal (``.pessimistic``).
- ``recommend(score, interactions, users, *, k=10, at_time=None, exclude_seen=False)
  -> Recommendations(users, items, scores)``.
- ``MostPopular(train)``, ``MarkovChain(train)``: baseline scoring functions.
- ``metrics``: ``relevant_positions``, ``ranking_metrics``, ``expected_metrics`` (the oracle's
  expected values from true probabilities); ``oracle_metrics(oracle, targets, ks)``: those
  values over targets of the synthetic data, the ceiling a model is compared with.

Example::

    split = stseq.data.leave_one_out(stseq.data.synthetic(seed=0).interactions)
    result = stseq.eval.evaluate(stseq.eval.MostPopular(split.train), split.interactions,
                                 split.test, ks=(10,))
    print(result)   # "... targets, full ranking: HR@10 ..., NDCG@10 ..."
"""

from stseq.eval.baselines import MarkovChain, MostPopular
from stseq.eval.metrics import expected_metrics, metric_names, ranking_metrics, relevant_positions
from stseq.eval.oracle import oracle_metrics
from stseq.eval.protocol import EvaluationResult, Recommendations, evaluate, recommend

__all__ = ["EvaluationResult", "MarkovChain", "MostPopular", "Recommendations", "evaluate",
           "expected_metrics", "metric_names", "oracle_metrics", "ranking_metrics", "recommend",
           "relevant_positions"]
