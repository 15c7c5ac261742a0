"""TimeDecayMultiheadAttention and TimeDecayTransformerBlock: parity with the torch modules they
generalise (decay rate 0, nn.MultiheadAttention's state dict and call), padded vs jagged, initial
decay rates, the decay's effect, torch.compile(fullgraph=True) and bad arguments."""

import math

import pytest
import torch
from torch import nn

import stseq

EPOCH = 1_700_000_000


def sequences(batch=3, seq_len=12, embed_dim=32, seed=0):
    """x [B, L, E], timestamps [B, L] (hours apart), lengths [B] with a full row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, seq_len, embed_dim, generator=g)
    timestamps = EPOCH + torch.randint(0, 7200, (batch, seq_len), generator=g).cumsum(1)
    lengths = torch.randint(1, seq_len + 1, (batch,), generator=g)
    lengths[0] = seq_len
    return x, timestamps, lengths


def valid_rows(lengths, seq_len):
    return torch.arange(seq_len) < lengths[:, None]  # [B, L]


def torch_masks(lengths, seq_len):
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)  # True: not attended
    return causal, ~valid_rows(lengths, seq_len)


def swapped_in(peer, backend="reference", **options):
    """A TimeDecayMultiheadAttention with the peer's options and weights and no decay."""
    attention = stseq.nn.TimeDecayMultiheadAttention(
        peer.embed_dim, peer.num_heads, batch_first=peer.batch_first, backend=backend, **options)
    missing, unexpected = attention.load_state_dict(peer.state_dict(), strict=False)
    assert missing == ["decay"] and unexpected == []
    with torch.no_grad():
        attention.decay.fill_(-200.0)  # softplus(-200) = 0 in float32: no time bias
    return attention


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_drop_in_for_multihead_attention_without_decay(backend, batch_first):
    peer = nn.MultiheadAttention(32, 2, batch_first=batch_first)
    attention = swapped_in(peer, backend)
    x, timestamps, lengths = sequences()
    causal, padding = torch_masks(lengths, x.shape[1])
    x_in = x if batch_first else x.transpose(0, 1).contiguous()
    out, weights = attention(x_in, x_in, x_in, key_padding_mask=padding, attn_mask=causal,
                             timestamps=timestamps)
    expected, expected_weights = peer(x_in, x_in, x_in, key_padding_mask=padding,
                                      attn_mask=causal)
    if not batch_first:
        out, expected = out.transpose(0, 1), expected.transpose(0, 1)
    valid = valid_rows(lengths, x.shape[1])
    torch.testing.assert_close(out[valid], expected[valid], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights[valid], expected_weights[valid], rtol=1e-5, atol=1e-6)
    out[valid].square().sum().backward()
    expected[valid].square().sum().backward()
    torch.testing.assert_close(attention.in_proj_weight.grad, peer.in_proj_weight.grad,
                               rtol=1e-4, atol=1e-5)


def test_distinct_query_key_value_and_per_head_weights():
    peer = nn.MultiheadAttention(32, 2, batch_first=True)
    attention = swapped_in(peer, causal=False)
    x, timestamps, _ = sequences()
    key, value = x.flip(-1), 2 * x
    out, weights = attention(x, key, value, average_attn_weights=False, timestamps=timestamps)
    expected, expected_weights = peer(x, key, value, average_attn_weights=False)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)


def test_old_checkpoint_keys_unchanged():
    # The block's checkpoints (SASRec, TimeSASRec) keep their keys.
    block = stseq.nn.TimeDecayTransformerBlock(32, 2, num_buckets=4)
    names = [name for name in block.state_dict() if name.startswith("attention.")]
    assert names == ["attention.decay", "attention.time_bias", "attention.in_proj.weight",
                     "attention.in_proj.bias", "attention.out_proj.weight",
                     "attention.out_proj.bias"]


