"""Behaviour data: one in-memory format, a synthetic generator with an oracle, loaders for the
usual file formats, leakage-free splits and batching.

The format, ``Interactions``: per-user, time-sorted events in CSR layout (user ``u``'s events
are ``[offsets[u], offsets[u + 1])``): ``items`` [N] int64 in ``[0, num_items)``,
``timestamps`` [N] int64 seconds (UTC), optional ``coordinates`` [N, 2] (latitude, longitude)
degrees and ``behaviors`` [N] codes into ``behavior_names``; ``user_ids`` / ``item_ids`` keep
the raw ids. Every source below produces it.

- ``synthetic(num_users=2000, num_items=2000, *, session_strength=0.7, interest_strength=1.0,
  rhythm_strength=1.0, spatial_strength=1.0, seed=0, ...) -> SyntheticData``
  (``.interactions``, ``.oracle``): sessions with item-to-item transitions, long-term category
  interests, daily/weekly rhythms and distance decay on a map; ``oracle.probabilities(targets)``
  is the true next-item distribution (``stseq.eval.oracle_metrics(oracle, targets, ks)``: the
  ceiling).
- Loaders (``**preprocess`` = ``min_user_events``, ``min_item_events``, ``deduplicate``,
  ``time_range``): ``load_recbole`` (.inter), ``load_movielens`` (ratings.dat / ratings.csv),
  ``load_snap_checkins`` (Gowalla, Brightkite), ``load_foursquare`` (TSMC2014),
  ``load_taobao`` (UserBehavior.csv), ``load_table`` (CSV / Parquet with a column mapping),
  ``from_events`` (arrays): pyarrow's columnar readers, vectorised checks; drops are counted
  in ``interactions.report`` with the first line of each reason. Ids are text unless
  ``integer_ids=True``. ``LOADERS`` maps the format names recbole, movielens, snap,
  foursquare, taobao, table to these readers. ``movielens_100k_path()`` finds ML-100K in an
  installed recbole 1.2.1 wheel.
- ``stseq.data.cache.load_cached(format, path, cache_dir, **options)``: a loader through a
  binary cache (parsed once, memory-mapped after, rebuilt when source or options change).
- ``stseq.data.generate.generate_log(path, events=, users=, items=)``: Taobao-shaped logs of
  any size for tests and benchmarks (``python -m stseq.data.generate``).
- Splits -> ``Split(interactions, train, valid, test)`` with ``Targets`` (users, positions,
  query_times, relevant items): ``leave_one_out(data)``, ``global_split(data,
  test_fraction=0.1, valid_fraction=0.1, targets="first" | "all" | "future")``.
- Batching -> ``Batch`` (padded [B, L]: items padded with ``num_items``, timestamps, lengths,
  time_gaps, next_timestamps, coordinates, distances km, behaviors, next_items for training,
  users, positions; ``.to(device)``, ``.to_jagged()`` -> values + offsets):
  ``training_batches(train, batch_size=128, max_length=50, seed=0)`` (every transition once,
  reshuffled each pass), ``evaluation_batches(interactions, targets, max_length=50)``;
  ``Prefetched(batches, pin_memory=False)`` builds them in a background thread.

Metrics and the evaluation protocol are in ``stseq.eval``.

Example::

    import torch
    import stseq.data, stseq.eval

    data = stseq.data.synthetic(seed=0)                    # ~2000 users, 2000 items
    split = stseq.data.leave_one_out(data.interactions)
    for batch in stseq.data.training_batches(split.train, batch_size=128, max_length=50):
        batch.items, batch.timestamps, batch.lengths        # [B, L], [B, L], [B]
        batch.next_items                                    # [B, L] targets (pad = num_items)

    markov = stseq.eval.MarkovChain(split.train)            # a scoring function Batch -> [B, N]
    result = stseq.eval.evaluate(markov, split.interactions, split.test, ks=(10,))
    ceiling = stseq.eval.oracle_metrics(data.oracle, split.test, ks=(10,))
    print(result["NDCG@10"], result.fraction_of(ceiling)["NDCG@10"])
"""

try:
    import pyarrow  # noqa: F401  (a dependency of stseq: the loaders' columnar reader)
except ImportError as missing:
    raise ImportError("stseq.data needs pyarrow (a dependency of stseq, missing from this "
                      "Python): pip install pyarrow") from missing

from stseq.data.batching import (Batch, Batches, DenseItemScores, ItemScores, JaggedBatch,
                                 Prefetched, evaluation_batches, make_batch, training_batches)
from stseq.data.interactions import Interactions, PreprocessReport, Sequence, from_events
from stseq.data.loaders import (LOADERS, load_foursquare, load_movielens, load_recbole,
                                load_snap_checkins, load_table, load_taobao, movielens_100k_path,
                                parse_iso8601)
from stseq.data.splits import Split, Targets, global_split, leave_one_out
from stseq.data.simulation import SESSION_GAP, Oracle, SyntheticData, synthetic

__all__ = ["Batch", "Batches", "DenseItemScores", "Interactions", "ItemScores", "JaggedBatch",
           "LOADERS", "Oracle", "Prefetched", "PreprocessReport", "SESSION_GAP", "Sequence",
           "Split", "SyntheticData", "Targets", "evaluation_batches", "from_events",
           "global_split", "leave_one_out", "load_foursquare", "load_movielens", "load_recbole",
           "load_snap_checkins", "load_table", "load_taobao", "make_batch", "movielens_100k_path",
           "parse_iso8601", "synthetic", "training_batches"]
