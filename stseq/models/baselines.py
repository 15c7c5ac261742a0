"""The reference scorers of ``stseq.eval`` as models of the registry: fitted by counting, not
trained, so the trainer fits them on the training split and evaluates them like the rest."""

from stseq import eval as evaluation


class CountingBaseline:
    """A model fitted by counting training events: ``fit(train)``, then ``score(batch)``.

    Example::

        model = stseq.models.build_model("markov", split.train)
        model.fit(split.train)
        stseq.eval.evaluate(model.score, split.interactions, split.test)
    """

    time_aware = False
    trainable = False
    scorer_class = None

    def __init__(self, num_items):
        self.num_items = num_items
        self.scorer = None
        self.spec = None

    def fit(self, train):
        """Count ``train`` (an ``Interactions`` with this model's items); returns self."""
        if train.num_items != self.num_items:
            raise ValueError(f"train has {train.num_items} items but the model was built for "
                             f"{self.num_items}")
        self.scorer = self.scorer_class(train)
        return self

    def score(self, batch):
        """[B, num_items] scores (after ``fit``)."""
        if self.scorer is None:
            raise ValueError(f"{type(self).__name__} must be fitted first: call fit(train)")
        return self.scorer(batch)


class MostPopular(CountingBaseline):
    """Most-popular items, the same ranking for everyone (``stseq.eval.MostPopular``).

    Example::

        MostPopular(train.num_items).fit(train).score(batch)   # [B, N]
    """

    scorer_class = evaluation.MostPopular


class MarkovChain(CountingBaseline):
    """First-order Markov chain over consecutive items, the autoregressive baseline
    (``stseq.eval.MarkovChain``).

    Example::

        MarkovChain(train.num_items).fit(train).score(batch)   # [B, N]
    """

    scorer_class = evaluation.MarkovChain