def test_block_matches_pre_norm_transformer_encoder_layer():
    block = stseq.nn.TimeDecayTransformerBlock(32, 2, dim_feedforward=48, dropout=0.0,
                                               backend="reference")
    with torch.no_grad():
        block.attention.decay.fill_(-200.0)
    peer = nn.TransformerEncoderLayer(32, 2, dim_feedforward=48, dropout=0.0, activation="gelu",
                                      batch_first=True, norm_first=True)
    attention = block.attention
    peer.load_state_dict({
        "self_attn.in_proj_weight": attention.in_proj.weight,
        "self_attn.in_proj_bias": attention.in_proj.bias,
        "self_attn.out_proj.weight": attention.out_proj.weight,
        "self_attn.out_proj.bias": attention.out_proj.bias,
        "linear1.weight": block.feedforward[0].weight, "linear1.bias": block.feedforward[0].bias,
        "linear2.weight": block.feedforward[3].weight, "linear2.bias": block.feedforward[3].bias,
        "norm1.weight": block.attention_norm.weight, "norm1.bias": block.attention_norm.bias,
        "norm2.weight": block.feedforward_norm.weight, "norm2.bias": block.feedforward_norm.bias})
    x, timestamps, lengths = sequences()
    causal, padding = torch_masks(lengths, x.shape[1])
    expected = peer(x, src_mask=causal, src_key_padding_mask=padding)
    valid = valid_rows(lengths, x.shape[1])
    torch.testing.assert_close(block(x, timestamps, lengths)[valid], expected[valid], rtol=1e-5,
                               atol=1e-5)


def test_jagged_matches_padded():
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, num_buckets=8, batch_first=True)
    with torch.no_grad():
        attention.time_bias.normal_()
    x, timestamps, lengths = sequences()
    valid = valid_rows(lengths, x.shape[1])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    tokens = x[valid]
    out, _ = attention(tokens, tokens, tokens, need_weights=False, timestamps=timestamps[valid],
                       cu_seqlens=cu_seqlens, max_seqlen=x.shape[1])
    padded, _ = attention(x, x, x, need_weights=False, timestamps=timestamps, lengths=lengths)
    torch.testing.assert_close(out, padded[valid])


def test_initial_decay_rates_are_geometric():
    attention = stseq.nn.TimeDecayMultiheadAttention(64, 4)
    rates = torch.nn.functional.softplus(attention.decay)
    torch.testing.assert_close(rates, torch.tensor([1.0, 0.25, 1 / 16, 1 / 64]))
    assert attention.time_bias is None
    assert stseq.nn.TimeDecayMultiheadAttention(64, 4, num_buckets=5).time_bias.abs().sum() == 0


def test_fast_decay_attends_to_the_latest_event():
    # A huge rate: each query sees only the keys at zero gap, here itself.
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, bias=False, batch_first=True)
    with torch.no_grad():
        attention.decay.fill_(50.0)
    x, _, _ = sequences(1, 6)
    timestamps = EPOCH + 3600 * torch.arange(6)[None]
    out, _ = attention(x, x, x, is_causal=True, need_weights=False, timestamps=timestamps)
    values = attention.in_proj(x)[..., 64:]  # v of every position [1, L, E]
    torch.testing.assert_close(out, attention.out_proj(values), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_compile_fullgraph_module(backend):
    torch._dynamo.reset()
    block = stseq.nn.TimeDecayTransformerBlock(32, 2, dropout=0.0, num_buckets=6,
                                               backend=backend)
    x, timestamps, lengths = sequences(2, 10)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    out = compiled(x, timestamps, lengths)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    expected = block(x, timestamps, lengths)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected)
    for grad, parameter in zip(grads, block.parameters()):
        torch.testing.assert_close(grad, parameter.grad)


def test_compile_fullgraph_drop_in_call():
    torch._dynamo.reset()
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, batch_first=True, num_buckets=4)
    x, timestamps, lengths = sequences(2, 10)
    padding = torch.arange(10) >= lengths[:, None]

    def call(x):
        return attention(x, x, x, key_padding_mask=padding, need_weights=False, is_causal=True,
                         timestamps=timestamps)[0]

    out = torch.compile(call, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, call(x))


