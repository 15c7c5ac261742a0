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

from stseq.backends import check_backend
from stseq.data.batching import ItemScores
from stseq.models.geo import GeoScoring
from stseq.models.losses import item_logsumexp  # the item-scoring op, reached through losses
from stseq.models.transitions import TransitionPrior


class SequentialRecommender(GeoScoring, nn.Module):
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
        window_phase: how ``stseq.train.Trainer`` cuts its training windows unless
            ``TrainConfig.window_phase`` says otherwise (``stseq.data.training_batches``):
            "end" here, "random" for the attention recommenders.
        spec: ``{"name", "options"}`` set by ``stseq.models.build_model`` to rebuild the model
            from a checkpoint.

    Example::

        model = stseq.models.build_model("gru4rec", split.train, dim=32)
        hidden = model(batch)                 # [B, L, 32]
        scores = model.score(batch)           # [B, num_items], for stseq.eval.evaluate
    """

    time_aware = False
    trainable = True
    window_phase = "end"

    def __init__(self, num_items, *, dim=128, max_length=50, dropout=0.2, backend="auto",
                 tie_weights=False, geo=False, transition_prior=True):
        super().__init__()
        if num_items < 1 or dim < 1 or max_length < 1:
            raise ValueError(f"num_items, dim and max_length must be >= 1, got {num_items}, "
                             f"{dim}, {max_length}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        check_backend(backend)
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
            self.init_geo(num_items, dim)
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
        """``score``'s [B, N] scores by item chunks, as an ``stseq.data.ItemScores``
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
