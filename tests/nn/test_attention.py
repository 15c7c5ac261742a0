"""TimeDecayMultiheadAttention and TimeDecayTransformerBlock: parity with the torch modules they
generalise (decay rate 0, copied weights), padded vs jagged, initial decay rates, the decay's
effect, torch.compile(fullgraph=True) and bad arguments."""

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


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_matches_multihead_attention_without_decay(backend):
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, backend=backend)
    with torch.no_grad():
        attention.decay.fill_(-200.0)  # softplus(-200) = 0 in float32: no time bias
    peer = nn.MultiheadAttention(32, 2, batch_first=True)
    peer.load_state_dict({"in_proj_weight": attention.in_proj.weight,
                          "in_proj_bias": attention.in_proj.bias,
                          "out_proj.weight": attention.out_proj.weight,
                          "out_proj.bias": attention.out_proj.bias})
    x, timestamps, lengths = sequences()
    out = attention(x, timestamps, lengths)
    causal, padding = torch_masks(lengths, x.shape[1])
    expected, _ = peer(x, x, x, attn_mask=causal, key_padding_mask=padding, need_weights=False)
    valid = valid_rows(lengths, x.shape[1])
    torch.testing.assert_close(out[valid], expected[valid], rtol=1e-5, atol=1e-5)
    out[valid].square().sum().backward()
    expected[valid].square().sum().backward()
    torch.testing.assert_close(attention.in_proj.weight.grad, peer.in_proj_weight.grad,
                               rtol=1e-4, atol=1e-5)


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
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, num_buckets=8)
    with torch.no_grad():
        attention.time_bias.normal_()
    x, timestamps, lengths = sequences()
    valid = valid_rows(lengths, x.shape[1])
    cu_seqlens = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    out = attention(x[valid], timestamps[valid], cu_seqlens=cu_seqlens,
                    max_seqlen=x.shape[1])
    torch.testing.assert_close(out, attention(x, timestamps, lengths)[valid])


def test_initial_decay_rates_are_geometric():
    attention = stseq.nn.TimeDecayMultiheadAttention(64, 4)
    rates = torch.nn.functional.softplus(attention.decay)
    torch.testing.assert_close(rates, torch.tensor([1.0, 0.25, 1 / 16, 1 / 64]))
    assert attention.time_bias is None
    assert stseq.nn.TimeDecayMultiheadAttention(64, 4, num_buckets=5).time_bias.abs().sum() == 0


def test_fast_decay_attends_to_the_latest_event():
    # A huge rate: each query sees only the keys at zero gap, here itself.
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2, bias=False)
    with torch.no_grad():
        attention.decay.fill_(50.0)
    x, _, _ = sequences(1, 6)
    timestamps = EPOCH + 3600 * torch.arange(6)[None]
    out = attention(x, timestamps)
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


def test_bad_arguments():
    with pytest.raises(ValueError, match="must be a multiple of num_heads"):
        stseq.nn.TimeDecayMultiheadAttention(30, 4)
    with pytest.raises(ValueError, match="backend must be one of"):
        stseq.nn.TimeDecayMultiheadAttention(32, 2, backend="flash")
    with pytest.raises(ValueError, match="activation must be"):
        stseq.nn.TimeDecayTransformerBlock(32, 2, activation="tanh")
    attention = stseq.nn.TimeDecayMultiheadAttention(32, 2)
    x, timestamps, _ = sequences()
    with pytest.raises(ValueError, match=r"x must have shape \[B, L, 32\]"):
        attention(x[..., :16], timestamps)
    with pytest.raises(ValueError, match=r"head dim D = q.shape\[-1\] must be in \[16, 128\]"):
        stseq.nn.TimeDecayMultiheadAttention(32, 4)(x, timestamps)
    with pytest.raises(ValueError, match="non-decreasing"):
        attention(x, timestamps.flip(1))
    assert math.isfinite(attention(x, timestamps).sum().item())
