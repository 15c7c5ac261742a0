"""Training losses over the item catalogue. Each is called as
``loss(hidden [M, D], targets [M], weight [N, D], bias [N], mixture=None) -> [M]`` per-target
losses, where ``weight`` / ``bias`` are the model's scoring layer, so that no loss needs the full
[M, N] logits, and ``mixture`` (``SequentialRecommender.transition_mixture``) is None or turns
the model's scores into the log-probabilities the model predicts:
``mixture.log_probs(logits [M, N]) -> [M, N]`` over all items,
``mixture.log_probs(logits [M, K], columns [M, K]) -> [M, K]`` over the item ids ``columns``
(softmax over those K), ``mixture.log_probs_at(log_softmax [M, K], columns [M, K])`` from the
model's log-softmax values over all N items at ``columns``
(``stseq.models.transitions.TransitionMixture``).

- ``FullSoftmax`` (the default, ``"ce"``): cross-entropy over all N items. Fused by default:
  ``stseq.ops.item_cross_entropy`` (on the CPU the losses and their gradients in one pass over
  row chunks, memory O(chunk * N) instead of O(M * N)), the transition mixture included;
  ``fused=False`` is the materialised reference path (``F.linear`` + ``F.cross_entropy``).
- ``SampledSoftmax`` (``"sampled"``): cross-entropy over the target and ``num_negatives`` items
  drawn once per call and shared by the batch (a negative equal to the row's target is masked),
  from a uniform or a popularity (count^alpha) proposal with the log-Q correction, optionally
  with the batch's other targets as extra (in-batch) negatives.
- ``BinaryCrossEntropy`` (``"bce"``): the target against ``num_negatives`` uniform negatives
  per target, each scored by a sigmoid (the original SASRec loss); with a mixture, each
  candidate's probability is its mixture probability among the row's candidates.

Negatives come from torch's global generator, so seeding and checkpointing it (the trainer
does) makes them reproducible.
"""

import torch
import torch.nn.functional as F

from stseq.ops.scoring import (check_targets, item_cross_entropy, item_logsumexp, log_softmax_at,
                               target_scores)

PROPOSALS = ("uniform", "popularity")


class FullSoftmax:
    """Cross-entropy over every item: fused (``item_cross_entropy``, never [M, N]) by default,
    or materialised (``fused=False``: ``F.linear`` + ``F.cross_entropy``, the reference).

    With a transition mixture the loss is ``-log((1 - w) exp(s_t - lse) + w q_t)``: a per-row
    function of the cross-entropy, so ``item_cross_entropy`` computes it in the same pass
    (``log_keep`` = the mixture's ``log_rest``, log(1 - w); ``log_prior`` = log(w q_t)); a
    mixture without ``log_rest`` gets its ``log_probs_at`` of ``s_t - item_logsumexp``.

    Example::

        loss = FullSoftmax()
        per_target = loss(hidden, targets, *model.output_weights())   # [M]
    """

    name = "ce"

    def __init__(self, *, fused=True, label_smoothing=0.0, chunk_rows=None):
        if not isinstance(fused, bool):
            raise TypeError(f"fused must be a bool, got {type(fused).__name__}")
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"label_smoothing must be a number in [0, 1], got "
                             f"{label_smoothing!r}")
        self.fused, self.label_smoothing = fused, label_smoothing
        self.chunk_rows = chunk_rows  # rows per chunk of item_cross_entropy's native kernel

    def __call__(self, hidden, targets, weight, bias, mixture=None):
        weight, bias = weight.to(hidden.dtype), bias.to(hidden.dtype)
        if mixture is not None and self.label_smoothing > 0:
            raise ValueError("label_smoothing is not defined for the transition mixture; build "
                             "the model with transition_prior=False or use label_smoothing=0")
        if not self.fused:
            logits = F.linear(hidden, weight, bias).float()
            if mixture is None:
                return F.cross_entropy(logits, targets, reduction="none",
                                       label_smoothing=self.label_smoothing)
            return F.nll_loss(mixture.log_probs(logits), targets, reduction="none")  # [M]
        if mixture is None:
            return item_cross_entropy(hidden, weight, bias, targets, reduction="none",
                                      label_smoothing=self.label_smoothing,
                                      chunk_rows=self.chunk_rows)
        check_targets(targets, hidden, weight, -100)
        accumulate = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        if not hasattr(mixture, "log_rest"):  # any mixture: its log-probs at the target
            lse = item_logsumexp(hidden, weight, bias)  # [M]
            log_softmax = log_softmax_at(target_scores(hidden, weight, bias, targets), lse)
            return -mixture.log_probs_at(log_softmax[:, None], targets[:, None])[:, 0]
        # TransitionMixture: -logaddexp(log(1 - w) - ce, log(w q_t)) in the one-pass kernel,
        # log(w q_t) read from the mixture at a log-softmax of -inf (-inf without a prior)
        no_model = torch.full((len(targets), 1), float("-inf"), dtype=accumulate,
                              device=hidden.device)
        log_prior = mixture.log_probs_at(no_model, targets[:, None])[:, 0]
        return item_cross_entropy(hidden, weight, bias, targets, reduction="none",
                                  log_keep=mixture.log_rest.to(accumulate),
                                  log_prior=log_prior.to(accumulate), chunk_rows=self.chunk_rows)


