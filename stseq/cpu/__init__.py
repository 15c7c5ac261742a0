"""Fast PyTorch-level paths of the ops on CPU tensors, where a native kernel would not pay:
not oracles (those are in ``stseq.reference``), free to be clever, tested against the oracles.

``stseq.cpu.attention``: the chunked time-decay attention that ``stseq.ops.time_decay_attention``
runs on CPU.
"""
