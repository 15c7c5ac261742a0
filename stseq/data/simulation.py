"""Seeded synthetic spatio-temporal behaviour with a known next-item distribution.

``synthetic(...)`` draws a world (items with categories, popularity and places on a map; users
with category interests and a home; item-to-item transitions; daily and weekly rhythms) and
simulates each user's events. Because every event is drawn from a known distribution, the
returned ``Oracle`` gives the true next-item probabilities of any position and the expected
metrics of ranking by them: the ceiling models are reported against.

The process, for user u and its event j at time t (hour h = t // 3600 % 24, weekday d with
Monday = 0, all UTC; the map is local, distances in km on it):

- Gap: after a "buy", or otherwise with probability 1 - 0.75, a new session starts at least
  2 h later, on a day ~ 1 + Geometric(1/2) days on, at an hour drawn from an evening-peaked
  daily activity curve; else the session continues after 10 s + Exponential(240 s), at most
  ``SESSION_GAP`` = 1800 s. So a gap <= 1800 s means "same session".
- Item, same session (previous item i'): with probability ``session_strength`` a successor
  of i' (5 per item, Dirichlet(1) weights); otherwise the long-term choice anchored at i'.
- Item, new session: the long-term choice anchored at the user's home.
- Long-term choice anchored at point a: category c with probability
  ``softmax_c(interest_strength * log theta_u[c] + rhythm_strength * rhythm[c, h, d])``, then
  item i of c with probability ``softmax_i(log popularity_i - spatial_strength *
  |x_i - a| / 2 km)`` over the items of c.
- Behavior: view / cart / buy with probabilities 0.85 / 0.10 / 0.05.

Each strength at 0 switches its structure off (with all four off, items follow popularity).
"""

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from stseq.data.interactions import Interactions
from stseq.data.splits import Targets

START_TIME = 1_704_067_200  # 2024-01-01 00:00 UTC, a Monday
DAY = 86_400
SESSION_GAP = 1_800  # s: a gap up to this continues the session
NEW_SESSION_MIN_GAP = 7_200
SHORT_GAP_MIN, SHORT_GAP_MEAN = 10, 240
CONTINUE_PROBABILITY = 0.75
BEHAVIOR_NAMES = ("view", "cart", "buy")
BEHAVIOR_PROBABILITIES = (0.85, 0.10, 0.05)
SUCCESSORS = 5
DISTANCE_SCALE_KM = 2.0
MAP_HALF_WIDTH_KM = 15.0
REGION_SPREAD_KM = 1.0
INTEREST_CONCENTRATION = 0.5
WEEKDAY_SPREAD = 0.5
ACTIVITY_PEAK_HOUR = 20
MAP_CENTER = (51.5074, -0.1278)  # degrees; local time there is UTC in winter
KM_PER_DEGREE_LATITUDE = 110.574


@dataclass(frozen=True)
class SyntheticData:
    """What ``synthetic`` returns: the events, their oracle, the item attributes and the
    arguments used.

    Fields: ``interactions`` (``Interactions`` with coordinates and view/cart/buy
    behaviors), ``oracle`` (``Oracle``), ``item_categories`` [num_items] int64,
    ``item_coordinates`` [num_items, 2] float64 degrees, ``params`` dict.
    """

    interactions: Interactions
    oracle: "Oracle"
    item_categories: np.ndarray
    item_coordinates: np.ndarray
    params: dict


