"""The GPU benchmark cases of time_gap_embedding (``stseq bench --quick --device cuda --ops
time_gap``), checked on the CPU so that they cannot rot between GPU runs: the CUDA case list
(against the eager reference and a device-to-device copy of the same bytes) is built without
touching CUDA, and the copy peer runs on the CPU."""

import functools

import torch

from stseq.bench import measure, time_gap


def test_cuda_quick_case_list_builds_without_cuda():
    rows = list(time_gap.cases(time_gap.QUICK, torch.device("cuda"), torch.float32))
    peers = {(name, peer) for name, _, _, _, peer in rows}
    for mode in ("forward", "forward+backward"):
        for peer in (time_gap.PEER, time_gap.COPY_PEER):
            assert (f"time_gap_embedding {mode}", peer) in peers
    copies = [label for _, label, _, _, peer in rows if peer == time_gap.COPY_PEER]
    assert any("batch=4096" in label and "MB=216.3" in label for label in copies)
    assert not torch.cuda.is_initialized()
    # The CPU cases stay as they were: the target shape against the reference only.
    cpu = [(label, peer) for _, label, _, _, peer in
           time_gap.cases(time_gap.QUICK, torch.device("cpu"), torch.float32)]
    assert cpu == [("batch=256,seq_len=50,window=8,num_buckets=64,dim=64", time_gap.PEER)] * 2


def test_copy_peer_moves_the_bytes_and_answers_with_the_reference():
    inputs = functools.cache(lambda: time_gap.make_inputs(batch=4, seq_len=6, window=2,
                                                          num_buckets=8, dim=4))
    expected = functools.cache(lambda: time_gap.forward(inputs(), "reference"))
    peer = time_gap.copy_peer(inputs, time_gap.traffic_bytes(dict(batch=4, seq_len=6, dim=4),
                                                             "forward"), expected)
    native = time_gap.forward(inputs(), "native")
    assert measure.max_relative_error(native, peer()) < 1e-6
    assert time_gap.traffic_bytes(dict(batch=4, seq_len=6, dim=4), "forward") == 24 * (8 + 16)
