"""The GPU benchmark cases of time_decay_attention (``stseq bench --quick --device cuda --ops
time_decay_attention``), checked on the CPU so that they cannot rot between GPU runs: the CUDA
case list is built without touching CUDA, and each GPU case runs at a tiny size on the CPU with
its parity against its peer (FlexAttention eager and forward only: it has no CPU backward)."""

import pytest
import torch

from stseq.bench import measure, time_decay_attention as suite


def test_cuda_quick_case_list_builds_without_cuda():
    for dtype in suite.DTYPES["cuda"]:
        rows = [(name, label, peer) for name, label, _, _, peer in
                suite.cases(suite.QUICK, torch.device("cuda"), dtype)]
        for jagged in (False, True):
            at_1024 = {(name, peer) for name, label, peer in rows
                       if "seq_len=1024" in label and ("jagged=True" in label) == jagged}
            for peer in suite.PEERS.values():
                for mode in ("forward", "forward+backward"):
                    assert (f"time_decay_attention {mode}", peer) in at_1024, (dtype, jagged, peer)
    assert torch.device("cuda").type == "cuda" and not torch.cuda.is_initialized()


@pytest.mark.parametrize("jagged", [False, True], ids=["padded", "jagged"])
def test_gpu_cases_run_on_the_cpu_at_a_tiny_size(jagged, monkeypatch):
    from torch.nn.attention.flex_attention import flex_attention

    monkeypatch.setitem(suite._COMPILED, "flex", flex_attention)  # eager: no CPU compile
    shape = next(dict(shape, batch=3, seq_len=40, head_dim=16) for shape in suite.QUICK
                 if shape.get("device") == "cuda" and bool(shape.get("jagged")) == jagged)
    peers = set()
    for name, _, ours, peer_fn, peer in suite.shape_cases(shape, torch.device("cpu"),
                                                          torch.float32):
        if peer == suite.PEERS["flex"] and name.endswith("backward"):
            continue
        error = measure.max_relative_error(ours(), peer_fn())
        assert measure.parity_ok(error, torch.float32), (name, peer, error)
        peers.add(peer)
    assert peers == set(suite.PEERS.values())
