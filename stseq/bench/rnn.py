"""Benchmark cases of the drop-in ``stseq.nn.LSTM`` / ``stseq.nn.GRU`` against torch.nn.LSTM /
torch.nn.GRU with the same weights (oneDNN/MKL on CPU, cuDNN on GPU), forward (no grad) and
forward+backward, on padded full-length batches and on packed variable-length batches (lengths
uniform in [1, L]).

The grid is the issue's: B in {256, 1024, 4096}, L in {50, 200}, H in {64, 128, 256}, input
size = H (64-256), on CUDA in bfloat16 and float32 (cuDNN's float32 with TF32 off, so that both
sides compute in float32 and the parity column means something). On the 2-core CPU the grid is
cut to B=256 (a B=4096, L=200 step of the full grid takes minutes per call there).

Serving cases (CPU, issue 17): inference (``torch.inference_mode``) at B in {1, 8, 64, 256},
L = 50, H in {64, 128, 256}, with every thread of the run and with one thread; the training
forward (autograd recording, activations kept for the backward) and forward+backward at
B in {1, 8, 64} on the same shapes and threads; and inference at H = 128 on a loaded machine:
another process busy on one core while they are timed (``threads=`` and ``load=`` in the
shape label). ``benchmarks/results/rnn/serving.py`` runs these without the padded/packed grid.
"""

import atexit
import contextlib
import os
import subprocess
import sys

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import stseq

PEER = "torch.nn (oneDNN/MKL)"
PEERS = {"cpu": PEER, "cuda": "torch.nn (cuDNN)"}
DTYPES = {"cpu": (torch.float32,), "cuda": (torch.bfloat16, torch.float32)}
CELLS = {"lstm": (torch.nn.LSTM, stseq.nn.LSTM), "gru": (torch.nn.GRU, stseq.nn.GRU)}

# The CPU target: B=256, L=50, input 64, H=128, forward+backward >= 1.0x torch.nn.
QUICK = [dict(cell=cell, batch=256, seq_len=50, input_size=64, hidden=128) for cell in CELLS]
# The GPU target (issue 20): the same shape against cuDNN, padded and packed (>= 1.2x and >= 2x
# forward+backward); run by `stseq bench --quick --device cuda` (scripts/gpu_check.sh).
QUICK += [dict(cell=cell, batch=256, seq_len=50, input_size=64, hidden=128, packed=packed,
               device="cuda") for cell in CELLS for packed in (False, True)]
_CPU = [dict(cell=cell, batch=256, seq_len=50, input_size=64, hidden=hidden, packed=packed)
        for cell in CELLS for hidden in (64, 128, 256) for packed in (False, True)]
_CPU += [dict(cell=cell, batch=256, seq_len=200, input_size=64, hidden=128, packed=packed)
         for cell in CELLS for packed in (False, True)]
_CPU += [dict(cell=cell, batch=256, seq_len=50, input_size=256, hidden=128) for cell in CELLS]
_GPU = [dict(cell=cell, batch=batch, seq_len=seq_len, input_size=hidden, hidden=hidden,
             packed=packed, device="cuda")
        for cell in CELLS for batch in (256, 1024, 4096) for seq_len in (50, 200)
        for hidden in (64, 128, 256) for packed in (False, True)]
_SERVING = [dict(cell=cell, batch=batch, seq_len=50, input_size=hidden, hidden=hidden,
                 inference=True, threads=threads)
            for threads in (None, 1) for cell in CELLS for hidden in (64, 128, 256)
            for batch in (1, 8, 64, 256)]
_TRAINING = [dict(cell=cell, batch=batch, seq_len=50, input_size=hidden, hidden=hidden,
                  training=True, threads=threads)
             for threads in (None, 1) for cell in CELLS for hidden in (64, 128, 256)
             for batch in (1, 8, 64)]
_LOADED = [dict(cell=cell, batch=batch, seq_len=50, input_size=128, hidden=128, inference=True,
                load=True) for cell in CELLS for batch in (1, 8, 64, 256)]
FULL = _CPU + _SERVING + _TRAINING + _LOADED + _GPU


