"""Tests of the Transformer's cross-attention over image regions: the attention layer against torch over many keys,
the grid memory's layout and measurement, KV-cached decoding with it, its attention weights, and overfitting."""
import numpy as np
import pytest
import torch
from torch import nn

from core.decoding import beam_search, greedy_decode
from core.layers.attention import MultiHeadAttention
from core.layers.transformer import TransformerDecoderLayer
from core.model.transformer import CaptioningTransformer
from core.model.transformer_config import TransformerConfig
from core.model.transformer_inputs import measure_grid
from tests.test_transformer_layers import copy_attention
from tests.test_transformer_model import decode_all, random_captions, vocabulary

SIDE, C = 4, 6  # a 4 x 4 map of 6-channel cells
R = SIDE * SIDE


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors here are tiny: extra threads only add synchronisation, ruinous on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def grid_model(seed=0, varied=False, **overrides):
    """A small grid-memory model; ``varied`` redraws its matrices with std 0.5 (eval mode) so that greedy words
    depend strongly on the image and the prefix."""
    torch.manual_seed(seed)
    options = dict(input_dim=C, num_cells=R, memory="grid", wordvec_dim=32, num_heads=4, num_layers=2,
                   max_length=20, dim_feedforward=64, dropout=0.0)
    model = CaptioningTransformer(vocabulary(), **dict(options, **overrides))
    if varied:
        model.eval()
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() > 1:
                    param.normal_(0.0, 0.5)
    return model


def grid_features(seed, n, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, R, C)).astype(dtype)


@pytest.mark.parametrize("fused", [False, True])
def test_cross_attention_over_many_keys_matches_torch_with_weights(fused):
    torch.manual_seed(0)
    N, S, T, E, H = 3, 5, R + 1, 16, 4
    ours = MultiHeadAttention(E, H, dropout=0.0, fused=fused).double().eval()
    theirs = nn.MultiheadAttention(E, H, dropout=0.0, batch_first=True).double().eval()
    copy_attention(ours, theirs)
    query, memory = torch.randn(N, S, E, dtype=torch.float64), torch.randn(N, T, E, dtype=torch.float64)
    expected, expected_weights = theirs(query, memory, memory, need_weights=True, average_attn_weights=True)
    actual, weights = ours(query, memory, memory, need_weights=True)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(weights, expected_weights, rtol=0, atol=1e-10)
    assert weights.shape == (N, S, T)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(N, S, dtype=torch.float64), rtol=0, atol=1e-12)
    assert weights.std() > 0.01, "near-uniform weights would make this test weak"
    torch.testing.assert_close(ours(query, memory, memory), actual, rtol=0, atol=0)


def test_masked_keys_get_zero_weight_as_in_torch():
    torch.manual_seed(0)
    ours = MultiHeadAttention(8, 2, dropout=0.0).double().eval()
    theirs = nn.MultiheadAttention(8, 2, dropout=0.0, batch_first=True).double().eval()
    copy_attention(ours, theirs)
    query, memory = torch.randn(2, 3, 8, dtype=torch.float64), torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.rand(3, 6) < 0.6
    mask[:, 0] = True  # every query keeps a key
    _, expected = theirs(query, memory, memory, attn_mask=~mask, need_weights=True)  # theirs: True = blocked
    _, weights = ours(query, memory, memory, attn_mask=mask, need_weights=True)
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-10)
    assert (weights[:, ~mask] == 0).all() and (weights[:, mask] > 0).all()


def test_permuting_the_memory_permutes_weights_and_keeps_the_output():
    torch.manual_seed(0)
    layer = TransformerDecoderLayer(12, 3, dim_feedforward=24, dropout=0.0).double().eval()
    tgt, memory = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, R + 1, 12, dtype=torch.float64)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    out, weights = layer(tgt, memory, causal, need_weights=True)
    order = torch.randperm(R + 1)
    out_permuted, weights_permuted = layer(tgt, memory[:, order], causal, need_weights=True)
    torch.testing.assert_close(out_permuted, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights_permuted, weights[:, :, order], rtol=0, atol=1e-12)
    torch.testing.assert_close(layer(tgt, memory, causal), out, rtol=0, atol=0)


def test_grid_memory_layout_cells_row_major_then_global():
    model = grid_model(seed=1, varied=True, feature_scale=2.5).double()
    features = torch.from_numpy(grid_features(1, 3, np.float64))
    memory = model._memory(features)  # (N, R + 1, W)
    grid = model.grid_memory
    assert memory.shape == (3, R + 1, 32)
    with torch.no_grad():
        for y in range(SIDE):
            for x in range(SIDE):
                cell = grid.projection(features[:, y * SIDE + x] / 2.5) + grid.row.weight[y] + grid.column.weight[x]
                torch.testing.assert_close(memory[:, y * SIDE + x], cell, rtol=0, atol=1e-12)
        pooled = grid.projection(features.mean(dim=1) / 2.5) + grid.global_type.weight[0]
        torch.testing.assert_close(memory[:, R], pooled, rtol=0, atol=1e-12)