class SampledSoftmax:
    """Cross-entropy over the target and ``num_negatives`` items drawn once per call and shared
    by every row, plus, with ``in_batch``, the call's other targets (a candidate equal to the
    row's target is left out).

    Proposals: ``"uniform"``, or ``"popularity"``: item j drawn with probability
    Q(j) ~ counts[j]^alpha (the unigram^alpha of word2vec / YouTube). Every candidate's logit is
    corrected by -log(expected draws of it) (the log-Q correction, as TensorFlow's
    ``sampled_softmax_loss``), so the loss estimates the full softmax; in-batch negatives are
    drawn by the data, Q ~ counts (alpha = 1), corrected likewise when counts are given. Under
    the uniform proposal the correction is one constant and changes nothing.

    Args:
        num_negatives: shared negatives per call (>= 1).
        proposal: "uniform" or "popularity".
        counts: [N] item frequencies (e.g. ``torch.bincount(train.items, minlength=N)``),
            needed by "popularity" and by the in-batch correction; ``fit(train)`` sets them.
        alpha: exponent of the popularity proposal (0.75 by default).
        in_batch: add the batch's targets as negatives.

    Example::

        loss = SampledSoftmax(num_negatives=100, proposal="popularity").fit(split.train)
        per_target = loss(hidden, targets, *model.output_weights())   # [M]
    """

    name = "sampled"

    def __init__(self, num_negatives=100, *, proposal="uniform", counts=None, alpha=0.75,
                 in_batch=False):
        if not isinstance(num_negatives, int) or num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        if proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got {proposal!r}")
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        self.num_negatives, self.proposal, self.alpha = num_negatives, proposal, alpha
        self.in_batch = bool(in_batch)
        self.counts = None
        if counts is not None:
            self.set_counts(counts)

    def fit(self, train):
        """Take the item frequencies of ``train`` (an ``Interactions``); returns self."""
        items = torch.as_tensor(train.items, dtype=torch.int64)
        return self.set_counts(torch.bincount(items, minlength=train.num_items))

    def set_counts(self, counts):
        """Use ``counts`` [N] (non-negative, not all 0) as the item frequencies; returns self."""
        counts = torch.as_tensor(counts).double()
        if counts.dim() != 1 or not torch.isfinite(counts).all() or (counts < 0).any() or \
                counts.sum() <= 0:
            raise ValueError("counts must be a [N] tensor of finite non-negative frequencies, "
                             "not all 0")
        self.counts = counts
        return self

    def _proposal(self, counts, exponent, device):
        weights = counts.to(device) ** exponent
        return weights / weights.sum()  # [N] probabilities

    def _negatives(self, items, rows, device):
        """([S (+ M)] negative item ids, [N] float64 log expected draws of every item per call,
        or None when all candidates share one correction)."""
        needs_counts = self.proposal == "popularity" or self.in_batch
        if needs_counts and (self.counts is None or len(self.counts) != items):
            user = "popularity proposal" if self.proposal == "popularity" else "in_batch option"
            raise ValueError(f"the {user} needs counts of the N = {items} items: call "
                             f"fit(train) or pass counts")
        if self.proposal == "uniform":
            negatives = torch.randint(0, items, (self.num_negatives,), device=device)
            draws = torch.full((items,), self.num_negatives / items, dtype=torch.float64,
                               device=device)
        else:
            proposal = self._proposal(self.counts, self.alpha, device)
            negatives = torch.multinomial(proposal, self.num_negatives, replacement=True)
            draws = self.num_negatives * proposal
        if not needs_counts:
            return negatives, None
        if self.in_batch:  # the batch's targets: drawn by the data, Q ~ counts
            draws = draws + rows * self._proposal(self.counts, 1.0, device)
        return negatives, torch.log(draws)

    def __call__(self, hidden, targets, weight, bias, mixture=None):
        items = weight.shape[0]
        negatives, log_draws = self._negatives(items, len(targets), targets.device)  # [S], [N]
        if self.in_batch:
            negatives = torch.cat([negatives, targets])  # [S + M]
        positive, negative = _scored(hidden, targets, negatives, weight, bias)  # [M], [M, S]
        if log_draws is not None:  # the log-Q correction, the target's own included
            negative = negative - log_draws[negatives].to(negative.dtype)[None, :]
            positive = positive - log_draws[targets].to(positive.dtype)
        hit = negatives[None, :] == targets[:, None]  # [M, S]
        logits = torch.cat([positive[:, None], negative.masked_fill(hit, float("-inf"))], dim=1)
        return -_log_probs(logits, targets, negatives.expand(len(targets), -1), hit,
                           mixture)[:, 0]


