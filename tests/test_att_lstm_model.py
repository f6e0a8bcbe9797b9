"""core.model.att_lstm.CaptioningAttLSTM: gradients, torch autograd, positions, decoding through core.decoding,
overfitting a small set, the config and input validation."""
import numpy as np
import pytest
import torch

from benchmarks.bench_att_lstm import torch_loss
from core import optim
from core.decoding import beam_search, greedy_decode, sample_decode
from core.model import att_lstm
from core.model.att_lstm import AttLSTMConfig, CaptioningAttLSTM, cell_positions
from tests.gradcheck import numeric_gradient, rel_error
from tests.test_rnn_model import make_captions, make_vocab, words_until_end

SMALL = {"input_dim": 3, "num_cells": 4, "wordvec_dim": 3, "hidden_dim": 4, "att_dim": 5}
# <NULL> inside a caption (the steps after it still count), a caption with no target, and varied lengths.
PACKED = np.array([[1, 4, 5, 2, 0, 0, 0], [1, 6, 0, 7, 2, 0, 0], [1, 0, 0, 0, 0, 0, 0], [1, 4, 4, 5, 6, 7, 2]])
FULL = np.array([[1, 4, 5, 6, 7, 4, 2], [1, 6, 5, 7, 4, 4, 2], [1, 7, 7, 6, 5, 4, 2], [1, 4, 4, 5, 6, 7, 2]])


def small_model(seed=3, **options):
    """A float64 model with unit-scale word vectors (the init's are 1/100: Wx's gradient would sit near noise)."""
    model = CaptioningAttLSTM(make_vocab(4), **{**SMALL, **options}, dtype=np.float64, seed=seed)
    model.params["W_embed"] = np.random.default_rng(seed).standard_normal(model.params["W_embed"].shape)
    return model


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.7])
@pytest.mark.parametrize("captions", [PACKED, FULL], ids=["packed", "full"])
def test_loss_gradients_match_numeric(gate, lam, captions):
    model = small_model(gate=gate, att_penalty=lam)
    features = np.random.default_rng(1).standard_normal((4, 4, 3))
    _, grads = model.loss(features, captions)
    assert set(grads) == set(model.params) and ("W_beta" in grads) == gate
    for name, param in model.params.items():
        numeric = numeric_gradient(lambda: model.loss(features, captions)[0], param)
        assert grads[name].shape == param.shape
        assert rel_error(grads[name], numeric) < 1e-6, name


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_loss_matches_torch(gate, lam):
    model = small_model(gate=gate, att_penalty=lam, feature_scale=2.0)
    features = np.random.default_rng(1).standard_normal((4, 4, 3))
    loss, grads = model.loss(features, PACKED)
    params = {name: torch.tensor(value, requires_grad=True) for name, value in model.params.items()}
    reference = torch_loss(params, torch.tensor(features), torch.tensor(PACKED), model.Config(**model.config()),
                           model.null_idx)
    reference.backward()
    assert abs(loss - reference.item()) < 1e-10
    for name, grad in grads.items():
        assert np.max(np.abs(grad - params[name].grad.numpy())) < 1e-10, name


def test_loss_adds_the_penalty_of_the_steps_run(monkeypatch):
    """Without the penalty, skipping the steps past a caption's last target changes nothing; with it, those
    steps' attention would count, so running every step must give another loss."""
    features = np.random.default_rng(2).standard_normal((4, 4, 3))
    plain, penalised = small_model(att_penalty=0.0), small_model(att_penalty=0.7)
    losses = {"plain": plain.loss(features, PACKED), "penalised": penalised.loss(features, PACKED)}
    monkeypatch.setattr(att_lstm, "run_lengths", lambda keep: None)
    loss_all_steps, grads_all_steps = plain.loss(features, PACKED)
    loss, grads = losses["plain"]
    assert abs(loss - loss_all_steps) < 1e-12
    assert all(np.max(np.abs(grads[name] - grads_all_steps[name])) < 1e-12 for name in grads)
    assert losses["penalised"][0] > loss + 0.1  # the same weights: only the penalty differs
    assert abs(penalised.loss(features, PACKED)[0] - losses["penalised"][0]) > 1e-3


