"""core.model.rnn_model.CaptioningRNN: gradients, overfitting a small set, greedy sampling, input validation."""
import numpy as np
import pytest

from core import optim
from core.model import rnn_model
from core.model.rnn_model import CaptioningRNN
from tests.gradcheck import numeric_gradient, rel_error

SPECIALS = ["<NULL>", "<START>", "<END>", "<UNK>"]


def make_vocab(num_words):
    words = SPECIALS + [f"w{k}" for k in range(num_words)]
    return {word: idx for idx, word in enumerate(words)}


def make_captions(rng, n, length, vocab_size, min_words=3):
    """Rows <START> w1 .. wk <END> <NULL>...; words drawn from the non-special indices, k varies per row."""
    captions = np.zeros((n, length), dtype=np.int32)
    for row in range(n):
        k = rng.integers(min_words, length - 1)
        captions[row, 0] = 1
        captions[row, 1:k + 1] = rng.integers(len(SPECIALS), vocab_size, size=k)
        captions[row, k + 1] = 2
    return captions


def words_until_end(row):
    """The generated words of one sampled row up to and including its first <END>."""
    ends = np.flatnonzero(row == 2)
    return row[:ends[0] + 1].tolist() if ends.size else row.tolist()


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_loss_gradients_match_numeric(cell_type):
    rng = np.random.default_rng(1)
    model = CaptioningRNN(make_vocab(4), input_dim=5, wordvec_dim=4, hidden_dim=6, cell_type=cell_type,
                          dtype=np.float64, seed=3)
    features = rng.standard_normal((3, 5))
    captions = make_captions(rng, 3, 6, 8, min_words=1)
    # Unit-scale word vectors (the init's are 1/100): Wx's gradient would otherwise sit near rounding noise.
    model.params["W_embed"] = rng.standard_normal(model.params["W_embed"].shape)
    loss, grads = model.loss(features, captions)
    assert set(grads) == set(model.params)
    for name, param in model.params.items():
        numeric = numeric_gradient(lambda: model.loss(features, captions)[0], param)
        assert grads[name].shape == param.shape
        assert rel_error(grads[name], numeric) < 1e-6, name


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_loss_skips_only_steps_that_cannot_matter(cell_type, monkeypatch):
    """The cell runs each caption up to its last target; the loss and gradients equal those of running every
    step, also for a <NULL> inside a caption (the steps after it still count) and a caption with no target."""
    rng = np.random.default_rng(2)
    model = CaptioningRNN(make_vocab(4), input_dim=5, wordvec_dim=4, hidden_dim=6, cell_type=cell_type,
                          dtype=np.float64, seed=3)
    features = rng.standard_normal((4, 5))
    captions = np.array([[1, 4, 5, 2, 0, 0, 0], [1, 6, 0, 7, 2, 0, 0], [1, 0, 0, 0, 0, 0, 0], [1, 4, 4, 5, 6, 7, 2]])
    loss, grads = model.loss(features, captions)
    monkeypatch.setattr(rnn_model, "run_lengths", lambda keep: None)
    loss_all_steps, grads_all_steps = model.loss(features, captions)
    assert abs(loss - loss_all_steps) < 1e-12
    for name in grads:
        assert np.max(np.abs(grads[name] - grads_all_steps[name])) < 1e-12, name


@pytest.fixture(scope="module")
def overfit():
    """An LSTM trained with adam until it reproduces 50 random captions; returns (model, features, captions, losses)."""
    rng = np.random.default_rng(0)
    word_to_idx = make_vocab(20)
    features = rng.standard_normal((50, 16)).astype(np.float32)
    captions = make_captions(rng, 50, 17, len(word_to_idx))
    model = CaptioningRNN(word_to_idx, input_dim=16, wordvec_dim=32, hidden_dim=64, cell_type="lstm", seed=0)
    configs = {name: {"learning_rate": 3e-2} for name in model.params}
    losses = []
    for _ in range(300):
        loss, grads = model.loss(features, captions)
        losses.append(loss)
        if loss < 0.05:
            break
        for name in model.params:
            model.params[name], configs[name] = optim.adam(model.params[name], grads[name], configs[name])
    return model, features, captions, losses


def test_overfit_small_set_and_sample_reproduces_it(overfit):
    model, features, captions, losses = overfit
    assert losses[-1] < 0.1 < losses[0]
    assert all(p.dtype == np.float32 for p in model.params.values())
    sampled = model.sample(features, max_length=16)
    for row, caption in zip(sampled, captions):
        assert words_until_end(row) == words_until_end(caption[1:])


