"""Tests of CaptioningTransformer: loss, causality, KV-cached decoding, overfitting, bad input."""
import json

import numpy as np
import pytest
import torch

from core.model.transformer import CaptioningTransformer, caption_loss

NUM_WORDS = 30  # ordinary words after the four special tokens
D = 24  # feature width used by the small models here


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tensors here are tiny: extra threads only add synchronisation, ruinous on a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def vocabulary(num_words=NUM_WORDS):
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(num_words)]
    return {word: index for index, word in enumerate(words)}


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    options = dict(input_dim=D, wordvec_dim=32, num_heads=4, num_layers=2, max_length=20,
                   dim_feedforward=64, dropout=0.0)
    options.update(overrides)
    return CaptioningTransformer(vocabulary(), **options)


def varied_model(seed, **overrides):
    """An untrained small model in eval mode whose greedy words vary: weights larger than the default
    init (std 0.3 instead of 0.02) make the scores depend strongly on the image and the prefix."""
    model = small_model(seed, **overrides).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.3)
    return model


def random_captions(rng, n, length=17, min_words=3, max_words=15):
    """<START> w1 .. wk <END> <NULL>..., of shape (n, length) int64, with k drawn in [min_words, max_words]."""
    captions = np.zeros((n, length), dtype=np.int64)
    captions[:, 0] = 1
    for row in captions:
        k = rng.integers(min_words, max_words + 1)
        row[1:k + 1] = rng.integers(4, 4 + NUM_WORDS, size=k)
        row[k + 1] = 2
    return captions


def test_forward_shape_and_config_round_trip():
    model = small_model()
    rng = np.random.default_rng(0)
    captions = torch.from_numpy(random_captions(rng, 3))[:, :-1]
    scores = model(torch.randn(3, D), captions)
    assert scores.shape == (3, 16, len(vocabulary()))
    config = json.loads(json.dumps(model.config()))
    assert config == dict(input_dim=D, wordvec_dim=32, num_heads=4, num_layers=2, max_length=20,
                          dim_feedforward=64, dropout=0.0, fused=False, memory="pooled", num_cells=196,
                          feature_scale=1.0)
    twin = CaptioningTransformer(vocabulary(), **config)
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(twin(torch.ones(1, D), captions[:1]), model(torch.ones(1, D), captions[:1]))
    assert (model.null_idx, model.start_idx, model.end_idx) == (0, 1, 2)
    assert model.idx_to_word[4] == "w0" and model.word_to_idx["w0"] == 4


def test_loss_averages_over_non_null_targets_only():
    torch.manual_seed(0)
    scores = torch.randn(2, 3, 5)
    captions_out = torch.tensor([[3, 2, 0], [4, 0, 0]])  # 3 real targets, 3 <NULL>
    log_probs = torch.log_softmax(scores, dim=-1)
    by_hand = -(log_probs[0, 0, 3] + log_probs[0, 1, 2] + log_probs[1, 0, 4]) / 3
    torch.testing.assert_close(caption_loss(scores, captions_out, null_idx=0), by_hand)
    scrambled = scores.clone()
    scrambled[captions_out == 0] = torch.randn(3, 5) * 10  # scores at padding must not matter
    torch.testing.assert_close(caption_loss(scrambled, captions_out, null_idx=0), by_hand)
    assert caption_loss(scores, torch.zeros(2, 3, dtype=torch.long), null_idx=0).item() == 0.0


def test_loss_method_shifts_captions():
    model = small_model()
    captions = torch.from_numpy(random_captions(np.random.default_rng(1), 4))
    features = torch.randn(4, D)
    expected = caption_loss(model(features, captions[:, :-1]), captions[:, 1:], model.null_idx)
    torch.testing.assert_close(model.loss(features, captions), expected)


@pytest.mark.parametrize("fused", [False, True])
def test_model_is_causal(fused):
    model = small_model(fused=fused).eval()
    rng = np.random.default_rng(2)
    captions = torch.from_numpy(random_captions(rng, 3, min_words=15))[:, :-1]
    features = torch.randn(3, D)
    t = 6
    changed = captions.clone()
    changed[:, t + 1:] = torch.from_numpy(rng.integers(4, 4 + NUM_WORDS, size=(3, 15 - t)))
    scores, scores_changed = model(features, captions), model(features, changed)
    torch.testing.assert_close(scores_changed[:, :t + 1], scores[:, :t + 1], rtol=0, atol=0)
    assert not torch.allclose(scores_changed[:, t + 1:], scores[:, t + 1:])


def decode_all(model, features, steps, use_cache, reorder_at=None, index=None):
    """Greedy steps over the step interface; optionally reorder rows once. -> (tokens, log_probs) arrays."""
    state = model.init_decode(features, use_cache=use_cache)
    tokens = np.full(features.shape[0], model.start_idx)
    all_tokens, all_log_probs = [], []
    for t in range(steps):
        if t == reorder_at:
            state, tokens = model.reorder_state(state, index), tokens[index]
        log_probs, state = model.decode_step(tokens, state)
        tokens = log_probs.argmax(axis=1)
        all_tokens.append(tokens)
        all_log_probs.append(log_probs)
    return np.stack(all_tokens, axis=1), np.stack(all_log_probs, axis=1)