def test_positions_are_row_major_centres():
    positions = cell_positions(9)
    third = 2 / 3
    assert np.allclose(positions[0], [-third, -third]) and np.allclose(positions[2], [third, -third])
    assert np.allclose(positions[3], [-third, 0]) and np.allclose(positions[8], [third, third])
    assert np.array_equal(cell_positions(1), [[0.0, 0.0]])


def test_the_model_sees_where_each_cell_is():
    """Cells are a set to soft attention, so moving them changes nothing but their appended positions: the loss
    changes, and equals the loss of unmoved cells when the positions are moved with them."""
    model = small_model()
    features = np.random.default_rng(4).standard_normal((4, 4, 3))
    perm = np.array([3, 0, 1, 2])
    loss, _ = model.loss(features, FULL)
    moved, _ = model.loss(features[:, perm], FULL)
    assert abs(moved - loss) > 1e-6
    model.positions = model.positions[perm]
    assert abs(model.loss(features[:, perm], FULL)[0] - loss) < 1e-12


class AttentionRecorder:
    """A decodable model that records model.attention(state) after every decode_step."""

    def __init__(self, model):
        self.model, self.maps = model, []
        self.null_idx, self.start_idx, self.end_idx = model.null_idx, model.start_idx, model.end_idx

    def init_decode(self, features):
        return self.model.init_decode(features)

    def decode_step(self, tokens, state):
        log_probs, state = self.model.decode_step(tokens, state)
        self.maps.append(self.model.attention(state))
        return log_probs, state

    def reorder_state(self, state, index):
        return self.model.reorder_state(state, index)


@pytest.fixture(scope="module")
def overfit():
    """A gated model trained with adam until it reproduces 50 random captions (no penalty: its floor would keep
    the loss above 0.1); returns (model, features, captions, losses)."""
    rng = np.random.default_rng(0)
    word_to_idx = make_vocab(20)
    features = rng.standard_normal((50, 4, 8)).astype(np.float32)
    captions = make_captions(rng, 50, 17, len(word_to_idx))
    model = CaptioningAttLSTM(word_to_idx, input_dim=8, num_cells=4, wordvec_dim=32, hidden_dim=64, att_dim=16,
                              att_penalty=0.0, seed=0)
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
    for row, caption in zip(model.sample(features, max_length=16), captions):
        assert words_until_end(row) == words_until_end(caption[1:])


def test_beam_of_one_is_greedy_and_sampling_works(overfit):
    model, features, _, _ = overfit
    greedy = greedy_decode(model, features, 16)
    assert np.array_equal(beam_search(model, features, beam_size=1, max_length=16), greedy)
    beam = beam_search(model, features[:8], beam_size=3, max_length=16)
    assert beam.shape == (8, 16) and np.all((beam >= 0) & (beam < len(model.idx_to_word)))
    sampled = sample_decode(model, features, 16, temperature=1.0, rng=np.random.default_rng(0))
    again = sample_decode(model, features, 16, temperature=1.0, rng=np.random.default_rng(0))
    assert np.array_equal(sampled, again) and sampled.shape == (50, 16)
    cold = sample_decode(model, features, 16, temperature=1e-3, rng=np.random.default_rng(1))
    assert np.array_equal(cold, greedy)  # the trained model is sure of every word: near-zero temperature is greedy


def test_attention_per_step_sums_to_one(overfit):
    model, features, _, _ = overfit
    recorder = AttentionRecorder(model)
    captions = greedy_decode(recorder, features[:5], 16)
    assert np.array_equal(captions, model.sample(features[:5], 16))
    running = 5
    for alpha in recorder.maps:  # rows leave the state as their captions end
        assert alpha.shape[1] == 4 and alpha.shape[0] <= running
        assert np.max(np.abs(alpha.sum(axis=1) - 1)) < 1e-5 and np.all(alpha >= 0)
        running = alpha.shape[0]
    assert len(recorder.maps) == max(len(words_until_end(row)) for row in captions)
    state = model.init_decode(features[:2])
    assert np.all(model.attention(state) == 0)
    _, state = model.decode_step(np.array([1, 1]), state)
    reordered = model.reorder_state(state, np.array([1, 1, 0]))
    assert np.array_equal(model.attention(reordered), model.attention(state)[[1, 1, 0]])
    assert reordered.grid.shape == (3, 4, 8 + 2)


