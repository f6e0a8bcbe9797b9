"""Beam search, sampling and the decode entry point, on toy models that implement the step interface."""
import numpy as np
import pytest

from core.decoding import (
    DecodeConfig,
    beam_hypotheses,
    beam_search,
    decode,
    greedy_decode,
    sample_decode,
    top_k_indices,
)
from core.runtime.errors import UserError

NULL, START, END = 0, 1, 2


def log_softmax(x):
    """Row-wise log-softmax of an array of shape (N, V)."""
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ToyModel:
    """Next-word log-probs from the previous word, a per-image bias and a running sum of past words.

    features of shape (N, V) are the per-image biases of the next-word logits. The running sum makes
    each row's distribution depend on its whole history, so a beam search that follows beams with
    the wrong ``reorder_state`` rows gets different scores. Counts decode_step calls.
    """
    null_idx, start_idx, end_idx = NULL, START, END

    def __init__(self, transitions, history, end_logit=None, quantum=None):
        self.transitions = transitions  # (V, V): logits of the next word given the previous one
        self.history = history  # (V, V): logits added given (sum of past words) mod V
        self.end_logit = end_logit  # a fixed <END> logit (-inf: never ends), or None
        self.quantum = quantum  # round log-probs to multiples of this, to create exact ties
        self.steps = 0

    def init_decode(self, features):
        return features.astype(np.float64), np.zeros(features.shape[0], dtype=np.int64)

    def decode_step(self, tokens, state):
        bias, total = state
        total = total + tokens
        V = bias.shape[1]
        logits = self.transitions[tokens] + bias + self.history[total % V]  # (N, V)
        if self.end_logit is not None:
            logits[:, END] = self.end_logit
        log_probs = log_softmax(logits)
        if self.quantum is not None:
            log_probs = np.round(log_probs / self.quantum) * self.quantum
        self.steps += 1
        return log_probs.astype(np.float32), (bias, total)

    def reorder_state(self, state, index):
        bias, total = state
        return bias[index], total[index]


def make_model(rng, V, scale=2.0, **kwargs):
    return ToyModel(scale * rng.standard_normal((V, V)), scale * rng.standard_normal((V, V)), **kwargs)


def exhaustive_best(model, features, max_length, alpha):
    """The best caption of every image by enumerating every word sequence; (captions, scores)."""
    captions, scores = [], []
    for n in range(features.shape[0]):
        complete = []  # (score, words)
        pending = [((), 0.0, model.init_decode(features[n:n + 1]), START)]
        while pending:
            words, total, state, previous = pending.pop()
            log_probs, state = model.decode_step(np.array([previous]), state)
            for word, log_prob in enumerate(log_probs[0]):
                sequence, score = words + (word,), total + float(log_prob)
                if word == END or len(sequence) == max_length:
                    penalty = ((5.0 + len(sequence)) / 6.0) ** alpha
                    complete.append((score / penalty, sequence))
                else:
                    pending.append((sequence, score, state, word))
        score, words = max(complete)
        captions.append(list(words) + [NULL] * (max_length - len(words)))
        scores.append(score)
    return np.array(captions, dtype=np.int64), np.array(scores)


def reference_beam_search(model, features, beam_size, max_length, alpha):
    """Beam search one image and one hypothesis at a time, the plain way; captions (N, max_length)."""
    captions = []
    for n in range(features.shape[0]):
        # (score, words, finished, state): finished hypotheses wait in the beam, extended by <NULL> at 0
        beam = [(0.0, (), False, model.init_decode(features[n:n + 1]))]
        for _ in range(max_length):
            candidates = []
            for score, words, finished, state in beam:
                if finished:
                    candidates.append((score, words + (NULL,), True, state))
                    continue
                log_probs, next_state = model.decode_step(np.array([words[-1] if words else START]), state)
                for word, log_prob in enumerate(log_probs[0]):
                    candidates.append((score + float(log_prob), words + (word,), word == END, next_state))

            def rank(candidate):
                length = candidate[1].index(END) + 1 if candidate[2] else len(candidate[1])
                return candidate[0] / ((5.0 + length) / 6.0) ** alpha

            beam = sorted(candidates, key=rank, reverse=True)[:beam_size]
        captions.append(beam[0][1])
    return np.array(captions, dtype=np.int64)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 2.5])