@pytest.mark.parametrize("fused", [False, True])
def test_kv_cache_decoding_equals_full_prefix_recomputation(fused):
    model = varied_model(seed=3, fused=fused)
    features = np.random.default_rng(3).standard_normal((6, D)).astype(np.float32)
    index = np.array([5, 0, 0, 3, 1, 2])  # drops row 4, duplicates row 0, as beam search does
    cached, cached_lp = decode_all(model, features, 12, True, reorder_at=5, index=index)
    full, full_lp = decode_all(model, features, 12, False, reorder_at=5, index=index)
    assert len(np.unique(cached)) > 5, "degenerate decoding would make this test weak"
    np.testing.assert_array_equal(cached, full)
    np.testing.assert_allclose(cached_lp, full_lp, rtol=0, atol=1e-5)
    assert cached_lp.dtype == np.float32


def test_sample_is_greedy_decoding_cut_at_end():
    model = varied_model(seed=4)
    with torch.no_grad():
        model.output.bias[model.end_idx] = 1.0  # makes some captions end early
    features = np.random.default_rng(4).standard_normal((8, D)).astype(np.float32)
    greedy, _ = decode_all(model, features, 12, use_cache=False)
    ended = np.cumsum(greedy == model.end_idx, axis=1) - (greedy == model.end_idx) > 0
    assert ended.any() and not ended.all(), "need captions both ending and running to the limit"
    np.testing.assert_array_equal(model.sample(features, max_length=12), np.where(ended, 0, greedy))


def test_decoding_stops_at_max_length_and_checks_tokens():
    model = small_model(max_length=4).eval()
    state = model.init_decode(np.zeros((2, D), dtype=np.float32))
    with pytest.raises(ValueError, match="one per decoded row"):
        model.decode_step(np.array([1, 1, 1]), state)
    for _ in range(4):
        _, state = model.decode_step(np.array([1, 1]), state)
    with pytest.raises(ValueError, match="max_length"):
        model.decode_step(np.array([1, 1]), state)


def test_sample_restores_training_mode():
    model = small_model().train()
    captions = model.sample(np.zeros((2, D), dtype=np.float32), max_length=5)
    assert model.training
    assert captions.shape == (2, 5) and captions.dtype == np.int64


def test_overfits_fifty_captions_and_samples_them_back():
    rng = np.random.default_rng(0)
    captions = torch.from_numpy(random_captions(rng, 50))
    features = torch.from_numpy(rng.standard_normal((50, D)).astype(np.float32))
    model = small_model(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(300):
        optimizer.zero_grad()
        loss = model.loss(features, captions)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.1
    sampled = model.sample(features.numpy(), max_length=16)
    np.testing.assert_array_equal(sampled, captions[:, 1:].numpy())


def test_forward_under_autocast_is_finite():
    captions = torch.from_numpy(random_captions(np.random.default_rng(4), 3))
    for fused in (False, True):
        model = small_model(fused=fused)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.loss(torch.randn(3, D), captions)
        loss.backward()
        assert torch.isfinite(loss) and loss.dtype == torch.float32
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_input_raises_value_error():
    model = small_model()
    captions = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="input_dim"):
        model(torch.randn(2, D + 1), captions)
    with pytest.raises(ValueError, match="input_dim"):
        model.init_decode(np.zeros((2, D - 1), dtype=np.float32))
    with pytest.raises(ValueError, match="max_length=20"):
        model(torch.randn(2, D), torch.ones(2, 21, dtype=torch.long))
    with pytest.raises(ValueError, match="max_length=20"):
        model.sample(np.zeros((2, D), dtype=np.float32), max_length=21)
    without_end = {word: index for word, index in vocabulary().items() if word != "<END>"}
    with pytest.raises(ValueError, match="<END>"):
        CaptioningTransformer(without_end, input_dim=D)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model = small_model().eval()
    features = np.random.default_rng(5).standard_normal((4, D)).astype(np.float32)
    on_cpu = model.sample(features, max_length=10)
    model.to("cuda")
    np.testing.assert_array_equal(model.sample(features, max_length=10), on_cpu)
    captions = torch.ones(4, 6, dtype=torch.long, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        assert torch.isfinite(model.loss(torch.from_numpy(features).cuda(), captions))


def test_configure_optimizers_decays_only_linear_matrices():
    model = small_model()
    optimizer = model.configure_optimizers(weight_decay=0.01, lr=1e-3, betas=(0.9, 0.98))
    decay, no_decay = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters()
                                                        if p.dim() == 2 and n != "embedding.weight"}
    assert "embedding.weight" in {names[id(p)] for p in no_decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
