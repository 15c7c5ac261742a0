"""stseq: fused layers for timestamped (and geo-located) user-behaviour sequences.

    import stseq
    stseq.info()                                   # what is built and usable here
    embed = stseq.nn.TimeGapEmbedding(64, 32)      # a module
    with stseq.use_backend("reference"): ...       # run the pure-PyTorch twins
"""

import torch  # noqa: F401  (must load before the native extension)

from stseq import data, eval, nn, ops, reference
from stseq.backends import BackendUnavailableError, current_backend, use_backend
from stseq.info import info

__version__ = "0.1.0"
__all__ = ["BackendUnavailableError", "current_backend", "data", "eval", "info", "nn", "ops",
           "reference", "use_backend"]
