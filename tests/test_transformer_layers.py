"""Tests of the hand-written Transformer layers against torch's built-in modules and against themselves."""
import math

import pytest
import torch
from torch import nn

from core.layers.attention import MultiHeadAttention
from core.layers.transformer import PositionalEncoding, TransformerDecoderLayer


def copy_attention(ours, theirs):
    """Load our query/key/value/proj weights into an nn.MultiheadAttention (packed in_proj)."""
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        theirs.out_proj.weight.copy_(ours.proj.weight)
        theirs.out_proj.bias.copy_(ours.proj.bias)


def causal_mask(T):
    """(T, T) bool, True where attending is allowed (our convention)."""
    return torch.ones(T, T, dtype=torch.bool).tril()


@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_torch_multihead_attention(masked):
    torch.manual_seed(0)
    N, S, T, E, H = 3, 5, 7, 16, 4
    ours = MultiHeadAttention(E, H, dropout=0.0).eval()
    theirs = nn.MultiheadAttention(E, H, dropout=0.0, batch_first=True).eval()
    copy_attention(ours, theirs)
    query, key, value = torch.randn(N, S, E), torch.randn(N, T, E), torch.randn(N, T, E)
    if masked:
        query = key  # self-attention with a causal mask
        mask = causal_mask(T)
        expected, _ = theirs(query, key, value, attn_mask=~mask, need_weights=False)  # theirs: True = blocked
        actual = ours(query, key, value, attn_mask=mask)
    else:
        expected, _ = theirs(query, key, value, need_weights=False)
        actual = ours(query, key, value)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_attention_mask_accepts_zero_one_and_blocks_keys():
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2, dropout=0.0).eval()
    query, memory = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]])
    out = attn(query, memory, memory, attn_mask=mask)
    torch.testing.assert_close(out, attn(query, memory, memory, attn_mask=mask.bool()), rtol=0, atol=0)
    # Blocked keys must not matter: scrambling them leaves the output unchanged.
    changed = memory.clone()
    changed[:, 2:] = torch.randn(2, 2, 8)
    torch.testing.assert_close(attn(query[:, :2], changed, changed, attn_mask=mask[:2]), out[:, :2])
    assert not torch.allclose(attn(query, changed, changed, attn_mask=mask)[:, 2], out[:, 2])


@pytest.mark.parametrize("masked", [False, True])
def test_fused_and_hand_written_attention_agree_with_gradients(masked):
    torch.manual_seed(0)
    N, T, E, H = 2, 6, 12, 3
    hand = MultiHeadAttention(E, H, dropout=0.0).double()
    fused = MultiHeadAttention(E, H, dropout=0.0, fused=True).double()
    fused.load_state_dict(hand.state_dict())
    x = torch.randn(N, T, E, dtype=torch.float64)
    x_hand, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    mask = causal_mask(T) if masked else None
    out_hand, out_fused = hand(x_hand, x_hand, x_hand, mask), fused(x_fused, x_fused, x_fused, mask)
    torch.testing.assert_close(out_fused, out_hand, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(out_hand)
    (out_hand * upstream).sum().backward()
    (out_fused * upstream).sum().backward()
    torch.testing.assert_close(x_fused.grad, x_hand.grad, rtol=1e-10, atol=1e-10)
    for name, param in hand.named_parameters():
        torch.testing.assert_close(fused.get_parameter(name).grad, param.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fused", [False, True])
def test_attention_dropout_acts_in_training_only(fused):
    torch.manual_seed(0)
    attn = MultiHeadAttention(8, 2, dropout=0.5, fused=fused)
    x = torch.randn(2, 5, 8)
    assert not torch.allclose(attn(x, x, x), attn(x, x, x))
    attn.eval()
    torch.testing.assert_close(attn(x, x, x), attn(x, x, x), rtol=0, atol=0)


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    attn = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="query"):
        attn(torch.randn(2, 5, 6), x, x)
    with pytest.raises(ValueError, match="differ"):
        attn(x, x, torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, x, x, attn_mask=causal_mask(4))


def test_positional_encoding_values_and_offset():
    E, max_len = 6, 20
    pe = PositionalEncoding(E, dropout=0.0, max_len=max_len)
    x = torch.zeros(1, 10, E)
    out = pe(x)
    p, i = 7, 1  # position 7, frequency index 1 -> channels 2 and 3
    angle = p / 10000 ** (2 * i / E)
    assert out[0, p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert out[0, p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    torch.testing.assert_close(pe(x[:, :1], offset=p), out[:, p:p + 1], rtol=0, atol=0)
    assert "pe" not in pe.state_dict()
    with pytest.raises(ValueError, match="max_len"):
        pe(torch.zeros(1, 3, E), offset=max_len - 2)


def test_decoder_layer_matches_torch_transformer_decoder_layer():
    torch.manual_seed(0)
    N, T, M, E, H, F = 2, 6, 3, 16, 4, 32
    ours = TransformerDecoderLayer(E, H, dim_feedforward=F, dropout=0.0).eval()
    theirs = nn.TransformerDecoderLayer(E, H, dim_feedforward=F, dropout=0.0, batch_first=True).eval()
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_attention(ours.cross_attn, theirs.multihead_attn)
    with torch.no_grad():
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            for param in ("weight", "bias"):
                getattr(getattr(theirs, name), param).copy_(getattr(getattr(ours, name), param))
    tgt, memory = torch.randn(N, T, E), torch.randn(N, M, E)
    expected = theirs(tgt, memory, tgt_mask=~causal_mask(T))
    torch.testing.assert_close(ours(tgt, memory, causal_mask(T)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fused", [False, True])
def test_decoder_layer_step_with_cache_equals_full_forward(fused):
    torch.manual_seed(0)
    N, T, M, E = 3, 7, 2, 12
    layer = TransformerDecoderLayer(E, 3, dim_feedforward=24, dropout=0.0, fused=fused).double().eval()
    tgt, memory = torch.randn(N, T, E, dtype=torch.float64), torch.randn(N, M, E, dtype=torch.float64)
    expected, expected_weights = layer(tgt, memory, causal_mask(T), need_weights=True)  # weights (N, T, M)
    torch.testing.assert_close(layer(tgt, memory, causal_mask(T)), expected, rtol=0, atol=0)
    cache = layer.init_cache(memory)
    for t in range(T):
        out, _, weights = layer.step(tgt[:, t:t + 1], cache, need_weights=True)
        out_alone, cache = layer.step(tgt[:, t:t + 1], cache)
        torch.testing.assert_close(out[:, 0], expected[:, t], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(weights, expected_weights[:, t], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out_alone, out, rtol=0, atol=0)
    assert cache.key.shape == (N, 3, T, 4)
    reordered = cache.select(torch.tensor([2, 2, 0]))
    torch.testing.assert_close(reordered.value[1], cache.value[2], rtol=0, atol=0)
    with pytest.raises(ValueError, match="one position"):
        layer.step(tgt[:, :2], cache)


def test_decoder_layer_is_causal():
    torch.manual_seed(0)
    T, t = 8, 3
    layer = TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0).eval()
    tgt, memory = torch.randn(2, T, 8), torch.randn(2, 1, 8)
    changed = tgt.clone()
    changed[:, t + 1:] = torch.randn(2, T - t - 1, 8)
    out, out_changed = layer(tgt, memory, causal_mask(T)), layer(changed, memory, causal_mask(T))
    torch.testing.assert_close(out_changed[:, :t + 1], out[:, :t + 1], rtol=0, atol=0)
    assert not torch.allclose(out_changed[:, t + 1:], out[:, t + 1:])