def test_sample_pads_after_end(overfit):
    model, features, captions, _ = overfit
    sampled = model.sample(features, max_length=20)
    assert sampled.shape == (50, 20)
    lengths = (captions[:, 1:] != 0).sum(axis=1)  # words plus <END>
    assert len(set(lengths)) > 3  # rows end at different steps: padding is per row
    for row, length in zip(sampled, lengths):
        assert row[length - 1] == model.end_idx
        assert np.all(row[length:] == model.null_idx)
    short = model.sample(features, max_length=3)  # too short for any <END>: no padding at all
    assert np.all(short == sampled[:, :3]) and np.all(short != model.null_idx)


def test_decode_step_returns_log_probs():
    model = CaptioningRNN(make_vocab(5), input_dim=4, wordvec_dim=3, hidden_dim=5, cell_type="lstm")
    state = model.init_decode(np.ones((2, 4), dtype=np.float32))
    log_probs, (h, c) = model.decode_step(np.array([1, 1]), state)
    assert log_probs.shape == (2, 9) and h.shape == c.shape == (2, 5)
    assert np.allclose(np.exp(log_probs).sum(axis=1), 1, atol=1e-5)
    h2, c2 = model.reorder_state((h, c), np.array([1, 1, 0]))
    assert h2.shape == (3, 5) and np.array_equal(h2[2], h[0]) and np.array_equal(c2[0], c[1])


def test_config_is_json_able():
    model = CaptioningRNN(make_vocab(2), input_dim=8, wordvec_dim=3, hidden_dim=5, cell_type="lstm")
    assert model.config() == {"input_dim": 8, "wordvec_dim": 3, "hidden_dim": 5, "cell_type": "lstm",
                              "dtype": "float32", "feature_scale": 1.0}
    again = CaptioningRNN(model.word_to_idx, **model.config())
    assert all(np.array_equal(again.params[k], v) for k, v in model.params.items())
    assert model.params["Wx"].shape == (3, 20) and model.idx_to_word[2] == "<END>"


def test_feature_scale_divides_the_features():
    rng = np.random.default_rng(0)
    vocab = make_vocab(4)
    scaled = CaptioningRNN(vocab, input_dim=6, wordvec_dim=3, hidden_dim=4, cell_type="lstm", dtype=np.float64,
                           feature_scale=4.0)
    plain = CaptioningRNN(vocab, input_dim=6, wordvec_dim=3, hidden_dim=4, cell_type="lstm", dtype=np.float64)
    features, captions = rng.standard_normal((3, 6)), np.array([[1, 4, 5, 2, 0]] * 3)
    loss, grads = scaled.loss(features, captions)
    plain_loss, plain_grads = plain.loss(features / 4.0, captions)
    assert loss == plain_loss and all(np.array_equal(grads[k], plain_grads[k]) for k in grads)
    assert np.array_equal(scaled.init_decode(features)[0], plain.init_decode(features / 4.0)[0])
    with pytest.raises(ValueError, match="feature_scale"):
        CaptioningRNN(vocab, feature_scale=0.0)


def test_lstm_forget_gates_start_open():
    model = CaptioningRNN(make_vocab(3), input_dim=6, wordvec_dim=3, hidden_dim=4, cell_type="lstm")
    assert np.all(model.params["b"][4:8] == 1) and np.all(model.params["b"][:4] == 0)
    assert np.all(model.params["b"][8:] == 0)


def test_bad_inputs_raise_value_errors():
    vocab = make_vocab(3)
    del vocab["<END>"]
    with pytest.raises(ValueError, match="<END>"):
        CaptioningRNN(vocab)
    with pytest.raises(ValueError, match="cell_type"):
        CaptioningRNN(make_vocab(3), cell_type="gru")
    model = CaptioningRNN(make_vocab(3), input_dim=6, wordvec_dim=3, hidden_dim=4)
    captions = np.array([[1, 4, 2, 0]] * 2)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 6\)"):
        model.loss(np.zeros((2, 5)), captions)
    with pytest.raises(ValueError, match="integer"):
        model.loss(np.zeros((2, 6)), captions.astype(np.float32))
    with pytest.raises(ValueError, match="captions must have shape"):
        model.loss(np.zeros((3, 6)), captions)
    with pytest.raises(ValueError, match="outside"):
        model.loss(np.zeros((2, 6)), captions + 10)
