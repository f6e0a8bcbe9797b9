"""CaptioningRNN: image features -> initial hidden state -> word-by-word RNN or LSTM language model, in numpy.

Dimension legend: N images, I image feature width (input_dim), W word vector width (wordvec_dim),
H hidden width, V vocabulary size, T caption length (with <START> and <END>).
"""
from dataclasses import dataclass, replace

import numpy as np

from core.layers import rnn as layers
from core.layers.affine import word_embedding_backward, word_embedding_forward, word_loss
from core.model.captioner import NumpyCaptioner, check_numpy_config, check_weights, feature_scale, run_lengths

CELLS = {
    "rnn": (layers.rnn_forward, layers.rnn_backward, 1),
    "lstm": (layers.lstm_forward, layers.lstm_backward, 4),
}


@dataclass(frozen=True)
class RNNConfig:
    """Architecture of a CaptioningRNN. The defaults train a good captioner on the shapes world in minutes on two
    CPU cores; ``input_dim`` and ``feature_scale`` are measured from the training features (``for_data``)."""
    input_dim: int = 512
    wordvec_dim: int = 256
    hidden_dim: int = 512
    cell_type: str = "rnn"  # "rnn" (tanh) or "lstm"
    dtype: str = "float32"  # numpy dtype name of the parameters and of every computation
    feature_scale: float = 1.0  # features are divided by it before W_proj

    def __post_init__(self):
        if self.cell_type not in CELLS:
            raise ValueError(f"cell_type must be one of {sorted(CELLS)}, got {self.cell_type!r}")
        check_numpy_config(self, ("input_dim", "wordvec_dim", "hidden_dim"))

    reads_grid = False  # pooled features of shape (N, I)

    def num_parameters(self, vocab_size):
        """How many numbers the model's parameters hold, for a vocabulary of ``vocab_size`` words."""
        V, I, W, H = vocab_size, self.input_dim, self.wordvec_dim, self.hidden_dim
        G = CELLS[self.cell_type][2] * H
        return V * W + (I + 1) * H + (W + H + 1) * G + (H + 1) * V

    def for_data(self, features):
        """This config fitted to training features of shape (M, I) (an array or LazyFeatures): their width, and
        their typical norm over sqrt(I) as ``feature_scale``, so that h0 starts at unit scale."""
        return replace(self, input_dim=int(features.shape[1]), feature_scale=feature_scale(features))