def test_decode_step_matches_the_training_forward():
    """Teacher-forced decoding gives the loss the training path computes (no penalty)."""
    model = small_model(att_penalty=0.0)
    features = np.random.default_rng(5).standard_normal((4, 4, 3))
    state, total = model.init_decode(features), 0.0
    for t in range(FULL.shape[1] - 1):
        log_probs, state = model.decode_step(FULL[:, t], state)
        total -= log_probs[np.arange(4), FULL[:, t + 1]].sum()
    assert abs(total / 4 - model.loss(features, FULL)[0]) < 1e-12


@pytest.mark.parametrize("gate", [True, False])
def test_config_is_json_able_and_counts_its_parameters(gate):
    model = CaptioningAttLSTM(make_vocab(2), **SMALL, gate=gate)
    assert model.config() == {**SMALL, "gate": gate, "att_penalty": 0.0, "dtype": "float32", "feature_scale": 1.0}
    again = CaptioningAttLSTM(model.word_to_idx, **model.config())
    assert all(np.array_equal(again.params[k], v) for k, v in model.params.items())
    assert AttLSTMConfig(**SMALL, gate=gate).num_parameters(6) == sum(p.size for p in model.params.values())
    assert model.params["Wx"].shape == (3 + 3 + 2, 16) and model.idx_to_word[2] == "<END>"
    assert np.all(model.params["b"][4:8] == 1) and np.all(model.params["b"][:4] == 0)


class SlicedGrid:
    """An h5py-like dataset: only slices of the first rows may be read."""

    def __init__(self, array):
        self.array, self.shape, self.reads = array, array.shape, []

    def __getitem__(self, index):
        assert isinstance(index, slice) and index.start is None
        self.reads.append(index.stop)
        return self.array[index]


def test_for_data_measures_cells_channels_and_scale_from_the_first_rows():
    rng = np.random.default_rng(0)
    grid = 3.0 * rng.standard_normal((100, 100, 5)).astype(np.float32)
    grid[60:64] *= 1000  # cells past the first 4096 (rnn_model.feature_scale's default rows) still count
    grid[64:] = 1e6  # past the sampled images: never read
    source = SlicedGrid(grid)
    config = AttLSTMConfig().for_data(source)
    assert (config.input_dim, config.num_cells) == (5, 100) and source.reads == [64]
    expected = np.linalg.norm(grid[:64].astype(np.float64), axis=2).mean() / np.sqrt(5)
    assert config.feature_scale == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="square"):
        AttLSTMConfig().for_data(np.ones((4, 8, 5)))
    with pytest.raises(ValueError, match=r"\(M, R, C\)"):
        AttLSTMConfig().for_data(np.ones((4, 8)))


@pytest.mark.parametrize("options, message", [
    ({"num_cells": 12}, "square"), ({"att_penalty": -1.0}, "att_penalty"), ({"att_penalty": np.nan}, "att_penalty"),
    ({"gate": 1}, "gate"), ({"att_dim": 0}, "att_dim"), ({"hidden_dim": 2.5}, "hidden_dim"),
    ({"dtype": "int32"}, "dtype"), ({"feature_scale": 0.0}, "feature_scale"),
])
def test_bad_config_raises(options, message):
    with pytest.raises(ValueError, match=message):
        AttLSTMConfig(**options)


def test_bad_inputs_raise_value_errors():
    vocab = make_vocab(3)
    del vocab["<END>"]
    with pytest.raises(ValueError, match="<END>"):
        CaptioningAttLSTM(vocab)
    model = CaptioningAttLSTM(make_vocab(3), **SMALL)
    captions = np.array([[1, 4, 2, 0]] * 2)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 4, 3\)"):
        model.loss(np.zeros((2, 4, 2)), captions)
    with pytest.raises(ValueError, match=r"features must have shape \(N, 4, 3\)"):
        model.init_decode(np.zeros((2, 12)))
    with pytest.raises(ValueError, match="floating"):
        model.loss(np.zeros((2, 4, 3), dtype=np.int64), captions)
    with pytest.raises(ValueError, match="integer"):
        model.loss(np.zeros((2, 4, 3)), captions.astype(np.float32))
    with pytest.raises(ValueError, match="captions must have shape"):
        model.loss(np.zeros((3, 4, 3)), captions)
    with pytest.raises(ValueError, match="outside"):
        model.loss(np.zeros((2, 4, 3)), captions + 10)
