"""The LSTM/GRU sanitizer case, shared by lstm.py and gru.py: both CUDA time loops
(stepwise, and persistent with a two-CTA cluster at H=40), padded with lengths and packed."""

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import stseq
from _case import gradients

ALGORITHMS = {"cuda": ("stepwise", "persistent"), "cpu": ("auto",)}


def run(cell, device, dtype):
    """Forward + backward of ``stseq.ops.<cell>`` on a tiny batch -> outputs and gradients."""
    torch_cell = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    module = torch_cell(6, 40, device=device, dtype=dtype)
    weights = module._flat_weights
    x = torch.randn(7, 5, 6, device=device, dtype=dtype, requires_grad=True)  # [L, B, I]
    lengths = torch.tensor([7, 3, 1, 6, 7])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    results = []
    for algorithm in ALGORITHMS[device.type]:
        op = getattr(stseq.ops, cell)
        padded, _ = op(x, None, weights, lengths=lengths.to(device), algorithm=algorithm)
        results += [padded, *gradients(padded, [x, *weights])]
        data, _ = op(packed.data, None, weights, batch_sizes=packed.batch_sizes,
                     algorithm=algorithm)
        results += [data, *gradients(data, [x, *weights])]
    return results
