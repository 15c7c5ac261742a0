"""How close a learner can get to the synthetic oracle, and how close a trained model gets.

The oracle knows each user's hidden interests and home and the exact item transitions; a model
sees only the histories. This prints, for the test targets of the default synthetic data (or
the one given by --synthetic KEY=VALUE), split into in-session targets (gap to the previous
event <= 30 min) and new-session ones, NDCG@10 as a fraction of the oracle's for:

- markov: the first-order Markov baseline (transition counts of the training events);
- plug-in: the generator itself with everything a learner must infer replaced by estimates from
  the data: each user's interests from the category counts of their events before the target
  (Dirichlet(0.5) posterior mean), their home from the mean place of their session starts, and
  the transitions from the training events' in-session counts (mixed in with the generator's
  session weight). It still knows the world (categories, popularity, rhythms, places and the
  distance law), so it bounds what a model learning all of that from the data can expect;
- each checkpoint given (trained by ``stseq train`` on the same data).

    python scripts/synthetic_ceiling.py [runs/synthetic/time-decay-gru/checkpoint.pt ...]
"""

import argparse
import dataclasses

import numpy as np
import torch

import stseq
from stseq.data import simulation
from stseq.train.experiment import checkpoint_context

DIRICHLET = 0.5  # the generator's interest concentration


def plug_in(oracle, split):
    """A scorer (``Batch -> [B, N]``) of the generator with estimated users and transitions."""
    interactions, test = split.interactions, split.test
    num_users, num_categories = oracle.log_interests.shape
    counts = np.zeros((num_users, num_categories))
    home = np.zeros((num_users, 2))
    for user, position in zip(test.users, test.positions):
        start = interactions.offsets[user]
        items = interactions.items[start:start + position]
        gaps = np.diff(interactions.timestamps[start:start + position], prepend=-np.inf)
        np.add.at(counts[user], oracle.item_categories[items], 1)
        home[user] = oracle.item_xy[items[gaps > simulation.SESSION_GAP]].mean(0)
    interests = np.log((counts + DIRICHLET)
                       / (counts.sum(1, keepdims=True) + DIRICHLET * num_categories))
    long_term = dataclasses.replace(oracle, log_interests=interests, home_xy=home,
                                    session_strength=0.0)
    train, n = split.train, oracle.num_items
    transitions = np.zeros((n, n))
    for user in range(train.num_users):
        start, end = train.offsets[user], train.offsets[user + 1]
        items, times = train.items[start:end], train.timestamps[start:end]
        same = np.diff(times) <= simulation.SESSION_GAP
        np.add.at(transitions, (items[:-1][same], items[1:][same]), 1)
    totals = transitions.sum(1, keepdims=True)
    frequencies = np.divide(transitions, totals, out=np.zeros_like(transitions),
                            where=totals > 0)

    def score(batch):
        probabilities = long_term(batch).numpy()
        last = (batch.lengths - 1).clamp(min=0)[:, None]
        previous_time = batch.timestamps.gather(1, last)[:, 0].numpy()
        same = batch.query_times.numpy() - previous_time <= simulation.SESSION_GAP
        previous = batch.last_items.numpy()
        mixed = (oracle.session_strength * frequencies[previous]
                 + (1 - oracle.session_strength) * probabilities)
        return torch.from_numpy(np.where(same[:, None], mixed, probabilities))
    return score


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--synthetic", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    options = {key: int(value) if value.lstrip("-").isdigit() else float(value)
               for key, value in (item.split("=", 1) for item in args.synthetic)}
    data = stseq.data.synthetic(**options)
    oracle, split = data.oracle, stseq.data.leave_one_out(data.interactions)
    test, interactions = split.test, split.interactions
    before = interactions.offsets[test.users] + test.positions - 1
    same = test.query_times - interactions.timestamps[before] <= simulation.SESSION_GAP
    parts = {"all": test, "in-session": test.select(np.nonzero(same)[0]),
             "new-session": test.select(np.nonzero(~same)[0])}
    ceiling = {name: stseq.eval.oracle_metrics(oracle, part, (10,))["NDCG@10"]
               for name, part in parts.items()}
    print(f"{'':34s}" + "".join(f"{name:>14s}" for name in parts))
    print(f"{'targets':34s}" + "".join(f"{len(part):14d}" for part in parts.values()))
    print(f"{'share of the oracle NDCG@10':34s}" + "".join(
        f"{ceiling[name] * len(part) / (ceiling['all'] * len(test)):14.3f}"
        for name, part in parts.items()))
    scorers = {"markov": stseq.eval.MarkovChain(split.train), "plug-in": plug_in(oracle, split)}
    for path in args.checkpoints:
        _, _, _, _, model = checkpoint_context(path)
        scorers[path] = model.eval().score
    for label, score in scorers.items():
        with torch.no_grad():
            fractions = [stseq.eval.oracle_metrics(oracle, part, (10,), score=score)["NDCG@10"]
                         / ceiling[name] for name, part in parts.items()]
        print(f"{label[-34:]:34s}" + "".join(f"{value:14.3f}" for value in fractions))


if __name__ == "__main__":
    main()