BAD_OPTIONS = {
    "heads": (dict(embed_dim=30, num_heads=4), r"embed_dim \(30\) must be a multiple of num_heads"),
    "head size": (dict(embed_dim=32, num_heads=4),
                  r"head size embed_dim / num_heads = 32 / 4 = 8 must be in \[16, 128\] "
                  r"\(the kernel's range\); num_heads in \[1, 2\] fit"),
    "zero heads": (dict(num_heads=0), r"num_heads must be an int >= 1, got 0"),
    "dropout": (dict(dropout=1.0), r"dropout must be a number in \[0, 1\), got 1.0"),
    "kdim": (dict(kdim=16), r"kdim must be None or embed_dim \(32\)"),
    "bias kv": (dict(add_bias_kv=True), r"add_bias_kv and add_zero_attn are not supported"),
    "decay_fn": (dict(decay_fn="exp"), r"decay_fn must be one of"),
    "time_unit": (dict(time_unit=0), r"time_unit must be a finite number > 0"),
    "num_buckets": (dict(num_buckets=-1), r"num_buckets must be an int >= 0, got -1"),
    "bucketing": (dict(bucketing="linear"), r"bucketing must be one of"),
    "bucket_scale": (dict(bucket_scale=-2.0), r"bucket_scale must be a finite number > 0"),
    "window": (dict(window=-1), r"window must be an int >= 0, got -1"),
    "backend": (dict(backend="flash"), r"backend must be one of"),
}


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_options_raise_at_construction(name):
    options, message = BAD_OPTIONS[name]
    with pytest.raises(ValueError, match=message):
        stseq.nn.TimeDecayMultiheadAttention(**{"embed_dim": 32, "num_heads": 2, **options})


def test_block_checks_its_options():
    with pytest.raises(ValueError, match="activation must be one of"):
        stseq.nn.TimeDecayTransformerBlock(32, 2, activation="tanh")
    with pytest.raises(ValueError, match="head size embed_dim / num_heads = 32 / 4 = 8"):
        stseq.nn.TimeDecayTransformerBlock(32, 4)


def test_bad_calls_raise_in_the_layers_terms():
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, batch_first=True)
    x, timestamps, lengths = sequences()

    def call(query, key=None, value=None, **options):
        key = query if key is None else key
        return attention(query, key, query if value is None else value,
                         **{"timestamps": timestamps, "need_weights": False, **options})

    with pytest.raises(ValueError, match=r"unbatched query \(12, 32\) is not supported: add a "
                                         r"batch dimension \(query.unsqueeze\(0\)\)"):
        call(x[0], timestamps=timestamps[0])
    with pytest.raises(ValueError, match=r"query must have shape \[B, L, E\] with E = "
                                         r"embed_dim = 32, got \(3, 12, 16\)"):
        call(x[..., :16])
    with pytest.raises(ValueError, match=r"key must have the shape of query \(3, 12, 32\)"):
        call(x, key=x[:, :5])
    with pytest.raises(ValueError, match="attn_mask must be None or the causal mask"):
        call(x, attn_mask=torch.ones(12, 12, dtype=torch.bool).tril(-1))
    scattered = torch.zeros(3, 12, dtype=torch.bool)
    scattered[1, 4] = True
    with pytest.raises(ValueError, match="key_padding_mask must mark a suffix of each row "
                                         r"\(right padding; the kernel takes lengths\): row 1"):
        call(x, key_padding_mask=scattered)
    with pytest.raises(TypeError, match=r"key_padding_mask must be a bool tensor \[B, L\]"):
        call(x, key_padding_mask=scattered.float())
    with pytest.raises(ValueError, match="not two of them"):
        call(x, key_padding_mask=scattered, lengths=lengths)
    with pytest.raises(ValueError, match="non-decreasing"):
        call(x, timestamps=timestamps.flip(1))
    assert math.isfinite(call(x)[0].sum().item())