def test_beam_search_equals_exhaustive_search(alpha):
    rng = np.random.default_rng(0)
    V, L = 5, 4
    model = make_model(rng, V)
    features = 2.0 * rng.standard_normal((6, V))
    expected, expected_scores = exhaustive_best(model, features, L, alpha)
    captions, scores = beam_search(model, features, beam_size=V ** (L - 1), max_length=L,
                                   length_penalty=alpha, return_scores=True)
    np.testing.assert_array_equal(captions, expected)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_beam_hypotheses_score_their_own_captions_best_first(alpha):
    """Every slot holds a caption with its own ranking score, best first; slot 0 is beam_search's caption."""
    rng = np.random.default_rng(4)
    V, L, B = 5, 3, 5 ** 2
    model = make_model(rng, V)
    features = 2.0 * rng.standard_normal((4, V))
    beams = beam_hypotheses(model, features, B, L, alpha)
    assert beams.captions.shape == (4, B, L) and (np.diff(beams.scores, axis=1) <= 1e-12).all()
    np.testing.assert_array_equal(beams.captions[:, 0], beam_search(model, features, B, L, alpha))
    for n in range(4):
        for caption, score in zip(beams.captions[n, :3], beams.scores[n, :3]):
            words = caption[:np.flatnonzero((caption == END) | (np.arange(L) == L - 1))[0] + 1]
            state, total = model.init_decode(features[n:n + 1]), 0.0
            for previous, word in zip([START, *words[:-1]], words):
                log_probs, state = model.decode_step(np.array([previous]), state)
                total += float(log_probs[0, word])
            assert score == pytest.approx(total / ((5.0 + len(words)) / 6.0) ** alpha, rel=1e-9)


def test_length_penalty_changes_the_answer():
    """The parametrised cases above must not all pick the same captions, or alpha is untested."""
    rng = np.random.default_rng(0)
    model = make_model(rng, 5)
    features = 2.0 * rng.standard_normal((6, 5))
    plain = beam_search(model, features, beam_size=125, max_length=4)
    lengths_plain = (plain != NULL).sum(axis=1)
    longer = beam_search(model, features, beam_size=125, max_length=4, length_penalty=2.5)
    assert (longer != NULL).sum(axis=1).sum() > lengths_plain.sum()


@pytest.mark.parametrize("beam_size, alpha", [(2, 0.0), (3, 1.0), (4, 2.0)])
def test_pruned_beam_search_matches_a_per_image_reference(beam_size, alpha):
    """The model is sure of its word after <NULL>: a finished hypothesis extended by anything but
    <NULL> would crowd live ones out of the beam, which this catches on some of these seeds."""
    V, L = 6, 7
    ended = 0
    for seed in range(10, 18):
        rng = np.random.default_rng(seed)
        model = make_model(rng, V)
        model.transitions[NULL] = -20.0
        model.transitions[NULL, 4] = 20.0
        features = 2.0 * rng.standard_normal((10, V))
        expected = reference_beam_search(model, features, beam_size, L, alpha)
        ended += (expected == END).any(axis=1).sum()
        np.testing.assert_array_equal(beam_search(model, features, beam_size, L, alpha), expected)
    assert ended >= 10  # finished hypotheses take part


def test_beam_search_never_ending_model_takes_best_unfinished():
    rng = np.random.default_rng(1)
    V, L = 4, 3
    model = make_model(rng, V, end_logit=-np.inf)
    features = rng.standard_normal((3, V))
    expected, _ = exhaustive_best(model, features, L, 0.0)
    for beam_size in (2, V ** (L - 1)):
        captions = beam_search(model, features, beam_size=beam_size, max_length=L)
        assert captions.shape == (3, L) and not (captions == END).any()
    np.testing.assert_array_equal(captions, expected)


@pytest.mark.parametrize("quantum", [None, 0.5])
def test_beam_size_one_equals_greedy(quantum):
    """Also with log-probs rounded to multiples of 0.5: exact ties must break like np.argmax."""
    rng = np.random.default_rng(2)
    V, L = 12, 10
    model = make_model(rng, V, scale=1.0, quantum=quantum)
    features = rng.standard_normal((40, V))
    greedy = greedy_decode(model, features, L)
    assert (greedy == END).any() and not (greedy == END).all(axis=1).any()
    for alpha in (0.0, 1.0):
        np.testing.assert_array_equal(beam_search(model, features, 1, L, length_penalty=alpha), greedy)


def test_beam_captions_stop_at_end_and_are_null_padded():
    rng = np.random.default_rng(3)
    V, L = 8, 12
    model = make_model(rng, V)
    features = rng.standard_normal((30, V))
    captions = beam_search(model, features, beam_size=4, max_length=L)
    ended = 0
    for row in captions:
        ends = np.flatnonzero(row == END)
        if ends.size:
            ended += 1
            assert (row[ends[0] + 1:] == NULL).all()
    assert ended > 0