@dataclass(frozen=True, eq=False)
class Oracle:
    """The generator's true next-item distribution.

    ``probabilities(targets)`` gives it for targets of ``interactions`` (the event at each
    target position); ``stseq.eval.oracle_metrics`` the expected HR@K / NDCG@K / ... of ranking
    by it;
    and the oracle is itself a scoring function, ``oracle(batch) -> [B, num_items]``, usable
    with ``stseq.eval.evaluate`` (it reads the user, last item, last time and query time of
    each row, so rows must come from ``interactions``).

    Example::

        data = stseq.data.synthetic(seed=0)
        split = stseq.data.leave_one_out(data.interactions)
        ceiling = stseq.eval.oracle_metrics(data.oracle, split.test, ks=(10,))  # {"NDCG@10": ...}
    """

    session_strength: float
    interest_strength: float
    rhythm_strength: float
    spatial_strength: float
    item_categories: np.ndarray  # [N]
    category_members: np.ndarray  # [C, M] item ids of each category, padded with N
    log_popularity: np.ndarray  # [N]
    item_xy: np.ndarray  # [N, 2] km on the local map
    successors: np.ndarray  # [N, S]
    successor_probabilities: np.ndarray  # [N, S]
    log_interests: np.ndarray  # [U, C]
    home_xy: np.ndarray  # [U, 2] km
    rhythm: np.ndarray  # [C, 24, 7]
    interactions: Interactions | None = None  # the events drawn from this oracle

    @property
    def num_items(self):
        return len(self.item_categories)

    def category_logits(self, users, times):
        """[B, C] unnormalised log-probabilities of the long-term category at ``times``."""
        hour, weekday = (times // 3600) % 24, (times // DAY + 3) % 7  # 1970-01-01: Thursday
        return (self.interest_strength * self.log_interests[users]
                + self.rhythm_strength * self.rhythm[:, hour, weekday].T)

    @cached_property
    def _padded_items(self):
        """log popularity [N + 1] and x, y [N + 1] km with a padding item N (-inf, at 0)."""
        return (np.append(self.log_popularity, -np.inf), np.append(self.item_xy[:, 0], 0.0),
                np.append(self.item_xy[:, 1], 0.0))

    def item_logits(self, candidates, anchors):
        """[B, M] unnormalised log-probabilities of ``candidates`` [B, M] (N = padding, -inf)
        given the anchor points [B, 2] km."""
        log_popularity, x, y = self._padded_items
        logits = log_popularity[candidates]
        if self.spatial_strength == 0:
            return logits
        distance = np.hypot(x[candidates] - anchors[:, :1], y[candidates] - anchors[:, 1:])
        return logits - (self.spatial_strength / DISTANCE_SCALE_KM) * distance

    def next_item_probabilities(self, users, previous_items, previous_times, query_times):
        """[B, N] float64 true distribution of the next item of ``users`` whose last event was
        ``previous_items`` (-1: none) at ``previous_times``, asked for at ``query_times``."""
        users, previous, previous_times, query_times = (
            np.asarray(a, dtype=np.int64) for a in (users, previous_items, previous_times,
                                                     query_times))
        same_session = (previous >= 0) & (query_times - previous_times <= SESSION_GAP)
        anchors = np.where(same_session[:, None], self.item_xy[np.maximum(previous, 0)],
                           self.home_xy[users])
        category = _softmax(self.category_logits(users, query_times))  # [B, C]
        members = self.category_members  # [C, M]
        logits = self.item_logits(np.broadcast_to(members.reshape(-1), (len(users), members.size)),
                                  anchors).reshape(len(users), *members.shape)  # [B, C, M]
        within = _softmax(logits) * category[:, :, None]  # [B, C, M]
        probabilities = np.zeros((len(users), self.num_items + 1))
        rows = np.arange(len(users))[:, None]
        probabilities[rows, members.reshape(1, -1)] = within.reshape(len(users), -1)
        probabilities = probabilities[:, :-1]
        moved = np.nonzero(same_session)[0]
        transition = np.zeros((len(moved), self.num_items))
        np.add.at(transition, (np.arange(len(moved))[:, None], self.successors[previous[moved]]),
                  self.successor_probabilities[previous[moved]])
        probabilities[moved] = (self.session_strength * transition
                                + (1 - self.session_strength) * probabilities[moved])
        return probabilities

    def probabilities(self, targets):
        """[T, N] float64 true distribution of the event at each target position (targets of
        ``self.interactions`` with a history of at least one event)."""
        if not isinstance(targets, Targets):
            raise ValueError(f"targets must be stseq.data.Targets, got {type(targets).__name__}")
        if (targets.positions < 1).any():
            raise ValueError("every target needs at least one earlier event (position >= 1)")
        before = self.interactions.offsets[targets.users] + targets.positions - 1
        return self.next_item_probabilities(targets.users, self.interactions.items[before],
                                            self.interactions.timestamps[before],
                                            targets.query_times)

    def __call__(self, batch):
        """Scores for a ``stseq.data.Batch`` of ``self.interactions``: [B, N] probabilities."""
        last = (batch.lengths - 1).clamp(min=0)[:, None]
        probabilities = self.next_item_probabilities(
            batch.users.cpu().numpy(),
            torch.where(batch.lengths == 0, -1, batch.last_items).cpu().numpy(),
            batch.timestamps.gather(1, last)[:, 0].cpu().numpy(), batch.query_times.cpu().numpy())
        return torch.from_numpy(probabilities).to(batch.items.device)


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=-1, keepdims=True)


def _gumbel_argmax(logits, rng):
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=-1)


