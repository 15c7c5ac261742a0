"""Benchmark cases of ``time_decay_attention`` (the default backend: Triton on CUDA, the chunked
CPU path on CPU) against its peers, forward and forward+backward (always including the
decay gradient):

- SDPA with the same bias materialised as [B, H, L, L] (``PEER``; same math), every shape;
- on the GPU shapes also SDPA without any bias (the ceiling: flash when causal; stseq then runs
  with a decay rate of exactly 0 so that both compute the same thing) and FlexAttention with the
  equivalent ``score_mod``, a learnable decay and its block mask built once per case.

A jagged case runs stseq on [T, H, D] with cu_seqlens and the peers on the padded batch with its
lengths (the ceiling on the whole padded batch). CPU runs float32; CUDA runs bfloat16 (the
issue's targets) and float32. Inputs are built on first use, so the case list can be made without
the device (the dry run of tests/test_bench_cases.py).
"""

import functools

import torch
import torch.nn.functional as F

from stseq import ops
from stseq.ops.attention import HSTU_BUCKET_SCALE, relative_times
from stseq.reference.attention import decay_phi, pad_jagged, time_bucket

PEER = "SDPA + materialised bias"
DTYPES = {"cpu": (torch.float32,), "cuda": (torch.bfloat16, torch.float32)}
PEERS = {"sdpa_bias": PEER, "sdpa_no_bias": "SDPA without bias (fused; ceiling)",
         "flex": "FlexAttention score_mod"}
# The CPU target: B=32, H=4, L=200, D=32, forward+backward at least as fast as the peer
# (padded, and jagged with lengths spread from 10 to L).
_CPU = dict(batch=32, heads=4, seq_len=200, head_dim=32)
QUICK = [_CPU, dict(_CPU, jagged=True)]
_GPU = dict(batch=64, heads=4, device="cuda")
# The GPU target: L=1024 forward+backward, padded and jagged.
QUICK += [dict(_GPU, batch=16, seq_len=1024, head_dim=64),
          dict(_GPU, batch=16, seq_len=1024, head_dim=64, jagged=True)]
FULL = ([_CPU, dict(_CPU, decay_fn="log1p"), dict(_CPU, num_buckets=32), dict(_CPU, causal=False),
         dict(_CPU, jagged=True), dict(batch=8, heads=4, seq_len=1024, head_dim=64)]
        + [dict(_GPU, seq_len=length, head_dim=dim) for length in (200, 1024, 4096)
           for dim in (64, 128)]
        + [dict(_GPU, seq_len=1024, head_dim=64, jagged=True)])


def make_inputs(*, batch, heads, seq_len, head_dim, jagged=False, causal=True, decay_fn="abs",
                num_buckets=0, dtype=torch.float32, device="cpu", seed=0):
    """A case: epoch-second timestamps with log-normal gaps (seconds to weeks), q, k, v
    [B, H, L, D], a learnable decay [H] (and bucket table [H, NB]); ``jagged`` keeps lengths
    spread from 10 to L (as [T, H, D] with cu_seqlens for stseq; padded for the peers)."""
    generator = torch.Generator().manual_seed(seed)
    gaps = torch.exp(torch.randn(batch, seq_len, generator=generator) * 2.5 + 7.0).round().long()
    timestamps = 1_700_000_000 + gaps.cumsum(1) - gaps[:, :1]
    lengths = None
    if jagged:
        lengths = torch.randint(min(10, seq_len), seq_len + 1, (batch,), generator=generator)
        lengths[0] = seq_len
    q, k, v = (torch.randn(batch, heads, seq_len, head_dim, generator=generator)
               for _ in range(3))
    case = dict(q=q, k=k, v=v, timestamps=timestamps, lengths=lengths,
                decay=torch.linspace(-2.0, 1.0, heads),
                time_bias=0.1 * torch.randn(heads, num_buckets, generator=generator)
                if num_buckets else None)
    case = {name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in case.items()}
    for name in ("q", "k", "v", "decay", "time_bias"):
        if case[name] is not None:
            case[name] = case[name].to(dtype if name in ("q", "k", "v") else torch.float32)
            case[name].requires_grad_()
    # Gaps in days: the materialised peer's bias is rounded to the score dtype, and small biases
    # keep its bfloat16 rounding small.
    case.update(causal=causal, decay_fn=decay_fn, time_unit=86400.0)
    return case


def parameters(case):
    """The tensors every forward+backward differentiates: q, k, v, decay (and the table)."""
    return [case[name] for name in ("q", "k", "v", "decay", "time_bias")
            if case[name] is not None]