def make_case(*, cell, batch, seq_len, input_size, hidden, packed=False, device="cpu",
              dtype=torch.float32, seed=0):
    """The two modules (same weights) and their input: x [L, B, I] (a leaf), or a packed
    variable-length batch whose data [N, I] is the leaf."""
    torch.manual_seed(seed)
    torch_cls, stseq_cls = CELLS[cell]
    peer = torch_cls(input_size, hidden, device=device, dtype=dtype)
    ours = stseq_cls(input_size, hidden, device=device, dtype=dtype)
    ours.load_state_dict(peer.state_dict())
    x = torch.randn(seq_len, batch, input_size, device=device, dtype=dtype)
    if packed:
        lengths = torch.randint(1, seq_len + 1, (batch,))
        lengths[0] = seq_len
        pack = pack_padded_sequence(x, lengths, enforce_sorted=False)
        leaf = pack.data.detach().requires_grad_()
        inputs = PackedSequence(leaf, pack.batch_sizes, pack.sorted_indices,
                                pack.unsorted_indices)
    else:
        leaf = inputs = x.requires_grad_()
    return dict(stseq=ours, peer=peer, inputs=inputs, leaf=leaf)


def _data(output):
    return output.data if isinstance(output, PackedSequence) else output


def _final_hidden(hidden):
    return hidden[0] if isinstance(hidden, tuple) else hidden


def forward(module, case):
    """One forward without autograd -> (output, h_n)."""
    with torch.no_grad():
        output, hidden = module(case["inputs"])
    return _data(output), _final_hidden(hidden)


def forward_backward(module, case):
    """Forward + backward of a fixed projection of the output -> (output, grad of the input,
    grad of weight_hh_l0)."""
    output, _ = module(case["inputs"])
    output = _data(output)
    grads = torch.autograd.grad(output, [case["leaf"], module.weight_hh_l0],
                                grad_outputs=torch.ones_like(output) * 0.01)
    return (output.detach(), *grads)


def call(implementation, fn, case):
    """fn (forward or forward_backward) on ``"stseq"`` or ``"peer"``; the peer runs with exact
    float32 (cuDNN would use TF32 by default)."""
    if implementation == "stseq":
        return fn(case["stseq"], case)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        return fn(case["peer"], case)


def training_forward(module, case):
    """One forward as in training (autograd records it; the activations for the backward are
    kept), without the backward -> (output, h_n)."""
    output, hidden = module(case["inputs"])
    return _data(output).detach(), _final_hidden(hidden).detach()


def inference(module, case):
    """One forward under torch.inference_mode (serving) -> (output, h_n)."""
    with torch.inference_mode():
        output, hidden = module(case["inputs"])
    return _data(output), _final_hidden(hidden)


class BusyCore:
    """Another process spinning on one core (the loaded-machine cases); started by the first
    loaded call, stopped by any other case's call and at exit."""

    def __init__(self):
        self.process = None

    def start(self):
        if self.process is None:
            self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(self.process.pid, {cores[0]})

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


BUSY = BusyCore()
atexit.register(BUSY.stop)


@contextlib.contextmanager
def _conditions(shape):
    """The shape's thread count and load while one call runs."""
    BUSY.start() if shape.get("load") else BUSY.stop()
    threads = shape.get("threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)


def _label(shape):
    text = (f"B={shape['batch']},L={shape['seq_len']},I={shape['input_size']},"
            f"H={shape['hidden']}")
    text += ",packed" if shape.get("packed") else ""
    text += f",threads={shape['threads']}" if shape.get("threads") else ""
    return text + (",load=1 busy core" if shape.get("load") else "")


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn, peer) for every shape of the grid meant for ``device``
    (entries with ``device="cuda"`` run on CUDA only, the others on the CPU only)."""
    for shape in grid:
        if shape.get("device", "cpu") != device.type:
            continue
        config = {k: v for k, v in shape.items()
                  if k not in ("inference", "training", "threads", "load")}
        case = make_case(**{**config, "device": device}, dtype=dtype)
        if shape.get("inference"):
            modes = (("inference", inference),)
        elif shape.get("training"):
            modes = (("training forward", training_forward),
                     ("forward+backward", forward_backward))
        else:
            modes = (("forward", forward), ("forward+backward", forward_backward))
        for mode, fn in modes:
            yield (f"{shape['cell']} {mode}", _label(shape),
                   lambda fn=fn, case=case, shape=shape: _timed("stseq", fn, case, shape),
                   lambda fn=fn, case=case, shape=shape: _timed("peer", fn, case, shape),
                   PEERS[device.type])


def _timed(implementation, fn, case, shape):
    with _conditions(shape):
        return call(implementation, fn, case)