def synthetic(num_users=2000, num_items=2000, *, num_categories=20, num_regions=25,
              min_length=20, max_length=200, session_strength=0.7, interest_strength=1.0,
              rhythm_strength=1.0, spatial_strength=1.0, seed=0):
    """Generate synthetic spatio-temporal behaviour (see the module docstring for the process).

    Args:
        num_users, num_items: sizes.
        num_categories: item categories (<= num_items); num_regions: clusters of places.
        min_length, max_length: sequence lengths are log-uniform in this range.
        session_strength: in [0, 1], probability that a same-session event follows the
            previous item's transitions.
        interest_strength, rhythm_strength, spatial_strength: >= 0 weights of the users'
            category interests, the hour/weekday rhythms and the distance decay.
        seed: the same seed gives the same data.

    Returns:
        ``SyntheticData`` (``interactions``, ``oracle``, ``item_categories``,
        ``item_coordinates``, ``params``).

    Example::

        data = stseq.data.synthetic(num_users=500, num_items=300, seed=1)
        data.interactions            # Interactions(500 users, 300 items, ... events, ...)
    """
    params = dict(num_users=num_users, num_items=num_items, num_categories=num_categories,
                  num_regions=num_regions, min_length=min_length, max_length=max_length,
                  session_strength=session_strength, interest_strength=interest_strength,
                  rhythm_strength=rhythm_strength, spatial_strength=spatial_strength, seed=seed)
    _check(params)
    rng = np.random.default_rng(seed)
    oracle_fields, latlon = _world(rng, params)
    lengths = np.exp(rng.uniform(np.log(min_length), np.log(max_length + 1), num_users))
    lengths = np.clip(lengths.astype(np.int64), min_length, max_length)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    oracle = Oracle(**oracle_fields)
    items, times, behaviors = _simulate(oracle, lengths, offsets, rng, rhythm_strength)
    interactions = Interactions(offsets, items, times, num_items=num_items,
                                coordinates=latlon[items], behaviors=behaviors,
                                behavior_names=BEHAVIOR_NAMES)
    oracle = replace(oracle, interactions=interactions)
    return SyntheticData(interactions, oracle, oracle.item_categories, latlon, params)


def _check(params):
    for name in ("num_users", "num_items", "num_categories", "num_regions", "min_length"):
        if not isinstance(params[name], (int, np.integer)) or params[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {params[name]!r}")
    if params["num_categories"] > params["num_items"]:
        raise ValueError(f"num_categories ({params['num_categories']}) must not exceed "
                         f"num_items ({params['num_items']})")
    if params["num_items"] < SUCCESSORS + 1:
        raise ValueError(f"num_items must be at least {SUCCESSORS + 1}, got {params['num_items']}")
    if params["max_length"] < params["min_length"]:
        raise ValueError(f"max_length ({params['max_length']}) must be >= min_length "
                         f"({params['min_length']})")
    if not 0 <= params["session_strength"] <= 1:
        raise ValueError(f"session_strength must be in [0, 1], got {params['session_strength']}")
    for name in ("interest_strength", "rhythm_strength", "spatial_strength"):
        if not params[name] >= 0:
            raise ValueError(f"{name} must be >= 0, got {params[name]}")


def _world(rng, params):
    """The latent parameters (Oracle fields) and item coordinates [N, 2] in degrees."""
    n, users = params["num_items"], params["num_users"]
    categories = params["num_categories"]
    item_categories = rng.permutation(np.arange(n) % categories)
    order = np.argsort(item_categories, kind="stable")
    counts = np.bincount(item_categories, minlength=categories)
    members = np.full((categories, counts.max()), n, dtype=np.int64)
    rank = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)  # place in its category
    members[item_categories[order], rank] = order
    centers = rng.uniform(-MAP_HALF_WIDTH_KM, MAP_HALF_WIDTH_KM, (params["num_regions"], 2))
    item_xy = centers[rng.integers(len(centers), size=n)] + rng.normal(0, REGION_SPREAD_KM, (n, 2))
    home_xy = centers[rng.integers(len(centers), size=users)] + rng.normal(
        0, REGION_SPREAD_KM, (users, 2))
    interests = rng.dirichlet(np.full(categories, INTEREST_CONCENTRATION), size=users)
    peaks = rng.uniform(0, 24, categories)
    daily = np.cos(2 * np.pi * (np.arange(24)[None, :] - peaks[:, None]) / 24)  # [C, 24]
    rhythm = daily[:, :, None] + WEEKDAY_SPREAD * rng.normal(size=(categories, 1, 7))
    fields = dict(
        session_strength=float(params["session_strength"]),
        interest_strength=float(params["interest_strength"]),
        rhythm_strength=float(params["rhythm_strength"]),
        spatial_strength=float(params["spatial_strength"]),
        item_categories=item_categories, category_members=members,
        log_popularity=rng.normal(0.0, 1.0, n), item_xy=item_xy,
        successors=(np.arange(n)[:, None] + rng.integers(1, n, (n, SUCCESSORS))) % n,
        successor_probabilities=rng.dirichlet(np.ones(SUCCESSORS), size=n),
        log_interests=np.log(np.maximum(interests, 1e-12)), home_xy=home_xy, rhythm=rhythm)
    latitude = MAP_CENTER[0] + item_xy[:, 1] / KM_PER_DEGREE_LATITUDE
    longitude = MAP_CENTER[1] + item_xy[:, 0] / (
        111.320 * np.cos(np.deg2rad(MAP_CENTER[0])))
    return fields, np.stack([latitude, longitude], axis=1)