def as_jagged(case):
    """The case's padded tensors as stseq's jagged layout (q, k, v [T, H, D], timestamps [T])."""
    lengths = case["lengths"]
    cu_seqlens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
    valid = torch.arange(case["q"].shape[2], device=lengths.device) < lengths[:, None]
    tokens = {name: case[name].detach().transpose(1, 2)[valid].requires_grad_()
              for name in ("q", "k", "v")}
    return dict(case, **tokens, timestamps=case["timestamps"][valid], cu_seqlens=cu_seqlens,
                max_seqlen=case["q"].shape[2])


def _to_padded(values, case):
    """[T, H, ...] -> [B, H, L, ...] for comparing a jagged result with the peers'."""
    cu_seqlens = case["cu_seqlens"]
    return pad_jagged(values, cu_seqlens, case["max_seqlen"])[0].transpose(1, 2)


def _stseq_call(case):
    names = ["q", "k", "v", "timestamps", "decay", "causal", "decay_fn", "time_unit", "time_bias"]
    names += ["cu_seqlens", "max_seqlen"] if "cu_seqlens" in case else ["lengths"]
    return ops.time_decay_attention(**{name: case[name] for name in names})


def stseq_forward(case):
    """stseq forward -> out (padded [B, H, L, D] also for a jagged case)."""
    with torch.no_grad():
        out = _stseq_call(case)
    return _to_padded(out, case) if "cu_seqlens" in case else out


def stseq_forward_backward(case):
    """stseq forward + backward of a fixed projection -> gradients of :func:`parameters`."""
    out = _stseq_call(case)
    grads = torch.autograd.grad(out, parameters(case), grad_outputs=torch.ones_like(out))
    if "cu_seqlens" in case:
        grads = tuple(_to_padded(g, case) for g in grads[:3]) + grads[3:]
    return grads


def _valid(case):
    """[B, 1, L, 1] mask of real (not padded) queries, or None."""
    if case["lengths"] is None:
        return None
    positions = torch.arange(case["q"].shape[2], device=case["q"].device)
    return (positions < case["lengths"][:, None])[:, None, :, None]


def materialised_bias(case, decay):
    """The [B, H, L, L] bias of the case (score dtype), with the dtype's lowest value where
    masked (finite, so that padded query rows stay finite; their outputs are zeroed)."""
    q, timestamps = case["q"], case["timestamps"]
    seq_len = q.shape[2]
    gap = (timestamps[:, :, None] - timestamps[:, None, :]).abs().double() / case["time_unit"]
    phi = decay_phi(gap, case["decay_fn"]).to(q.dtype)  # [B, L, L]
    bias = -F.softplus(decay).to(q.dtype)[None, :, None, None] * phi[:, None]  # [B, H, L, L]
    if case["time_bias"] is not None:
        bucket = time_bucket(gap, case["time_bias"].shape[1], "log", HSTU_BUCKET_SCALE)
        bias = bias + case["time_bias"][:, bucket].transpose(0, 1).to(q.dtype)
    positions = torch.arange(seq_len, device=q.device)
    allowed = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q.device)
    if case["causal"]:
        allowed = positions[None, :] <= positions[:, None]
    if case["lengths"] is not None:
        allowed = allowed & (positions < case["lengths"][:, None])[:, None, None, :]
    return bias.masked_fill(~allowed, torch.finfo(q.dtype).min).to(q.dtype)


def sdpa_bias(case, decay=None):
    """SDPA with the bias materialised -> out [B, H, L, D] (zeros at padded queries)."""
    decay = case["decay"] if decay is None else decay
    out = F.scaled_dot_product_attention(case["q"], case["k"], case["v"],
                                         attn_mask=materialised_bias(case, decay))
    valid = _valid(case)
    return out if valid is None else out * valid


def sdpa_bias_forward(case):
    """Peer forward -> out."""
    with torch.no_grad():
        return sdpa_bias(case)


def sdpa_bias_forward_backward(case):
    """Peer forward + backward -> gradients of :func:`parameters` (decay through the bias)."""
    out = sdpa_bias(case)
    return torch.autograd.grad(out, parameters(case), grad_outputs=torch.ones_like(out))


def sdpa_no_bias(case, backward):
    """SDPA without any bias on the whole padded batch (is_causal: flash) -> out (zeros at padded
    queries), or the gradients of q, k, v plus a zero decay gradient (stseq's is 0 at rate 0).
    Causal, it equals stseq at rate 0 also with lengths: a query inside its row sees no padding."""
    valid = _valid(case)

    def attend():
        out = F.scaled_dot_product_attention(case["q"], case["k"], case["v"],
                                             is_causal=case["causal"])
        return out if valid is None else out * valid

    if not backward:
        with torch.no_grad():
            return attend()
    out = attend()
    grads = torch.autograd.grad(out, [case["q"], case["k"], case["v"]],
                                grad_outputs=torch.ones_like(out))
    return grads + (torch.zeros_like(case["decay"]),)


