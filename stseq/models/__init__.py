"""Sequential recommenders built only from ``stseq.nn`` layers (plus embeddings, linear layers
and norms), and the baselines they are measured against.

Every model scores all items: ``model.score(batch) -> [B, num_items]`` is a scoring function
for ``stseq.eval.evaluate`` / ``recommend``. The trainable ones are ``nn.Module`` s whose
``backend=`` goes to every stseq.nn layer, so a whole model can run on the reference twins.

``MODELS`` (name -> class):

- ``most-popular``, ``markov``: counting baselines (``stseq.eval``'s scorers).
- ``gru4rec``, ``lstm``: recurrent nets over item embeddings (time-agnostic).
- ``time-lstm``, ``tlstm``, ``time-decay-gru``: Time-LSTM, T-LSTM and the time-decay GRU fed dt
  from the timestamps, with the query-time encoding.
- ``sasrec`` (time-agnostic causal self-attention) and ``timesasrec`` (time-decay attention,
  spatio-temporal gap embedding, query time; distances when the data has coordinates).
- ``srgnn``: SR-GNN-style gated graph network with time-gap-weighted edges.
- ``svae``: SVAE-style sequential variational autoencoder.

Every trainable model also mixes in, by default, ``TransitionPrior``: the training data's
item-to-item transition frequencies, weighted by a gate read from its hidden state
(``transition_prior=False`` leaves it out: better for the attention models on dense rating
data such as MovieLens, see ``SASRec``). Losses are in ``stseq.models.losses`` (full softmax
cross-entropy by default).

Example::

    import stseq

    data = stseq.data.synthetic(seed=0)
    split = stseq.data.leave_one_out(data.interactions)
    model = stseq.models.build_model("timesasrec", split.train, dim=64)
    hidden = model(batch)                        # [B, L, 64] for a stseq.data.Batch
    stseq.eval.evaluate(model.score, split.interactions, split.test)
"""

from stseq.models.attention import SASRec, TimeSASRec
from stseq.models.baselines import CountingBaseline, MarkovChain, MostPopular
from stseq.models.fusion import ContextFusion
from stseq.models.graph import SessionGraph
from stseq.models.losses import LOSSES, BinaryCrossEntropy, FullSoftmax, SampledSoftmax, build_loss
from stseq.models.query_time import QueryTimeEncoding
from stseq.models.recommender import SequentialRecommender
from stseq.models.rnn import (GRU4Rec, LSTMRecommender, TimeDecayGRURecommender,
                              TimeLSTMRecommender, TLSTMRecommender)
from stseq.models.transitions import TransitionPrior
from stseq.models.vae import SVAE

MODELS = {
    "most-popular": MostPopular,
    "markov": MarkovChain,
    "gru4rec": GRU4Rec,
    "lstm": LSTMRecommender,
    "time-lstm": TimeLSTMRecommender,
    "tlstm": TLSTMRecommender,
    "time-decay-gru": TimeDecayGRURecommender,
    "sasrec": SASRec,
    "timesasrec": TimeSASRec,
    "srgnn": SessionGraph,
    "svae": SVAE,
}
BASELINES = ("most-popular", "markov")
DEFAULT_MODEL = "time-decay-gru"  # the time-aware model ``stseq train`` trains by default


def build_model(name, train, **options):
    """The model called ``name`` for the items of ``train`` (an ``Interactions``), with
    ``options`` for its constructor. Models that can use coordinates get ``geo=True`` when
    ``train`` has them (unless ``options`` says otherwise), and their items placed at the mean
    coordinates of their training events. ``model.spec`` records the name and
    options, which is what a checkpoint needs to rebuild it.

    Example::

        model = build_model("sasrec", split.train, dim=64, num_layers=2)
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    cls = MODELS[name]
    options = dict(options)
    if getattr(cls, "uses_coordinates", False):
        options.setdefault("geo", train.coordinates is not None)
    if not cls.trainable and options:
        raise ValueError(f"{name} is a counting baseline and takes no options, got "
                         f"{sorted(options)}")
    try:
        model = cls(train.num_items, **options)
    except TypeError as error:  # an option the constructor does not take
        raise ValueError(f"bad options for model {name!r}: {error}") from None
    if getattr(model, "geo", False):
        if train.coordinates is None:
            raise ValueError(f"{name} with geo=True needs data with coordinates")
        model.set_item_coordinates(train.item_coordinates())
    if getattr(model, "transition_prior", None) is not None:
        model.set_transitions(train)
    model.spec = {"name": name, "options": options}
    return model


__all__ = ["BASELINES", "DEFAULT_MODEL", "LOSSES", "MODELS", "SASRec", "SVAE",
           "BinaryCrossEntropy", "ContextFusion", "CountingBaseline", "FullSoftmax", "GRU4Rec",
           "LSTMRecommender", "MarkovChain", "MostPopular", "QueryTimeEncoding",
           "SampledSoftmax", "SequentialRecommender", "SessionGraph", "TLSTMRecommender",
           "TimeDecayGRURecommender", "TimeLSTMRecommender", "TimeSASRec", "TransitionPrior",
           "build_loss", "build_model"]
