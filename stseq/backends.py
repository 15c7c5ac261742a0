"""Backend selection shared by every op: ``auto``, ``native``, ``triton`` or ``reference``.

An op asks :func:`resolve` which implementation to run for its input's device. The choice comes
from the op's ``backend=`` argument (a module's constructor keyword passes it on) or, when that
is ``None``/``"auto"``, from the innermost :func:`use_backend` context; ``auto`` picks the
fastest implementation available. Asking for one that is not available raises
:class:`BackendUnavailableError` with the reason.
"""

import contextlib
import importlib.util
import os

from stseq._native import NATIVE, NATIVE_CUDA, NATIVE_ERROR

BACKENDS = ("auto", "native", "triton", "reference")

_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_current = "auto"


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this op on this device; the message says why."""


def check_backend(name):
    """``name`` itself, or a ValueError unless it is one of ``BACKENDS`` (every module's and
    op's ``backend=`` goes through this one check).

    Example::

        self.backend = check_backend(backend)
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


@contextlib.contextmanager
def use_backend(name):
    """Run the ops inside the ``with`` block on backend ``name`` (process-wide).

    An op's or module's own ``backend=`` other than ``"auto"`` takes precedence.

    Example::

        with stseq.use_backend("reference"):
            out = embedding(timestamps)  # the pure-PyTorch twin
    """
    global _current
    check_backend(name)
    previous, _current = _current, name
    try:
        yield
    finally:
        _current = previous


def current_backend():
    """The backend set by the innermost :func:`use_backend`, ``"auto"`` outside any."""
    return _current


def native_unavailable_reason(device):
    """Why the native (C++/CUDA) kernels cannot run on ``device``, or ``None`` if they can."""
    if NATIVE is None:
        return NATIVE_ERROR
    if device.type == "cuda" and not NATIVE_CUDA:
        return ("stseq was built without CUDA (torch had no CUDA or nvcc was missing at build "
                "time); rebuild with STSEQ_CUDA=1")
    if device.type not in ("cpu", "cuda"):
        return f"no native kernels for device type {device.type!r}"
    return None


def triton_unavailable_reason(device):
    """Why Triton kernels cannot run on ``device``, or ``None`` if they can."""
    if not _TRITON_INSTALLED:
        return "triton is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and _TRITON_INTERPRET:
        return None
    return (f"Triton kernels run on CUDA devices (or on CPU under TRITON_INTERPRET=1), "
            f"not on {device.type!r}")


def resolve(op, requested, device, *, native, triton):
    """The backend ``op`` runs on for an input on ``device``.

    ``native``/``triton`` say whether the op has such a kernel at all. Raises
    :class:`BackendUnavailableError` when the requested backend cannot run.
    """
    choice = requested if requested not in (None, "auto") else _current
    check_backend(choice)
    if choice == "auto":  # the first available, asking no more than needed (once per call)
        return next(name for name in ("native", "triton", "reference")
                    if _unavailable_reason(name, op, device, native, triton) is None)
    reason = _unavailable_reason(choice, op, device, native, triton)
    if reason is not None:
        raise BackendUnavailableError(
            f"backend {choice!r} is unavailable for {op} on {device.type}: {reason}")
    return choice


def _unavailable_reason(backend, op, device, native, triton):
    if backend == "native":
        return native_unavailable_reason(device) if native else f"{op} has no native kernel"
    if backend == "triton":
        return triton_unavailable_reason(device) if triton else f"{op} has no Triton kernel"
    return None
