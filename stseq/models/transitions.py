"""The transition prior: the training data's item-to-item transition counts mixed into a
model's predictions (``TransitionPrior``), and that mixture applied to a batch of rows
(``TransitionMixture``), without the [rows, items] matrix where the losses allow."""

import torch
import torch.nn.functional as F
from torch import nn

INITIAL_SMOOTHING = 0.5413  # softplus(0.5413) ~ 1: the transition prior's beta starts at 1
INITIAL_GATE = -2.0  # sigmoid(-2) ~ 0.12: the model, not the counts, takes most of the first steps


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
