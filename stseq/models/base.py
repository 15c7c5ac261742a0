"""What every trainable recommender shares: item embeddings tied to the output layer, scoring of
all items, the training loss over every position, and the encoding of the query time.

A model encodes a ``stseq.data.Batch`` into one hidden state per position ([B, L, D]); the
state at position p predicts the item of the event after p, asked for at
``batch.next_timestamps[:, p]``. Scores are ``hidden @ item_embedding.T + item_bias`` over all
items, so every model ranks the full catalogue.
"""

import torch
import torch.nn.functional as F
from torch import nn

import stseq.nn
from stseq.backends import BACKENDS
from stseq.eval.ranking import ItemScores
from stseq.models.losses import item_logsumexp  # the item-scoring op, reached through losses

HOUR = 3600
DAY = 86_400
WEEKDAY_OFFSET = 3  # 1970-01-01 was a Thursday: (days + 3) % 7 counts from Monday = 0
QUERY_GAP_BUCKETS = 32
QUERY_GAP_MAX = 30 * DAY  # s: the last query-gap bucket starts here
KM_PER_DEGREE = 111.195  # km per degree of latitude (and of longitude at the equator)
GEO_FEATURES = 3  # x, y, |x|^2 on the local plane
INITIAL_GEO_RATE = -2.0  # softplus(-2) ~ 0.13
ANCHOR_GAP_UNIT = 3600.0  # s: the anchor weighs events by exp(a * log1p(gap / 1 h))
MAX_ANCHOR_SHARPNESS = 4.0  # |a| bound, so weights stay within exp(4 * log1p(1e6)) ~ 1e24
INITIAL_SMOOTHING = 0.5413  # softplus(0.5413) ~ 1: the transition prior's beta starts at 1
INITIAL_GATE = -2.0  # sigmoid(-2) ~ 0.12: the model, not the counts, takes most of the first steps


