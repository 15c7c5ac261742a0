"""Shared driver of the compute-sanitizer cases: one small forward + backward per op.

Each ``scripts/sanitize/<op>.py`` defines ``run(device, dtype)``, returning the tensors it
computed (outputs and gradients) or, for an op that does not exist yet, a string saying why it
was skipped, and calls :func:`main`. ``scripts/sanitize_ops.py`` runs every case under
``compute-sanitizer --tool memcheck|racecheck`` on a GPU, and directly on the CPU (the dry run:
the same code paths with the C++ kernels and Triton's interpreter).

    python scripts/sanitize/lstm.py --device cuda
"""

import argparse
import os
import time

import torch

# Triton kernels run in its interpreter on a machine with no GPU; set before stseq is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import stseq  # noqa: E402

# dtypes each case runs in: the CUDA kernels' float32 and bfloat16 instantiations; the CPU
# kernels' float32 (bfloat16 arithmetic is broken in Triton's interpreter).
DTYPES = {"cuda": (torch.float32, torch.bfloat16), "cpu": (torch.float32,)}
SKIPPED = 3  # exit status of a case whose op does not exist yet


def gradients(output, inputs):
    """d(sum of output * fixed random weights) / d(inputs) -> a tuple of tensors."""
    weights = torch.randn_like(output)
    return torch.autograd.grad(output, inputs, grad_outputs=weights, allow_unused=True)


def main(op, run, *, backend):
    """Parse ``--device``, run ``run(device, dtype)`` for each dtype with ``backend`` forced
    (so that a silent fallback to the reference cannot pass for a checked kernel), check the
    results are finite, print one line; returns the exit status (0 ok, 1 bad, 3 skipped)."""
    parser = argparse.ArgumentParser(description=f"one small forward + backward of {op}")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(parser.parse_args().device)
    start = time.perf_counter()
    count = 0
    for dtype in DTYPES[device.type]:
        torch.manual_seed(0)
        with stseq.use_backend(backend):
            tensors = run(device, dtype)
        if isinstance(tensors, str):
            print(f"{op}: skipped: {tensors}")
            return SKIPPED
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tensors = [t for t in tensors if t is not None]
        bad = [i for i, t in enumerate(tensors) if not torch.isfinite(t.float()).all()]
        if bad:
            print(f"{op}: FAILED: non-finite values in result tensors {bad} ({dtype})")
            return 1
        count += len(tensors)
    print(f"{op}: ok on {device} with backend {backend!r}: {count} tensors finite "
          f"({time.perf_counter() - start:.1f} s)")
    return 0
