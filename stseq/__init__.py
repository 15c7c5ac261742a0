"""stseq: fused layers for timestamped (and geo-located) user-behaviour sequences.

    import stseq
    stseq.info()                                   # what is built and usable here
    embed = stseq.nn.TimeGapEmbedding(64, 32)      # a module
    with stseq.use_backend("reference"): ...       # run the pure-PyTorch twins
"""

try:
    import torch  # noqa: F401  (must load before the native extension)
except ModuleNotFoundError as _error:
    if _error.name != "torch":
        raise
    raise ModuleNotFoundError(
        "stseq needs PyTorch (torch >= 2.4), and this Python cannot import torch. Install the "
        "torch that stseq was built against first (the README's set-up: "
        "`pip install torch==2.13.0`; CPU-only wheels: add `--index-url "
        "https://download.pytorch.org/whl/cpu`; CUDA wheels: https://pytorch.org/get-started/"
        "locally/), then rebuild stseq whenever torch changes (`pip install "
        "--no-build-isolation --no-deps --force-reinstall .`): the compiled extension only "
        "loads with the torch it was compiled against.", name="torch") from None

from stseq import data, eval, nn, ops, reference
from stseq._native import NativeUnavailableWarning
from stseq.backends import BackendUnavailableError, current_backend, use_backend
from stseq.info import info

__version__ = "0.1.0"
__all__ = ["BackendUnavailableError", "NativeUnavailableWarning", "current_backend", "data", "eval",
           "info", "nn", "ops", "reference", "use_backend"]
