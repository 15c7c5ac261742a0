"""Loads the compiled extension ``stseq._C`` if this install has one.

``NATIVE`` is the module (its import registers ``torch.ops.stseq.*``) or ``None``;
``NATIVE_ERROR`` says why it is missing and how to fix it. A missing extension is never silent:
importing stseq without it warns once (:class:`NativeUnavailableWarning`), since every op would
run its slow reference twin, and ``backend="native"`` raises with the same message. torch must
be imported first: the extension has no RUNPATH to torch's libraries and relies on them being
loaded already.
"""

import importlib.util
import pathlib
import warnings

import torch

DEVELOPER_SETUP = "pip install --no-build-isolation --no-deps -Cbuild-dir=build -e ."


class NativeUnavailableWarning(RuntimeWarning):
    """stseq._C could not be loaded: every op falls back to its (slow) reference twin.

    Example (make it an error, e.g. in a job that must run the kernels)::

        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            import stseq  # raises NativeUnavailableWarning when stseq._C cannot be loaded
    """


def _source_checkout(package_dir):
    """The checkout root when ``package_dir`` is the ``stseq`` folder of a source checkout."""
    root = package_dir.parent
    is_checkout = (root / "pyproject.toml").is_file() and (root / "csrc").is_dir()
    return root if is_checkout else None


def _extension_spec():
    try:
        return importlib.util.find_spec("stseq._C")
    except (ImportError, ValueError):  # a finder that refuses it, or a halted import
        return None


def describe_failure(error, package_dir, spec):
    """Why ``stseq._C`` did not load, and the fix, as one message.

    ``error`` is the ImportError, ``package_dir`` the folder stseq was imported from, ``spec``
    the extension's module spec (``None`` when no compiled ``_C`` exists for this stseq).

    Example::

        describe_failure(error, pathlib.Path(stseq.__file__).parent, None)
    """
    if spec is not None:
        return (f"stseq._C ({spec.origin}) failed to load: {error}. It was most likely built "
                f"against another torch than the {torch.__version__} imported now; rebuild it "
                f"from the stseq checkout with `{DEVELOPER_SETUP}` (or reinstall stseq with "
                f"`pip install --no-build-isolation --no-deps --force-reinstall .`)")
    root = _source_checkout(package_dir)
    if root is not None:
        return (f"stseq was imported from the source checkout {root} (the current directory or "
                f"PYTHONPATH comes first on sys.path), which holds no compiled stseq._C; an "
                f"installed stseq, if any, is hidden behind it. Fix: make the checkout the "
                f"installed build with the developer set-up, `cd {root} && {DEVELOPER_SETUP}`, "
                f"or run from outside the checkout")
    return (f"this stseq ({package_dir}) has no compiled stseq._C ({error}); reinstall it "
            f"with a C++ compiler and CMake present: `pip install --no-build-isolation "
            f"--no-deps --force-reinstall .` from the stseq source")


try:
    from stseq import _C as NATIVE

    NATIVE_ERROR = None
except ImportError as _error:  # a checkout that was never built, or a broken build
    NATIVE = None
    NATIVE_ERROR = describe_failure(_error, pathlib.Path(__file__).parent, _extension_spec())
    warnings.warn(f"{NATIVE_ERROR}. Until then every stseq op runs its slow pure-PyTorch "
                  f"reference.", NativeUnavailableWarning, stacklevel=2)

NATIVE_CUDA = bool(NATIVE is not None and NATIVE.cuda_built)