def test_beam_search_stops_once_every_beam_has_ended():
    V = 6
    transitions = np.zeros((V, V))
    transitions[:, END] = 50.0  # every row ends at its first word
    model = ToyModel(transitions, np.zeros((V, V)))
    captions = beam_search(model, np.zeros((5, V)), beam_size=3, max_length=20)
    assert model.steps == 2  # step 1 ends the best beams; step 2 ends the runners-up
    np.testing.assert_array_equal(captions[:, 0], END)
    assert (captions[:, 1:] == NULL).all()


def test_beam_scores_never_exceed_the_exhaustive_optimum():
    """Beam scores can only be as good as the true optimum, and the full beam reaches it."""
    rng = np.random.default_rng(4)
    model = make_model(rng, 5)
    features = rng.standard_normal((8, 5))
    _, optimum = exhaustive_best(model, features, 4, 0.0)
    for beam_size in (1, 2, 5, 25):
        _, scores = beam_search(model, features, beam_size, 4, return_scores=True)
        assert (scores <= optimum + 1e-9).all()
    _, scores = beam_search(model, features, 125, 4, return_scores=True)
    np.testing.assert_allclose(scores, optimum, rtol=1e-12)


def test_sampling_is_reproducible_and_seed_dependent():
    rng = np.random.default_rng(5)
    model = make_model(rng, 10, scale=0.5)
    features = rng.standard_normal((50, 10))
    first = sample_decode(model, features, 8, rng=np.random.default_rng(7))
    again = sample_decode(model, features, 8, rng=np.random.default_rng(7))
    other = sample_decode(model, features, 8, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()


def test_sampling_approaches_greedy_as_temperature_falls():
    rng = np.random.default_rng(6)
    model = make_model(rng, 10)
    features = rng.standard_normal((50, 10))
    greedy = greedy_decode(model, features, 8)
    cold = sample_decode(model, features, 8, temperature=1e-4, rng=np.random.default_rng(0))
    warm = sample_decode(model, features, 8, temperature=1.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(cold, greedy)
    assert (warm != greedy).any()


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_first_word_frequencies_follow_tempered_softmax(temperature):
    rng = np.random.default_rng(9)
    V, N = 6, 20000
    model = ToyModel(rng.standard_normal((V, V)), np.zeros((V, V)))
    features = np.zeros((N, V))
    words = sample_decode(model, features, 1, temperature, rng=np.random.default_rng(1))[:, 0]
    expected = np.exp(log_softmax(model.transitions[START][None] / temperature))[0]
    observed = np.bincount(words, minlength=V) / N
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(0.25 / N))


def test_decode_dispatches_on_the_config():
    rng = np.random.default_rng(10)
    model = make_model(rng, 7)
    features = rng.standard_normal((12, 7))
    np.testing.assert_array_equal(decode(model, features, 9), greedy_decode(model, features, 9))
    np.testing.assert_array_equal(decode(model, features, 9, beam_size=3, length_penalty=0.6),
                                  beam_search(model, features, 3, 9, 0.6))
    config = DecodeConfig(temperature=0.8)
    np.testing.assert_array_equal(decode(model, features, 9, config=config, rng=np.random.default_rng(3)),
                                  sample_decode(model, features, 9, 0.8, rng=np.random.default_rng(3)))


def test_decode_rejects_bad_options():
    model = make_model(np.random.default_rng(0), 5)
    features = np.zeros((2, 5))
    with pytest.raises(TypeError):
        decode(model, features, 5, beams=3)
    with pytest.raises(ValueError, match="rng"):
        decode(model, features, 5, temperature=1.0)
    for options in ({"beam_size": 0}, {"beam_size": 2.5}, {"length_penalty": -1.0},
                    {"temperature": 0.0}, {"temperature": 1.0, "beam_size": 2}):
        with pytest.raises(UserError):
            DecodeConfig(**options)


def test_top_k_indices_breaks_ties_towards_the_lower_index():
    """Beam search's selection: best first, equal values in index order, as a stable sort gives."""
    rng = np.random.default_rng(12)
    values = rng.integers(0, 4, size=(200, 15)).astype(np.float64)  # many exact ties
    values[rng.random(values.shape) < 0.2] = -np.inf
    for k in (1, 2, 5, 15):
        expected = np.argsort(-values, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k_indices(values, k), expected)
