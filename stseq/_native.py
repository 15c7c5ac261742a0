"""Loads the compiled extension ``stseq._C`` if this install has one.

``NATIVE`` is the module (its import registers ``torch.ops.stseq.*``) or ``None``;
``NATIVE_ERROR`` says why it is missing. torch must be imported first: the extension has no
RUNPATH to torch's libraries and relies on them being loaded already.
"""

import torch  # noqa: F401  (loads libtorch before the extension)

try:
    from stseq import _C as NATIVE

    NATIVE_ERROR = None
except ImportError as error:  # a source checkout that was never built, or a broken build
    NATIVE = None
    NATIVE_ERROR = f"stseq._C is not built or failed to load ({error})"

NATIVE_CUDA = bool(NATIVE is not None and NATIVE.cuda_built)