def _session_starts(earliest, rng, activity):
    """[k] start times of new sessions: no earlier than ``earliest``, on a day ~ 1 +
    Geometric(1/2) later, at an hour drawn from ``activity`` [24]."""
    day = earliest // DAY + rng.geometric(0.5, len(earliest)) - 1
    start = day * DAY + rng.choice(24, len(earliest), p=activity) * 3600 + rng.integers(
        0, 3600, len(earliest))
    return np.where(start < earliest, start + DAY, start)


def _simulate(oracle, lengths, offsets, rng, rhythm_strength):
    """Draw every user's events, step j for all users still active at once; returns the flat
    items, timestamps and behaviors [N] in ``offsets`` order."""
    order = np.argsort(-lengths, kind="stable")  # active users at step j are order[:k]
    users_total = len(lengths)
    total = offsets[-1]
    items, times = np.zeros(total, np.int64), np.zeros(total, np.int64)
    behaviors = np.zeros(total, np.int64)
    activity = np.exp(rhythm_strength * np.cos(2 * np.pi * (np.arange(24) - ACTIVITY_PEAK_HOUR)
                                               / 24))
    activity /= activity.sum()
    previous_item = np.full(users_total, -1)
    previous_time = START_TIME + rng.integers(0, 28 * DAY, users_total)
    previous_buy = np.zeros(users_total, dtype=bool)
    active_counts = users_total - np.searchsorted(np.sort(lengths), np.arange(lengths.max()),
                                                  side="right")
    cumulative = np.cumsum(oracle.successor_probabilities, axis=1)
    for step, k in enumerate(active_counts):
        users = order[:k]
        if step == 0:
            same_session = np.zeros(k, dtype=bool)
            now = _session_starts(previous_time[:k], rng, activity)
        else:
            same_session = ~previous_buy[:k] & (rng.random(k) < CONTINUE_PROBABILITY)
            gap = np.minimum(SHORT_GAP_MIN + rng.exponential(SHORT_GAP_MEAN, k).astype(np.int64),
                             SESSION_GAP)
            later = _session_starts(previous_time[:k] + NEW_SESSION_MIN_GAP, rng, activity)
            now = np.where(same_session, previous_time[:k] + gap, later)
        previous = previous_item[:k]
        anchors = np.where(same_session[:, None], oracle.item_xy[np.maximum(previous, 0)],
                           oracle.home_xy[users])
        category = _gumbel_argmax(oracle.category_logits(users, now), rng)
        candidates = oracle.category_members[category]  # [k, M]
        chosen = candidates[np.arange(k), _gumbel_argmax(oracle.item_logits(candidates, anchors),
                                                         rng)]
        follow = np.nonzero(same_session & (rng.random(k) < oracle.session_strength))[0]
        pick = (rng.random(len(follow))[:, None] > cumulative[previous[follow]]).sum(1)
        chosen[follow] = oracle.successors[previous[follow], np.minimum(pick, SUCCESSORS - 1)]
        behavior = rng.choice(len(BEHAVIOR_NAMES), k, p=BEHAVIOR_PROBABILITIES)
        index = offsets[users] + step
        items[index], times[index], behaviors[index] = chosen, now, behavior
        previous_item[:k], previous_time[:k] = chosen, now
        previous_buy[:k] = behavior == BEHAVIOR_NAMES.index("buy")
    return items, times, behaviors