class BinaryCrossEntropy:
    """Binary cross-entropy of the target (label 1) and ``num_negatives`` uniform negatives
    per target (label 0); a negative equal to the target is not counted.

    Example::

        loss = BinaryCrossEntropy(num_negatives=1)
        per_target = loss(hidden, targets, *model.output_weights())   # [M]
    """

    name = "bce"

    def __init__(self, num_negatives=1):
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        self.num_negatives = num_negatives

    def __call__(self, hidden, targets, weight, bias, mixture=None):
        negatives = torch.randint(0, weight.shape[0], (len(targets), self.num_negatives),
                                  device=targets.device)  # [M, S]
        positive, negative = _scored(hidden, targets, negatives, weight, bias)
        hit = negatives == targets[:, None]
        keep = (~hit).to(negative.dtype)
        if mixture is None:
            return F.softplus(-positive) + (F.softplus(negative) * keep).sum(dim=1)
        logits = torch.cat([positive[:, None], negative.masked_fill(hit, float("-inf"))], dim=1)
        log_p = _log_probs(logits, targets, negatives, hit, mixture)  # [M, 1 + S]
        # log(1 - p) of the negatives, at most log(1 - 1e-6) so that p -> 1 stays finite
        log_rest = torch.log1p(-log_p[:, 1:].exp().clamp(max=1 - 1e-6))
        return -log_p[:, 0] - (log_rest * keep).sum(dim=1)


def _scored(hidden, targets, negatives, weight, bias):
    """float32 scores of each row's target [M] and of its negatives (item ids [S] shared by
    every row, or [M, S]) as [M, S]."""
    weight, bias = weight.to(hidden.dtype), bias.to(hidden.dtype)
    positive = ((hidden * weight[targets]).sum(-1) + bias[targets]).float()  # [M]
    if negatives.dim() == 1:  # one matrix product
        negative = F.linear(hidden, weight[negatives], bias[negatives])
    else:
        negative = torch.einsum("md,msd->ms", hidden, weight[negatives]) + bias[negatives]
    return positive, negative.float()  # [M], [M, S]


def _log_probs(logits, targets, negatives, hit, mixture):
    """[M, 1 + S] log-probabilities over each row's candidates (its target, then its negatives
    [M, S], those equal to the target (``hit``) left out with -inf logits): the log-softmax,
    or the mixture's."""
    if mixture is None:
        return torch.log_softmax(logits, dim=1)
    columns = torch.cat([targets[:, None], negatives.masked_fill(hit, -1)], dim=1)
    return mixture.log_probs(logits, columns)


LOSSES = {"ce": FullSoftmax, "sampled": SampledSoftmax, "bce": BinaryCrossEntropy}


def build_loss(name="ce", *, num_negatives=None):
    """The loss called ``name`` (``"ce"``, ``"sampled"`` or ``"bce"``); ``num_negatives``
    for the sampled ones (default 100 for ``"sampled"``, 1 for ``"bce"``).

    Example::

        loss = build_loss("sampled", num_negatives=200)
    """
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    if name == "ce":
        if num_negatives is not None:
            raise ValueError("num_negatives applies to the sampled losses, not to 'ce'")
        return FullSoftmax()
    return LOSSES[name]() if num_negatives is None else LOSSES[name](num_negatives)
