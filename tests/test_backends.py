"""Backend selection: use_backend, backend= on modules, and unavailable backends' reasons."""

import pytest
import torch

import stseq
from stseq import backends
from stseq._native import NATIVE_CUDA


def test_auto_picks_native_on_cpu():
    assert backends.resolve("op", None, torch.device("cpu"), native=True, triton=False) == "native"
    assert backends.resolve("op", "auto", torch.device("cpu"), native=False,
                            triton=False) == "reference"


def test_use_backend_nests_and_restores():
    assert stseq.current_backend() == "auto"
    with stseq.use_backend("reference"):
        with stseq.use_backend("native"):
            assert stseq.current_backend() == "native"
        assert stseq.current_backend() == "reference"
    assert stseq.current_backend() == "auto"


def test_explicit_backend_beats_context():
    device = torch.device("cpu")
    with stseq.use_backend("reference"):
        assert backends.resolve("op", None, device, native=True, triton=False) == "reference"
        assert backends.resolve("op", "native", device, native=True, triton=False) == "native"


def _spy_reference(monkeypatch):
    calls = []
    original = stseq.reference.time_gap_embedding

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(stseq.reference, "time_gap_embedding", spy)
    return calls


def test_context_and_module_keyword_route_to_reference(monkeypatch):
    calls = _spy_reference(monkeypatch)
    timestamps = torch.tensor([[0, 5, 60]])
    module = stseq.nn.TimeGapEmbedding(8, 4, window=2)
    module(timestamps)
    assert calls == []  # auto: native
    with stseq.use_backend("reference"):
        module(timestamps)
    assert calls == [1]
    stseq.nn.TimeGapEmbedding(8, 4, window=2, backend="reference")(timestamps)
    assert calls == [1, 1]


def test_unavailable_backend_says_why():
    with pytest.raises(stseq.BackendUnavailableError,
                       match="'triton' is unavailable for time_gap_embedding on cpu: "
                             "time_gap_embedding has no Triton kernel"):
        stseq.ops.time_gap_embedding(torch.tensor([[0, 1]]), torch.zeros(1, 2, 2),
                                     backend="triton")
    with pytest.raises(stseq.BackendUnavailableError, match="no native kernels for device type"):
        backends.resolve("op", "native", torch.device("meta"), native=True, triton=False)


def test_native_cuda_reason_matches_the_build():
    reason = backends.native_unavailable_reason(torch.device("cuda"))
    if NATIVE_CUDA:
        assert reason is None
    else:
        assert "built without CUDA" in reason


def test_unknown_backend_names_are_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        with stseq.use_backend("fast"):
            pass
    with pytest.raises(ValueError, match="backend must be one of"):
        stseq.nn.TimeGapEmbedding(8, 4, backend="cudnn")