def test_permuting_cells_with_their_position_embeddings_leaves_scores_unchanged():
    model = grid_model(seed=2, varied=True).double()
    features = torch.from_numpy(grid_features(2, 3, np.float64))
    captions = torch.from_numpy(random_captions(np.random.default_rng(2), 3))[:, :-1]
    scores = model(features, captions)
    rows, columns = torch.randperm(SIDE), torch.randperm(SIDE)
    # Transpose the map and permute its rows and columns; the row and column tables follow the cells.
    moved = features.view(3, SIDE, SIDE, C).transpose(1, 2)[:, rows][:, :, columns].reshape(3, R, C)  # (N, R, C)
    grid = model.grid_memory
    with torch.no_grad():
        row, column = grid.row.weight.clone(), grid.column.weight.clone()
        grid.row.weight.copy_(column[rows])
        grid.column.weight.copy_(row[columns])
    torch.testing.assert_close(model(moved, captions), scores, rtol=0, atol=1e-10)
    with torch.no_grad():
        grid.row.weight.copy_(row)
        grid.column.weight.copy_(column)
    assert not torch.allclose(model(moved, captions), scores, atol=1e-3), "positions must matter"


def test_feature_scale_divides_the_cells():
    model = grid_model(seed=3, varied=True)
    features = torch.from_numpy(grid_features(3, 2))
    captions = torch.ones(2, 4, dtype=torch.long)
    scaled = grid_model(seed=3, varied=True, feature_scale=10.0)
    scaled.load_state_dict(model.state_dict())
    torch.testing.assert_close(scaled(features * 10, captions), model(features, captions), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(scaled(features, captions), model(features, captions), atol=1e-3)


class LazyRows:
    """An (M, R, C) array-like that, like an HDF5-backed dataset, may be sliced but must not be read whole."""

    def __init__(self, array):
        self.array, self.shape, self.asked = array, array.shape, []

    def __getitem__(self, key):
        self.asked.append(key)
        return self.array[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("read whole")


def test_for_data_measures_cells_channels_and_scale_from_the_first_rows():
    features = grid_features(4, 300) * 3.0
    lazy = LazyRows(features)
    config = TransformerConfig(memory="grid").for_data(lazy)
    assert (config.input_dim, config.num_cells) == (C, R)
    assert all(isinstance(key, slice) and key.stop <= 128 for key in lazy.asked) and lazy.asked
    expected = np.linalg.norm(features[:128], axis=-1).mean() / np.sqrt(C)
    assert config.feature_scale == pytest.approx(expected, rel=1e-6) and 2.5 < config.feature_scale < 3.5
    assert measure_grid(np.zeros((2, R, C)))[2] == 1.0
    pooled = TransformerConfig().for_data(np.zeros((5, 7)))
    assert (pooled.input_dim, pooled.memory, pooled.feature_scale) == (7, "pooled", 1.0)


def test_bad_grid_shapes_and_options_raise_clear_value_errors():
    with pytest.raises(ValueError, match=r"\(M, R, C\)"):
        TransformerConfig(memory="grid").for_data(np.zeros((5, 7)))
    with pytest.raises(ValueError, match="square"):
        TransformerConfig(memory="grid").for_data(np.zeros((5, 12, 3)))
    with pytest.raises(ValueError, match="memory 'grid'"):
        TransformerConfig().for_data(np.zeros((5, R, C)))
    with pytest.raises(ValueError, match="memory must be one of"):
        TransformerConfig(memory="regions")
    with pytest.raises(ValueError, match="square"):
        TransformerConfig(memory="grid", num_cells=50)
    with pytest.raises(ValueError, match="feature_scale"):
        TransformerConfig(memory="grid", feature_scale=0.0)
    model = grid_model()
    captions = torch.ones(2, 3, dtype=torch.long)
    for shape in ((2, R, C + 1), (2, R - 1, C), (2, C)):
        with pytest.raises(ValueError, match="num_cells and input_dim"):
            model(torch.zeros(shape), captions)
    with pytest.raises(ValueError, match="num_cells and input_dim"):
        model.init_decode(np.zeros((2, R + 1, C), dtype=np.float32))


@pytest.mark.parametrize("memory", ["pooled", "grid"])
def test_num_parameters_counts_every_parameter(memory):
    model = grid_model(memory=memory, input_dim=C * (1 if memory == "grid" else R))
    config = TransformerConfig(**model.config())
    assert config.num_parameters(len(vocabulary())) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("fused", [False, True])
def test_kv_cache_decoding_equals_recomputation_with_the_grid_memory(fused):
    model = grid_model(seed=0, varied=True, fused=fused).double()  # float64: a tolerance far below any bug
    features = grid_features(0, 6)
    index = np.array([5, 0, 0, 3, 1, 2])  # drops row 4, duplicates row 0, as beam search does
    cached, cached_lp = decode_all(model, features, 12, True, reorder_at=5, index=index)
    full, full_lp = decode_all(model, features, 12, False, reorder_at=5, index=index)
    assert len(np.unique(cached)) > 5, "degenerate decoding would make this test weak"
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_allclose(cached_lp, full_lp, rtol=0, atol=1e-6)
    for use_cache in (True, False):  # the cross-attention keys/values are projected once, in init_decode
        assert (model.init_decode(features, use_cache=use_cache).caches is None) != use_cache
    state = model.init_decode(features)
    assert state.caches[0].memory_key.shape == (6, 4, R + 1, 8)


def attentions(model, features, steps, use_cache):
    """attention(state) after each of ``steps`` greedy steps, of shape (N, steps, R + 1)."""
    state = model.init_decode(features, use_cache=use_cache)
    tokens, weights = np.full(len(features), model.start_idx), []
    for _ in range(steps):
        log_probs, state = model.decode_step(tokens, state)
        tokens = log_probs.argmax(axis=1)
        weights.append(model.attention(state))
    return np.stack(weights, axis=1), state


def test_attention_weights_of_each_step_cached_or_recomputed():
    model = grid_model(seed=6, varied=True).double()
    features = grid_features(6, 4)
    cached, state = attentions(model, features, 8, True)
    full, _ = attentions(model, features, 8, False)
    assert cached.shape == (4, 8, R + 1) and cached.dtype == np.float32
    np.testing.assert_allclose(cached, full, rtol=0, atol=1e-7)
    np.testing.assert_allclose(cached.sum(axis=-1), 1.0, rtol=0, atol=1e-6)
    assert cached.std(axis=-1).min() > 1e-3, "uniform weights would make this test weak"
    assert np.abs(np.diff(cached, axis=1)).max() > 1e-3, "the weights should move from step to step"
    index = np.array([3, 3, 1])
    np.testing.assert_array_equal(model.attention(model.reorder_state(state, index)), cached[index, -1])
    fused = grid_model(seed=6, varied=True, fused=True).double()
    np.testing.assert_allclose(attentions(fused, features, 8, True)[0], cached, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="decode_step first"):
        model.attention(model.init_decode(features))


def test_pooled_attention_is_one_position_of_weight_one():
    model = grid_model(memory="pooled", input_dim=C)
    weights, _ = attentions(model.eval(), np.ones((2, C), dtype=np.float32), 3, True)
    np.testing.assert_array_equal(weights, np.ones((2, 3, 1), dtype=np.float32))


class Recomputing:
    """A model's step interface without the key/value cache: core.decoding's strategies over full recomputation."""

    def __init__(self, model):
        self.model = model
        self.null_idx, self.start_idx, self.end_idx = model.null_idx, model.start_idx, model.end_idx

    def init_decode(self, features):
        return self.model.init_decode(features, use_cache=False)

    def decode_step(self, tokens, state):
        return self.model.decode_step(tokens, state)

    def reorder_state(self, state, index):
        return self.model.reorder_state(state, index)


def test_beam_search_over_the_grid_memory_cached_equals_recomputed_and_beam_one_is_greedy():
    model = grid_model(seed=4, varied=True).double()
    with torch.no_grad():
        model.output.bias[model.end_idx] = 1.0  # some hypotheses end early, so beams get reordered
    features = grid_features(4, 5)
    cached, cached_scores = beam_search(model, features, 3, 10, return_scores=True)
    full, full_scores = beam_search(Recomputing(model), features, 3, 10, return_scores=True)
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_allclose(cached_scores, full_scores, rtol=0, atol=1e-4)
    greedy = greedy_decode(model, features, 10)
    assert (greedy == model.end_idx).any() and len(np.unique(greedy)) > 4
    np.testing.assert_array_equal(beam_search(model, features, 1, 10), greedy)
    assert (cached_scores >= beam_search(model, features, 1, 10, return_scores=True)[1] - 1e-5).all()


def test_overfits_captions_of_random_grid_features():
    rng = np.random.default_rng(0)
    captions = torch.from_numpy(random_captions(rng, 40))
    features = torch.from_numpy(grid_features(8, 40))
    model = grid_model(seed=0)
    optimizer = model.configure_optimizers(weight_decay=0.0, lr=5e-3, betas=(0.9, 0.98))
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        loss = model.loss(features, captions)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
    assert losses[0] > 3.0 and losses[-1] < 0.1
    np.testing.assert_array_equal(model.sample(features.numpy(), max_length=16), captions[:, 1:].numpy())


def test_grid_forward_under_autocast_is_finite():
    captions = torch.from_numpy(random_captions(np.random.default_rng(9), 3))
    model = grid_model(seed=9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model.loss(torch.from_numpy(grid_features(9, 3)), captions)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.grid_memory.row.weight.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grid_decoding_on_cuda_matches_cpu():
    model = grid_model(seed=0, varied=True)
    features = grid_features(0, 4)
    on_cpu, cpu_state = attentions(model, features, 5, True)
    model.to("cuda")
    on_cuda, cuda_state = attentions(model, features, 5, True)
    np.testing.assert_allclose(on_cuda, on_cpu, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(cuda_state.tokens.cpu().numpy(), cpu_state.tokens.numpy())