def at_rate_zero(case):
    """The case with a decay whose rate softplus(-1e4) is exactly 0 (the no-bias comparison)."""
    return dict(case, decay=torch.full_like(case["decay"], -1e4).requires_grad_())


_COMPILED = {}  # flex_attention compiled once per process


def flex_runner(case):
    """FlexAttention with the decay as a score_mod (the learnable rate captured) and a block mask
    of causality and the case's lengths, built once -> fn(backward) giving out (zeros at padded
    queries) or the gradients of q, k, v and decay (the decay's through Flex's atomic adds)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    batch, _, seq_len, _ = case["q"].shape
    hi, _ = relative_times(case["timestamps"], case["time_unit"])  # [B, L] float32
    phi = {"abs": lambda x: x, "log1p": torch.log1p, "sqrt": torch.sqrt}[case["decay_fn"]]
    lengths = case["lengths"]
    if lengths is None:
        lengths = torch.full((batch,), seq_len, device=hi.device)
    causal, valid = case["causal"], _valid(case)

    def mask_mod(b, h, q_idx, kv_idx):
        inside = (q_idx < lengths[b]) & (kv_idx < lengths[b])
        return inside & (kv_idx <= q_idx) if causal else inside

    def score_mod_of(decay):
        def score_mod(score, b, h, q_idx, kv_idx):
            return score - F.softplus(decay[h]) * phi(torch.abs(hi[b, q_idx] - hi[b, kv_idx]))
        return score_mod

    mask = create_block_mask(mask_mod, batch, None, seq_len, seq_len, device=hi.device)
    score_mods = {True: score_mod_of(case["decay"]), False: score_mod_of(case["decay"].detach())}
    if "flex" not in _COMPILED:
        _COMPILED["flex"] = torch.compile(flex_attention)

    def attend(backward):
        q, k, v = (case[name] if backward else case[name].detach() for name in ("q", "k", "v"))
        out = _COMPILED["flex"](q, k, v, score_mod=score_mods[backward], block_mask=mask)
        return out if valid is None else out * valid

    def run(backward):
        if not backward:
            with torch.no_grad():
                return attend(False)
        out = attend(True)
        return torch.autograd.grad(out, parameters(case), grad_outputs=torch.ones_like(out))
    return run


def _label(shape):
    return ",".join(f"{key}={value}" for key, value in shape.items() if key != "device")


def cases(grid, device, dtype):
    """(name, shape, stseq_fn, peer_fn, peer) for every shape of the grid meant for ``device``
    (entries with ``device="cuda"`` run on CUDA only, the others on the CPU only)."""
    for shape in grid:
        if shape.get("device", "cpu") == device.type:
            yield from shape_cases(shape, device, dtype)


def shape_cases(shape, device, dtype):
    """The cases of one shape on ``device``, forward and forward+backward: against SDPA with the
    bias (left out where its [B, H, L, L] bias alone would pass 2^31 elements: B=64, L=4096 is
    8 GiB in bfloat16, built through float32), and for a GPU shape (``device="cuda"``) without
    a bucket table also against the no-bias ceiling (causal shapes) and FlexAttention. Inputs
    are built on first use."""
    spec = {key: value for key, value in shape.items() if key != "device"}
    case = functools.cache(lambda: make_inputs(**spec, device=device, dtype=dtype))
    ours = functools.cache(lambda: as_jagged(case()) if shape.get("jagged") else case())
    ours_at_rate_zero = functools.cache(lambda: at_rate_zero(ours()))
    flex_fn = functools.cache(lambda: flex_runner(case()))
    label = _label(shape)
    gpu_peers = shape.get("device") == "cuda" and not shape.get("num_buckets")
    fits = shape["batch"] * shape["heads"] * shape["seq_len"] ** 2 <= 2**31
    for backward in (False, True):
        name = f"time_decay_attention {'forward+backward' if backward else 'forward'}"
        call = stseq_forward_backward if backward else stseq_forward
        if fits:
            bias_peer = sdpa_bias_forward_backward if backward else sdpa_bias_forward
            yield (name, label, lambda call=call: call(ours()),
                   lambda bias_peer=bias_peer: bias_peer(case()), PEER)
        if gpu_peers and shape.get("causal", True):
            yield (name, label, lambda call=call: call(ours_at_rate_zero()),
                   lambda backward=backward: sdpa_no_bias(case(), backward),
                   PEERS["sdpa_no_bias"])
        if gpu_peers:
            yield (name, label, lambda call=call: call(ours()),
                   lambda backward=backward: flex_fn()(backward), PEERS["flex"])