class CaptioningRNN(NumpyCaptioner):
    """A captioning language model conditioned on image features through its initial hidden state.

    Parameters (``params``): W_proj (I, H), b_proj (H,) map features to h0; W_embed (V, W) embeds words;
    Wx (W, G), Wh (H, G), b (G,) are the recurrent cell (G = H for 'rnn', 4H for 'lstm');
    W_vocab (H, V), b_vocab (V,) score the next word.

    Features are divided by ``feature_scale`` before W_proj. Training sets it to the features' typical
    norm / sqrt(I), so that h0 starts at unit scale whatever the features' units: PCA features of norm
    near 90 would otherwise start h0 at about 4 and saturate the first step's gates.
    """

    Config = RNNConfig

    def __init__(self, word_to_idx, config=None, *, seed=0, **options):
        """
        Inputs:
        - word_to_idx: dict word -> index over V words, with ``<NULL>``, ``<START>`` and ``<END>``.
        - config: an RNNConfig (default: its defaults); ``options`` override its fields by name, as in
          CS231n's ``CaptioningRNN(word_to_idx, input_dim=512, wordvec_dim=256, hidden_dim=512, cell_type="lstm")``
          (``dtype`` may be a numpy type).
        - seed: seed of the initial weights.
        """
        self._configure(word_to_idx, config, options)
        self.cell_type = self._config.cell_type
        self.input_dim, self.wordvec_dim = self._config.input_dim, self._config.wordvec_dim
        self.hidden_dim = self._config.hidden_dim
        self.feature_scale = float(self._config.feature_scale)
        self.params = self._init_params(np.random.default_rng(seed))

    def _init_params(self, rng):
        """Gaussian weights scaled by 1/sqrt(fan-in) so activations start near unit scale; zero biases, except
        the LSTM's forget gates at 1 (Jozefowicz et al. 2015)."""
        V, I, W, H = len(self.idx_to_word), self.input_dim, self.wordvec_dim, self.hidden_dim
        G = CELLS[self.cell_type][2] * H
        shapes = {"W_embed": (V, W), "W_proj": (I, H), "Wx": (W, G), "Wh": (H, G), "W_vocab": (H, V)}
        params = {name: rng.standard_normal(shape) / np.sqrt(shape[0]) for name, shape in shapes.items()}
        params["W_embed"] = rng.standard_normal((V, W)) / 100  # small: word vectors are learned from scratch
        params.update(b_proj=np.zeros(H), b=np.zeros(G), b_vocab=np.zeros(V))
        if self.cell_type == "lstm":
            params["b"][H:2 * H] = 1.0  # forget gates start mostly open: h0's image signal survives early steps
        return {name: value.astype(self.dtype) for name, value in params.items()}

    def _check_features(self, features):
        """Features on the backend divided by ``feature_scale``, in the model dtype; ValueError unless of shape
        (N, input_dim) and floating point."""
        return self._scaled(self._check_floating(features, (None, self.input_dim), ""))

    def loss(self, features, captions, weights=None, grads=None):
        """Training loss and gradients for a minibatch (teacher forcing).

        Inputs:
        - features: array of shape (N, I).
        - captions: int array of shape (N, T): <START> w1 .. wk <END> <NULL>...; the model reads
          captions[:, :-1] and predicts captions[:, 1:], ignoring <NULL> targets.
        - weights: optional array of shape (N,), each caption's weight (default 1). Self-critical training
          passes the advantages: the loss is then -sum_n weights[n] * log p(caption n) / N, whose gradient is
          the policy gradient, through the same backward passes.
        - grads: optional dict the gradients are set into as the backward pass produces them (default a new one);
          a process group's ``gradient_reducer`` starts each one's all-reduce there.

        Returns:
        - loss: float, the (weighted) summed cross-entropy over the predicted words, divided by N.
        - grads: dict with the keys of ``params``, each of that parameter's shape.
        """
        features = self._check_features(features)
        captions = self._check_captions(captions, features.shape[0])  # numpy: the masks are worked out on the host
        p = self.params
        forward, backward, _ = CELLS[self.cell_type]
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        h0 = features @ p["W_proj"] + p["b_proj"]  # (N, I) @ (I, H) -> (N, H)
        words, embed_cache = word_embedding_forward(self._on(captions_in), p["W_embed"])
        # Steps past a caption's last target cannot change the loss, so the cell does not compute them, and
        # <NULL> targets (a third of the steps on typical data) are not scored.
        keep = captions_out != self.null_idx  # (N, T)
        h, cell_cache = forward(words, h0, p["Wx"], p["Wh"], p["b"], lengths=run_lengths(keep))
        word_weights = np.ones(keep.shape)  # (N, T): a caption's weight on each of its words
        if weights is not None:
            word_weights *= check_weights(weights, features.shape[0])[:, None]
        grads = {} if grads is None else grads
        loss, dh, grads["W_vocab"], grads["b_vocab"] = word_loss(h, *map(self._on, (captions_out, word_weights)),
                                                                 p["W_vocab"], p["b_vocab"], self._on(keep))
        dwords, dh0, grads["Wx"], grads["Wh"], grads["b"] = backward(dh, cell_cache)
        grads["W_embed"] = word_embedding_backward(dwords, embed_cache)
        grads["W_proj"] = features.T @ dh0  # (I, N) @ (N, H) -> (I, H)
        grads["b_proj"] = self.backend.xp.sum(dh0, axis=0)
        return loss, grads

    def init_decode(self, features):
        """Decoding state for N rows: (h, c), each of shape (N, H); c stays zero for the 'rnn' cell."""
        features = self._check_features(features)
        h = features @ self.params["W_proj"] + self.params["b_proj"]  # (N, I) @ (I, H) -> (N, H)
        return h, self.backend.xp.zeros_like(h)

    def decode_step(self, tokens, state):
        """One word for every row.

        Inputs: tokens of shape (N,), the previous words; state (h, c), each of shape (N, H).
        Returns: log_probs of shape (N, V), the log-softmax over the next word; the new state.
        """
        p = self.params
        h, c = state
        x = self.backend.xp.take(p["W_embed"], self._on(tokens), axis=0)  # (N, W)
        if self.cell_type == "lstm":
            h, c, _ = layers.lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])
        else:
            h, _ = layers.rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])
        return self._word_log_probs(h), (h, c)

    def reorder_state(self, state, index):
        """The state with row i taken from old row index[i]; index of shape (M,)."""
        return self._rows(state, index)