class SequentialRecommender(nn.Module):
    """Base of the trainable recommenders. Subclasses implement ``encode(batch) -> [B, L, D]``.

    The defaults (D = 128, dropout 0.2, untied output table) are those that worked best on the
    default synthetic data within a few epochs.

    Args:
        num_items: N; item ids are ``0..N-1`` and N is the padding id of ``Batch.items``.
        dim: D, size of item embeddings and hidden states.
        max_length: longest history window the model accepts (L).
        dropout: dropout probability used by the subclass.
        backend: passed to every stseq.nn layer (``"auto"``, ``"native"``, ``"triton"``,
            ``"reference"``), so a whole model runs on the reference twins for parity checks.
        tie_weights: score items with the input item embeddings, or with a separate output
            table (the default, which learned faster on the synthetic data).
        geo: add a spatial term to the scores (needs batches with coordinates and
            ``set_item_coordinates``; ``build_model`` does both for data with coordinates):
            ``-r1 * |x_item - x_here|^2 - r2 * |x_item - x_anchor|^2`` with x on a local
            plane, ``here`` the position's event, ``anchor`` the user's home estimate: the mean
            place of the window's events so far, each weighted by
            ``exp(a * log1p(gap before it / 1 h))`` with a learnable ``a`` (0 at first: the
            plain centroid; > 0 favours the places where sessions start), and rates
            ``r = softplus(Linear(hidden))`` >= 0 read from the hidden state (so a time-aware
            model can weigh "near here" against "near home" by the gap). It is linear in three
            item features (x, y, |x|^2), so the scoring layer stays one matrix product and the
            sampled losses apply unchanged.
        transition_prior: mix ``TransitionPrior`` into the predictions: the training data's
            item-to-item transition frequencies, weighted by a gate read from the hidden state
            (needs ``set_transitions``; ``build_model`` calls it). A dot product of
            D-dimensional vectors can only approximate a sparse N x N transition table; the
            counts give the full table at the cost of one lookup. With it, ``score`` returns
            the mixture's log-probabilities.

    Attributes:
        time_aware: whether the model reads timestamps (used to label results).
        spec: ``{"name", "options"}`` set by ``stseq.models.build_model`` to rebuild the model
            from a checkpoint.

    Example::

        model = stseq.models.build_model("gru4rec", split.train, dim=32)
        hidden = model(batch)                 # [B, L, 32]
        scores = model.score(batch)           # [B, num_items], for stseq.eval.evaluate
    """

    time_aware = False
    trainable = True

    def __init__(self, num_items, *, dim=128, max_length=50, dropout=0.2, backend="auto",
                 tie_weights=False, geo=False, transition_prior=True):
        super().__init__()
        if num_items < 1 or dim < 1 or max_length < 1:
            raise ValueError(f"num_items, dim and max_length must be >= 1, got {num_items}, "
                             f"{dim}, {max_length}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.num_items, self.dim, self.max_length = num_items, dim, max_length
        self.backend = backend
        self.spec = None
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=num_items)
        nn.init.normal_(self.item_embedding.weight[:num_items], std=dim ** -0.5)
        self.item_bias = nn.Parameter(torch.zeros(num_items))
        self.output_embedding = None if tie_weights else nn.Parameter(
            torch.randn(num_items, dim) * dim ** -0.5)
        self.dropout = nn.Dropout(dropout)
        self.geo = geo
        if geo:
            # frame: latitude and longitude of the origin (degrees), km per unit of the plane
            self.register_buffer("geo_frame", torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
            self.register_buffer("item_geo", torch.zeros(num_items, GEO_FEATURES))  # x, y, |x|^2
            self.geo_rates = nn.Linear(dim, 2)
            nn.init.zeros_(self.geo_rates.weight)
            nn.init.constant_(self.geo_rates.bias, INITIAL_GEO_RATE)
            self.anchor_sharpness = nn.Parameter(torch.zeros(()))
        self.transition_prior = TransitionPrior(num_items, dim) if transition_prior else None

    def set_transitions(self, train):
        """Count the item-to-item transitions of ``train`` (an ``Interactions``) for the
        transition prior.

        Example::

            model.set_transitions(split.train)
        """
        if self.transition_prior is None:
            raise ValueError("this model was built with transition_prior=False")
        self.transition_prior.fit(train)

    def set_item_coordinates(self, coordinates):
        """Place the items for the geo term: [N, 2] (latitude, longitude) degrees, NaN rows for
        items without a place (they sit at the centre). The plane is centred on the items'
        mean place and scaled by their spread.

        Example::

            model.set_item_coordinates(train.item_coordinates())
        """
        if not self.geo:
            raise ValueError("this model was built with geo=False")
        coordinates = torch.as_tensor(coordinates, dtype=torch.float64)
        if coordinates.shape != (self.num_items, 2):
            raise ValueError(f"coordinates must have shape [num_items, 2] = [{self.num_items}, "
                             f"2], got {tuple(coordinates.shape)}")
        known = torch.isfinite(coordinates).all(1)
        if not known.any():
            raise ValueError("no item has finite coordinates")
        origin = coordinates[known].mean(0)
        self.geo_frame[:2] = origin
        self.geo_frame[2] = 1.0
        plane = self.project(coordinates[known])
        self.geo_frame[2] = plane.square().sum(1).mean().sqrt().clamp(min=1e-3)
        plane = plane / self.geo_frame[2]
        features = torch.zeros(self.num_items, GEO_FEATURES, dtype=torch.float64)
        features[known] = torch.cat([plane, plane.square().sum(1, keepdim=True)], dim=1)
        self.item_geo.copy_(features)

    def project(self, coordinates):
        """[..., 2] degrees -> [..., 2] float64 position on the model's local plane
        (equirectangular around the items' mean place, in units of their spread)."""
        latitude0, longitude0, unit = self.geo_frame
        coordinates = coordinates.double()
        x = (coordinates[..., 1] - longitude0) * torch.cos(torch.deg2rad(latitude0))
        y = coordinates[..., 0] - latitude0
        return torch.stack([x, y], dim=-1) * (KM_PER_DEGREE / unit)

    def geo_coefficients(self, hidden, batch):
        """[B, L, 3] row coefficients of the item features (x, y, |x|^2) for the geo term."""
        if batch.coordinates is None:
            raise ValueError("this model was built with geo=True but the batch has no "
                             "coordinates")
        here = self.project(batch.coordinates)  # [B, L, 2]
        valid = (torch.arange(here.shape[1], device=here.device)
                 < batch.lengths[:, None]).unsqueeze(-1)  # [B, L, 1]
        sharpness = self.anchor_sharpness.clamp(-MAX_ANCHOR_SHARPNESS, MAX_ANCHOR_SHARPNESS)
        weight = torch.exp(sharpness.double() * torch.log1p(
            batch.time_gaps.double() / ANCHOR_GAP_UNIT)).unsqueeze(-1) * valid  # [B, L, 1]
        anchor = (here * weight).cumsum(1) / weight.cumsum(1).clamp(min=1e-30)  # [B, L, 2]
        rates = F.softplus(self.geo_rates(hidden))  # [B, L, 2]
        near = 2 * (rates[..., :1] * here.to(rates.dtype) + rates[..., 1:] * anchor.to(
            rates.dtype))
        return torch.cat([near, -rates.sum(-1, keepdim=True)], dim=-1)

    def encode(self, batch):
        """[B, L, D] hidden state at every position of ``batch``."""
        raise NotImplementedError

    def forward(self, batch):
        """[B, L, D] hidden states (checks the batch first); with ``geo``, [B, L, D + 3] with
        the geo term's coefficients appended."""
        if batch.items.shape[1] > self.max_length:
            raise ValueError(f"batch windows have {batch.items.shape[1]} positions but the model "
                             f"was built for max_length={self.max_length}")
        if batch.pad_item != self.num_items:
            raise ValueError(f"batch pads items with {batch.pad_item} but the model has "
                             f"num_items={self.num_items}: data and model do not match")
        hidden = self.encode(batch)
        if self.geo:
            hidden = torch.cat([hidden, self.geo_coefficients(hidden, batch)], dim=-1)
        return hidden

    def embed_items(self, items):
        """[B, L] item ids (padding = num_items) -> [B, L, D] embeddings, zero at padding."""
        return self.item_embedding(items)

    def output_weights(self):
        """(weight [N, D] (D + 3 with geo), bias [N]) of the scoring layer."""
        weight = (self.output_embedding if self.output_embedding is not None
                  else self.item_embedding.weight[:self.num_items])
        if self.geo:
            weight = torch.cat([weight, self.item_geo.to(weight.dtype)], dim=1)
        return weight, self.item_bias

    def logits(self, hidden):
        """[..., D] hidden states -> [..., N] scores of every item."""
        weight, bias = self.output_weights()
        return F.linear(hidden, weight.to(hidden.dtype), bias.to(hidden.dtype))

    def score(self, batch):
        """[B, N] scores of every item after each row's last event: a scoring function for
        ``stseq.eval.evaluate`` / ``recommend``."""
        hidden = self(batch)
        last = (batch.lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        rows = hidden.gather(1, last)[:, 0]  # [B, D (+ 3)]
        scores = self.logits(rows).float()
        mixture = self.transition_mixture(rows, batch.last_items)
        return scores if mixture is None else mixture.log_probs(scores)

    def item_scores(self, batch):
        """``score``'s [B, N] scores by item chunks, as an ``stseq.eval.ranking.ItemScores``
        (never [B, N]): for ``stseq.eval.evaluate`` / ``recommend`` over large catalogues.
        With the transition prior the log-sum-exp over all items comes from
        ``stseq.ops.item_logsumexp``."""
        hidden = self(batch)
        last = (batch.lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        rows = hidden.gather(1, last)[:, 0]  # [B, D (+ 3)]
        weight, bias = self.output_weights()
        weight, bias = weight.to(rows.dtype), bias.to(rows.dtype)
        mixture = self.transition_mixture(rows, batch.last_items)
        lse = None if mixture is None else item_logsumexp(rows, weight, bias).float()  # [B]

        def chunk(start, end):  # [B, end - start]
            logits = F.linear(rows, weight[start:end], bias[start:end]).float()
            return logits if mixture is None else mixture.log_probs_range(
                logits - lse[:, None], start)

        def at(items):  # [B, R]
            logits = (torch.einsum("bd,brd->br", rows, weight[items]) + bias[items]).float()
            return logits if mixture is None else mixture.log_probs_at(logits - lse[:, None],
                                                                       items)

        return ItemScores(chunk, at, len(rows), self.num_items, rows.device)

    def transition_mixture(self, rows, previous, targets=None):
        """The transition prior's mixture for hidden states ``rows`` [M, D (+ 3)] after items
        ``previous`` [M]: None without the prior, or a ``TransitionMixture`` that the losses
        apply to their logits. ``targets`` [M] (training) marks each row's own next item,
        whose transition the training counts include: the prior leaves it out."""
        if self.transition_prior is None:
            return None
        return self.transition_prior.mixture(rows[:, :self.dim], previous, targets)

    def training_loss(self, batch, loss):
        """(sum of the per-target losses, number of targets) over every position of a
        training batch whose next item exists; ``loss`` is a ``stseq.models.losses`` loss."""
        return self.loss_of(self(batch), batch, loss)

    def loss_of(self, hidden, batch, loss):
        """(sum of the per-target losses, number of targets) of hidden states [B, L, D (+ 3)]
        predicting ``batch.next_items``."""
        mask = batch.next_items != batch.pad_item
        weight, bias = self.output_weights()
        rows, targets = hidden[mask], batch.next_items[mask]  # [M, D (+ 3)], [M]
        mixture = self.transition_mixture(rows, batch.items[mask], targets)
        losses = loss(rows, targets, weight, bias, mixture)
        return losses.sum(), int(mask.sum())


class TransitionPrior(nn.Module):
    """The training data's item-to-item transitions as a mixture component: after item i the
    model predicts ``(1 - w) * softmax(logits) + w * q(j | i)`` with the transition
    distribution ``q(j | i) = count(i -> j) / (count(i -> .) + beta)`` (a learned smoothing
    ``beta = softplus(.) > 0`` leaves the rest of the mass to the model) and the weight
    ``w = sigmoid(Linear(h))`` read from the hidden state h, so the model leans on the counts
    within a session and drops them after a long gap. This is the Markov chain baseline's table
    mixed with the model the way the data mixes "follow the previous item" with everything
    else: a sum of probabilities, which a score term added to the logits (a product) cannot
    express. During training each target's own transition is left out of its counts, so the
    weight is learned for transitions the counts have not seen, as at evaluation. Items with
    no transitions out of them (and the padding item) get w = 0.

    The counts are stored sparse (sorted keys ``i * N + j``), so memory grows with the
    distinct transitions, not with N^2.

    Example::

        prior = TransitionPrior(num_items=2000, dim=64).fit(split.train)
        mixture = prior.mixture(hidden, batch.last_items)   # hidden [B, 64]
        log_probs = mixture.log_probs(logits)                # logits [B, 2000]
    """

    def __init__(self, num_items, dim):
        super().__init__()
        self.num_items = num_items
        self.gate = nn.Linear(dim, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, INITIAL_GATE)
        self.smoothing = nn.Parameter(torch.tensor(INITIAL_SMOOTHING))
        self.register_buffer("keys", torch.zeros(0, dtype=torch.int64))  # [T] sorted i * N + j
        self.register_buffer("counts", torch.zeros(0))  # [T]

    def fit(self, train):
        """Count the transitions between consecutive events of each user in ``train``."""
        if train.num_items != self.num_items:
            raise ValueError(f"train has {train.num_items} items but the prior was built for "
                             f"{self.num_items}")
        keys, counts = train.transition_counts()
        device = self.keys.device
        self.keys = torch.from_numpy(keys).to(device)
        self.counts = torch.from_numpy(counts).float().to(device)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the table's size is the data's: take the checkpoint's as it is
        for name in ("keys", "counts"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name],
                                                     device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def counts_at(self, previous, columns):
        """[M, K] float counts of ``previous`` [M] -> ``columns`` [M, K]; 0 for unseen
        transitions, for the padding item and for negative columns (no item)."""
        query = previous[:, None] * self.num_items + columns  # [M, K]
        if len(self.keys) == 0:
            return torch.zeros(query.shape, device=query.device)
        at = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)
        return torch.where((self.keys[at] == query) & (columns >= 0), self.counts[at], 0.0)

    def totals(self, previous):
        """[M] float number of transitions out of ``previous`` [M] (0 for the padding item)."""
        out = torch.zeros(self.num_items + 1, device=self.counts.device)
        out.index_add_(0, self.keys // self.num_items, self.counts)
        return out[previous]

    def seen(self, previous):
        """(rows, items, counts) [T] of every seen transition out of ``previous`` [M]: row m
        appears once per distinct item that followed ``previous[m]`` in the training data."""
        n = self.num_items
        starts = torch.searchsorted(self.keys, previous * n)  # [M]
        sizes = torch.searchsorted(self.keys, (previous + 1) * n) - starts  # [M]
        rows = torch.repeat_interleave(torch.arange(len(previous), device=previous.device),
                                       sizes)  # [T]
        first = torch.cumsum(sizes, 0) - sizes  # [M]
        at = (torch.arange(len(rows), device=previous.device)
              - torch.repeat_interleave(first - starts, sizes))  # [T] positions in keys
        return rows, self.keys[at] % n, self.counts[at]

    def mixture(self, hidden, previous, targets=None):
        """hidden [M, D], previous [M] item ids (padding id: no prior) and, when training,
        ``targets`` [M] -> the ``TransitionMixture`` of these rows."""
        return TransitionMixture(self, self.gate(hidden).float()[:, 0],
                                 F.softplus(self.smoothing).float(), previous, targets)


class TransitionMixture:
    """``TransitionPrior``'s mixture for M rows, as the losses and ``score`` use it:
    ``log_probs(logits)`` turns full logits [M, N] into the mixture's log-probabilities
    (touching only the seen transitions: elsewhere the model's log-softmax plus log(1 - w));
    ``log_probs(logits, columns)`` does it over a candidate set, logits [M, K] of the item ids
    ``columns`` [M, K] (the sampled losses; a negative id marks a candidate left out, whose
    logit must be -inf).

    Example::

        mixture = model.transition_mixture(rows, batch.last_items)
        log_probs = mixture.log_probs(model.logits(rows).float())   # [B, N]
    """

    def __init__(self, prior, gate, beta, previous, targets):
        self.prior, self.beta = prior, beta  # beta []
        self._seen = None  # prior.seen(previous), computed on first use
        self.previous, self.targets = previous, targets
        totals = prior.totals(previous)  # [M]
        if targets is not None:  # the target's own transition is in the training counts
            own = prior.counts_at(previous, targets[:, None])[:, 0].gt(0)
            totals = totals - own.to(totals.dtype)
        self.totals = totals
        self.log_w = F.logsigmoid(gate)  # [M], finite (rows without counts never use it)
        self.log_rest = torch.where(totals > 0, F.logsigmoid(-gate), 0.0)  # log(1 - w)

    def _mixed(self, log_model, counts, rows):
        # log((1 - w) p + w q) where q > 0, log((1 - w) p) elsewhere; both branches finite in
        # their gradients (log q only where q > 0, log w finite)
        q = counts / (self.totals[rows] + self.beta)
        log_q = torch.log(torch.where(counts > 0, q, 1.0))
        mixed = torch.logaddexp(log_model, self.log_w[rows] + log_q)
        return torch.where(counts > 0, mixed, log_model)

    def _left_out(self, counts, columns, rows):
        if self.targets is None:
            return counts
        return (counts - (columns == self.targets[rows]).to(counts.dtype)).clamp(min=0)

    def log_probs_at(self, log_softmax, columns):
        """[M, K] log-probabilities of the mixture at the items ``columns`` [M, K], from the
        model's log-softmax over all N items at them (``score - item_logsumexp``): the fused
        full-softmax loss, no [M, N] needed."""
        rows = torch.arange(len(log_softmax), device=log_softmax.device)[:, None]
        counts = self._left_out(self.prior.counts_at(self.previous, columns), columns, rows)
        return self._mixed(log_softmax + self.log_rest[:, None], counts, rows)

    def log_probs_range(self, log_softmax, start):
        """[M, C] log-probabilities of the mixture over the items start .. start + C - 1, from
        the model's log-softmax over all N items at them: chunked full ranking."""
        if self._seen is None:
            self._seen = self.prior.seen(self.previous)
        rows, items, counts = self._seen  # [T]
        inside = (items >= start) & (items < start + log_softmax.shape[1])
        rows, items, counts = rows[inside], items[inside], counts[inside]
        counts = self._left_out(counts, items, rows)
        log_model = log_softmax + self.log_rest[:, None]
        at = (rows, items - start)
        return log_model.index_put(at, self._mixed(log_model[at], counts, rows))

    def log_probs(self, logits, columns=None):
        """[M, K] log-probabilities of the mixture over all items (``columns`` None, K = N) or
        over the candidates ``columns`` [M, K]."""
        log_model = torch.log_softmax(logits, dim=-1) + self.log_rest[:, None]
        if columns is not None:
            rows = torch.arange(len(logits), device=logits.device)[:, None]
            counts = self._left_out(self.prior.counts_at(self.previous, columns), columns, rows)
            return self._mixed(log_model, counts, rows)
        rows, items, counts = self.prior.seen(self.previous)  # [T]
        counts = self._left_out(counts, items, rows)
        return log_model.index_put((rows, items), self._mixed(log_model[rows, items], counts,
                                                              rows))


class QueryTimeEncoding(nn.Module):
    """Embeds when each position's prediction is asked for: the gap from the event to the query
    time (``next_timestamps``), log-bucketed with interpolation by a ``TimeGapEmbedding`` over
    (event, query) pairs, plus the hour of day and day of week (UTC) of the query time.

    Example::

        encode = QueryTimeEncoding(32)
        context = encode(batch.timestamps, batch.next_timestamps)   # [B, L, 32]
    """

    def __init__(self, dim, *, backend="auto"):
        super().__init__()
        self.gap = stseq.nn.TimeGapEmbedding(QUERY_GAP_BUCKETS, dim, window=1,
                                             max_gap=QUERY_GAP_MAX, interpolate=True,
                                             backend=backend)
        self.hour = nn.Embedding(24, dim)
        self.weekday = nn.Embedding(7, dim)
        for table in (self.hour, self.weekday):
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, timestamps, next_timestamps):
        """timestamps, next_timestamps [B, L] int64 seconds -> [B, L, D]."""
        batch, length = timestamps.shape
        pairs = torch.stack([timestamps, next_timestamps], dim=-1).view(-1, 2)  # [B * L, 2]
        gap = self.gap(pairs)[:, 1].view(batch, length, -1)  # [B, L, D]
        hour = torch.div(next_timestamps, HOUR, rounding_mode="floor") % 24
        weekday = (torch.div(next_timestamps, DAY, rounding_mode="floor") + WEEKDAY_OFFSET) % 7
        return gap + self.hour(hour) + self.weekday(weekday)


class ContextFusion(nn.Module):
    """Mixes context vectors into a hidden state: ``LayerNorm(h + MLP([h; c_1; ...]))``, so the
    context can switch what the state predicts (e.g. in-session transitions vs long-term
    interests).

    Example::

        fuse = ContextFusion(32, num_contexts=2)
        out = fuse(hidden, query_context, profile)   # [B, L, 32]
    """

    def __init__(self, dim, *, num_contexts=1, dropout=0.0):
        super().__init__()
        width = (1 + num_contexts) * dim
        self.num_contexts = num_contexts
        self.mix = nn.Sequential(nn.Linear(width, 2 * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, hidden, *contexts):
        """hidden and each context [B, L, D] -> [B, L, D]."""
        if len(contexts) != self.num_contexts:
            raise ValueError(f"expected {self.num_contexts} context tensors, got {len(contexts)}")
        return self.norm(hidden + self.mix(torch.cat([hidden, *contexts], dim=-1)))


def history_mean(x, lengths):
    """[B, L, D] per-position vectors -> [B, L, D] mean over the window's positions up to and
    including each one (the long-term profile of what the user did so far); zero at padding.

    Example::

        profile = history_mean(item_embeddings, batch.lengths)
    """
    valid = (torch.arange(x.shape[1], device=x.device) < lengths[:, None]).unsqueeze(-1)
    count = valid.cumsum(1).clamp(min=1).to(x.dtype)
    return (x * valid).cumsum(1) / count * valid


def time_gaps_as_dt(time_gaps, time_unit):
    """[B, L] int64 seconds since the previous event -> [B, L] float ``log1p(gap / time_unit)``,
    the dt fed to the time-aware cells (gaps span seconds to months; the log keeps the cells'
    ``dt * w`` terms in range)."""
    return torch.log1p(time_gaps.double() / time_unit).float()

