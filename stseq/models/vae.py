"""A sequential variational autoencoder in the style of SVAE (Sachdeva et al., WSDM 2019): a
recurrent encoder over the items, a Gaussian latent per position, and a decoder that scores the
next item; trained with the next-item likelihood plus a KL term whose weight is annealed.
"""

import torch
from torch import nn

import stseq.nn
from stseq.models.recommender import SequentialRecommender


class SVAE(SequentialRecommender):
    """Sequential VAE recommender.

    At every position the ``stseq.nn.GRU`` state gives the mean and log-variance of a latent z
    [latent_dim]; a decoder MLP maps z to a D-vector scored against all items. Training samples
    z (reparameterised) and adds ``kl_weight * KL(q(z | history) || N(0, I))`` per target,
    ``kl_weight`` rising linearly from 0 to ``beta`` over ``anneal_steps`` training steps (the
    step count is a buffer, so it is checkpointed). Scoring uses the mean of z.

    Args: as ``SequentialRecommender``, plus ``latent_dim``, ``beta`` and ``anneal_steps``.

    Example::

        model = SVAE(num_items=2000, dim=64, latent_dim=32)
        total, count = model.training_loss(batch, stseq.models.losses.FullSoftmax())
    """

    def __init__(self, num_items, *, latent_dim=64, beta=0.2, anneal_steps=2000, **options):
        super().__init__(num_items, **options)
        if latent_dim < 1 or beta < 0 or anneal_steps < 1:
            raise ValueError(f"latent_dim >= 1, beta >= 0 and anneal_steps >= 1 required, got "
                             f"{latent_dim}, {beta}, {anneal_steps}")
        self.beta, self.anneal_steps = beta, anneal_steps
        self.encoder = stseq.nn.GRU(self.dim, self.dim, batch_first=True, backend=self.backend)
        self.posterior = nn.Linear(self.dim, 2 * latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, self.dim), nn.Tanh(),
                                     nn.Linear(self.dim, self.dim))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def posterior_parameters(self, batch):
        """(mean, log-variance), each [B, L, latent_dim]."""
        x = self.dropout(self.embed_items(batch.items))
        output, _ = self.encoder(x, lengths=batch.lengths)
        return self.posterior(output).chunk(2, dim=-1)

    def encode(self, batch):
        mean, _ = self.posterior_parameters(batch)
        return self.decoder(mean)

    def kl_weight(self):
        """The current weight of the KL term."""
        return self.beta * min(1.0, int(self.steps) / self.anneal_steps)

    def training_loss(self, batch, loss):
        mean, log_variance = self.posterior_parameters(batch)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)
        likelihood, count = self.loss_of(self.decoder(z), batch, loss)
        mask = batch.next_items != batch.pad_item
        kl = 0.5 * (mean.square() + log_variance.exp() - 1 - log_variance).sum(-1)[mask]
        total = likelihood + self.kl_weight() * kl.float().sum()
        if self.training:
            self.steps += 1
        return total, count
