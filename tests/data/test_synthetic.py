"""The synthetic generator: reproducible by seed, each structure present in the data exactly when
its strength is on, the oracle agrees with the generator, and the oracle's ceiling rises above
most-popular and a first-order Markov chain by a margin for every structure."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from stseq.data import (SESSION_GAP, Targets, global_split, leave_one_out, make_batch,
                        synthetic)
from stseq.eval import MarkovChain, MostPopular, evaluate, oracle_metrics

OFF = dict(session_strength=0.0, interest_strength=0.0, rhythm_strength=0.0, spatial_strength=0.0)
ON = dict(session_strength=0.7, interest_strength=1.0, rhythm_strength=1.0, spatial_strength=1.0)
SMALL = dict(num_users=400, num_items=200, num_categories=10, num_regions=10, min_length=20,
             max_length=80)


def small(seed=1, **strengths):
    return synthetic(**SMALL, seed=seed, **{**OFF, **strengths})


def every_position(data, minimum=1):
    interactions = data.interactions
    positions = interactions.event_positions()
    keep = positions >= minimum
    return Targets.next_item(interactions, interactions.event_users()[keep], positions[keep])


def test_same_seed_same_data_other_seed_other_data():
    first, again, other = small(seed=4, **ON), small(seed=4, **ON), small(seed=5, **ON)
    for name in ("offsets", "items", "timestamps", "coordinates", "behaviors"):
        assert np.array_equal(getattr(first.interactions, name), getattr(again.interactions, name))
    assert np.array_equal(first.oracle.probabilities(every_position(first)),
                          again.oracle.probabilities(every_position(again)))
    assert not np.array_equal(first.interactions.items[:100], other.interactions.items[:100])


def test_default_dataset_shape():
    data = synthetic()
    events = data.interactions
    assert (events.num_users, events.num_items) == (2000, 2000)
    assert events.lengths.min() >= 20 and events.lengths.max() <= 200
    assert 100_000 < events.num_events < 250_000
    assert events.timestamps.dtype == np.int64 and events.timestamps.min() >= 1_704_067_200
    assert events.behavior_names == ("view", "cart", "buy")
    latitude, longitude = events.coordinates.T
    assert np.abs(latitude - 51.5).max() < 0.5 and np.abs(longitude + 0.13).max() < 0.5
    assert np.bincount(data.item_categories).min() >= 1


def gaps_and_previous(data):
    events = data.interactions
    follows = np.diff(events.event_users()) == 0
    gaps = np.diff(events.timestamps)[follows]
    return gaps, follows


def test_sessions_have_short_gaps_and_buys_end_them():
    data = small(**ON)
    gaps, follows = gaps_and_previous(data)
    assert ((gaps <= SESSION_GAP) | (gaps >= 7200)).all() and (gaps >= 0).all()
    assert 0.6 < np.mean(gaps <= SESSION_GAP) < 0.8
    after_buy = data.interactions.behaviors[:-1][follows] == 2
    assert (gaps[after_buy] >= 7200).all() and after_buy.any()


def structure_statistic(data, structure):
    """A number that is large when ``structure`` is present in the events."""
    events, oracle = data.interactions, data.oracle
    gaps, follows = gaps_and_previous(data)
    previous, following = events.items[:-1][follows], events.items[1:][follows]
    same_session = gaps <= SESSION_GAP
    if structure == "session":  # same-session moves to one of the previous item's successors
        hit = (oracle.successors[previous] == following[:, None]).any(1)
        return hit[same_session].mean()
    if structure == "interest":  # share of each user's events in their top category
        users = events.event_users()
        counts = np.zeros((events.num_users, oracle.log_interests.shape[1]))
        np.add.at(counts, (users, data.item_categories[events.items]), 1)
        return (counts.max(1) / counts.sum(1)).mean()
    if structure == "rhythm":  # how much the category mix differs between hours of the day
        hours = (events.timestamps // 3600) % 24
        mix = np.zeros((4, oracle.log_interests.shape[1]))
        np.add.at(mix, (hours // 6, data.item_categories[events.items]), 1)
        mix /= mix.sum(1, keepdims=True)
        return np.abs(mix[:, None] - mix[None]).sum(-1).max() / 2
    # spatial: closeness (1 / km) of a same-session place to the previous one
    xy = oracle.item_xy
    distance = np.linalg.norm(xy[previous] - xy[following], axis=1)[same_session]
    return 1.0 / distance.mean()


@pytest.mark.parametrize("structure, on, off", [("session", 0.6, 0.1), ("interest", 0.33, 0.25),
                                                ("rhythm", 0.3, 0.1), ("spatial", 0.25, 0.12)])
def test_each_structure_is_present_exactly_when_switched_on(structure, on, off):
    strength = ON[f"{structure}_strength"]
    assert structure_statistic(small(**{f"{structure}_strength": strength}), structure) > on
    assert structure_statistic(small(), structure) < off


@pytest.mark.parametrize("strengths", [ON, dict(session_strength=0.7), dict(spatial_strength=1.0)])
def test_oracle_is_the_generating_distribution(strengths):
    """If X ~ p then E[p(X)] = sum_i p_i^2: a z-test over every position; a wrong oracle (other
    strengths) fails it."""
    data = small(seed=2, **strengths)
    targets = every_position(data)

    def z_score(oracle):
        probabilities = oracle.probabilities(targets)
        assert np.allclose(probabilities.sum(1), 1) and (probabilities >= 0).all()
        drawn = probabilities[np.arange(len(targets)), targets.items]
        difference = drawn - (probabilities ** 2).sum(1)
        return difference.mean() / (difference.std() / np.sqrt(len(difference)))

    assert abs(z_score(data.oracle)) < 4
    wrong = {name: value * 0.5 for name, value in strengths.items()}
    assert abs(z_score(replace(data.oracle, **wrong))) > 8


def test_oracle_scoring_function_matches_its_probabilities_and_realised_metrics():
    data = small(seed=3, **ON)
    split = global_split(data.interactions, test_fraction=0.15, targets="all")
    part = split.test.select(slice(0, 64))
    batch = make_batch(data.interactions, part.users, np.maximum(part.positions - 50, 0),
                       part.positions, part.query_times)
    assert torch.allclose(data.oracle(batch), torch.from_numpy(data.oracle.probabilities(part)))
    expected = oracle_metrics(data.oracle, split.test, ks=(10,))
    realised = evaluate(data.oracle, split.interactions, split.test, ks=(10,))
    assert len(split.test) > 2500
    for name in ("HR@10", "NDCG@10", "MRR"):
        assert realised[name] == pytest.approx(expected[name], abs=0.03)


def ceiling_and_baselines(data, short_only=False):
    split = leave_one_out(data.interactions)
    targets = split.test
    if short_only:
        before = data.interactions.offsets[targets.users] + targets.positions - 1
        targets = targets.select(targets.query_times - data.interactions.timestamps[before]
                                 <= SESSION_GAP)
    oracle = oracle_metrics(data.oracle, targets, ks=(10,))["NDCG@10"]
    popular, markov = (oracle_metrics(data.oracle, targets, ks=(10,), score=model(split.train))
                       ["NDCG@10"] for model in (MostPopular, MarkovChain))
    return oracle, popular, markov


def test_markov_beats_popularity_on_short_gaps_only_with_sessions():
    _, popular, markov = ceiling_and_baselines(small(session_strength=0.7), short_only=True)
    assert markov > popular + 0.3
    _, popular, markov = ceiling_and_baselines(small(session_strength=0.0), short_only=True)
    assert markov < popular


@pytest.mark.parametrize("strengths", [dict(session_strength=0.7), dict(interest_strength=1.0),
                                       dict(rhythm_strength=1.0), dict(spatial_strength=1.0), ON],
                         ids=["session", "interest", "rhythm", "spatial", "all"])
def test_oracle_rises_above_both_baselines_for_every_structure(strengths):
    oracle, popular, markov = ceiling_and_baselines(small(**strengths))
    assert oracle > max(popular, markov) + 0.025


def test_with_every_structure_off_popularity_is_the_oracle():
    oracle, popular, markov = ceiling_and_baselines(small())
    assert oracle - popular < 0.005 and markov < popular


def test_bad_arguments():
    with pytest.raises(ValueError, match="session_strength"):
        synthetic(10, 10, num_categories=2, session_strength=1.5)
    with pytest.raises(ValueError, match="num_categories"):
        synthetic(10, 10, num_categories=11)
    with pytest.raises(ValueError, match="max_length"):
        synthetic(10, 10, num_categories=2, min_length=5, max_length=4)
    with pytest.raises(ValueError, match="spatial_strength"):
        synthetic(10, 10, num_categories=2, spatial_strength=-1)
