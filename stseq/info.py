"""What this install of stseq can run: ``stseq.info()`` and ``stseq info``."""

import importlib.metadata
import platform

import torch

from stseq import backends
from stseq._native import NATIVE, NATIVE_CUDA, NATIVE_ERROR

# Op -> the kernels it has besides the reference (which every op has).
OPS = {"time_gap_embedding": ("native",), "lstm": ("native",), "gru": ("native",),
       "time_lstm": ("native",), "tlstm": ("native",), "time_decay_gru": ("native",),
       "time_decay_attention": ("triton",), "item_logsumexp": ("native", "triton"),
       "item_cross_entropy": ("native", "triton")}
# Op -> devices where ``auto`` runs the reference although other kernels are usable there (on
# the CPU the Triton interpreter is a test vehicle; the chunked CPU path, stseq.cpu.attention, which
# backend "reference" runs for this op, is the fast one).
AUTO_RUNS_REFERENCE = {"time_decay_attention": ("cpu",)}
# Op -> devices where ``auto`` never runs the Triton kernel (on the CPU the interpreter is a
# test vehicle: the item-scoring ops run C++ there, Triton on CUDA).
AUTO_SKIPS_TRITON = {"item_logsumexp": ("cpu",), "item_cross_entropy": ("cpu",)}


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def info():
    """A dict describing the build and what runs where.

    Example::

        >>> stseq.info()["native"]["cpu"]
        True
    """
    devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}"
                         for i in range(torch.cuda.device_count())]
    usable = {}
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        where = torch.device(device)
        reasons = {"native": backends.native_unavailable_reason(where),
                   "triton": backends.triton_unavailable_reason(where)}
        usable[device] = {}
        for op, kernels in OPS.items():  # in the order auto tries them
            names = [name for name in kernels if reasons[name] is None
                     and not (name == "triton" and device in AUTO_SKIPS_TRITON.get(op, ()))]
            auto_first = device in AUTO_RUNS_REFERENCE.get(op, ())
            usable[device][op] = ["reference"] + names if auto_first else names + ["reference"]
    return {
        "stseq": _version("stseq"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "native": {"cpu": NATIVE is not None, "cuda": NATIVE_CUDA, "error": NATIVE_ERROR},
        "triton_usable": {"cpu": backends.triton_unavailable_reason(torch.device("cpu")) is None,
                          "cuda": torch.cuda.is_available()
                          and backends.triton_unavailable_reason(torch.device("cuda")) is None},
        "devices": devices,
        "threads": torch.get_num_threads(),
        "backend": backends.current_backend(),
        "ops": usable,
    }


def format_info(report):
    """``info()`` as aligned text lines."""
    native = report["native"]
    lines = [
        f"stseq        {report['stseq']}",
        f"python       {report['python']}",
        f"torch        {report['torch']} (CUDA {report['torch_cuda'] or 'none'})",
        f"triton       {report['triton'] or 'not installed'} (usable on CPU: "
        f"{report['triton_usable']['cpu']}, on CUDA: {report['triton_usable']['cuda']})",
        f"native C++   {'built' if native['cpu'] else 'missing: ' + str(native['error'])}",
        f"native CUDA  {'built' if native['cuda'] else 'not built'}",
        f"devices      {', '.join(report['devices'])}",
        f"threads      {report['threads']}",
        f"backend      {report['backend']}",
    ]
    for device, ops in report["ops"].items():
        for op, names in ops.items():
            lines.append(f"{device:4} {op:24} {' > '.join(names)}")
    return lines
