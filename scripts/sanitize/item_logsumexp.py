"""compute-sanitizer case: stseq.ops.item_logsumexp (log-sum-exp of hidden [M, D] against a
catalogue weight [N, D] and bias [N], in item chunks) forward + backward, with and without the
bias, a catalogue that is not a multiple of any chunk size."""

import sys

import torch

import stseq
from _case import gradients, main


def run(device, dtype):
    if not hasattr(stseq.ops, "item_logsumexp"):
        return "stseq.ops.item_logsumexp does not exist yet (being written)"
    hidden = torch.randn(6, 24, device=device, dtype=dtype, requires_grad=True)  # [M, D]
    weight = torch.randn(1237, 24, device=device, dtype=dtype, requires_grad=True)  # [N, D]
    bias = torch.randn(1237, device=device, dtype=dtype, requires_grad=True)  # [N]
    results = []
    for with_bias in (bias, None):
        out = stseq.ops.item_logsumexp(hidden, weight, with_bias)  # [M]
        parameters = [hidden, weight] + ([bias] if with_bias is not None else [])
        results += [out, *gradients(out, parameters)]
    return results


if __name__ == "__main__":
    sys.exit(main("item_logsumexp", run, backend="auto"))
