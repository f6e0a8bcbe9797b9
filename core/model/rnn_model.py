"""CaptioningRNN: image features -> initial hidden state -> word-by-word RNN or LSTM language model, in numpy.

Dimension legend: N images, I image feature width (input_dim), W word vector width (wordvec_dim),
H hidden width, V vocabulary size, T caption length (with <START> and <END>).
"""
import numpy as np

from core import rnn_layers as layers
from core.decoding import greedy_decode

CELLS = {
    "rnn": (layers.rnn_forward, layers.rnn_backward, 1),
    "lstm": (layers.lstm_forward, layers.lstm_backward, 4),
}
SPECIAL_TOKENS = ("<NULL>", "<START>", "<END>")


def _index_to_word(word_to_idx):
    """The list idx_to_word; ValueError unless the indices are exactly 0..V-1 and the special tokens exist."""
    missing = [token for token in SPECIAL_TOKENS if token not in word_to_idx]
    if missing:
        raise ValueError(f"word_to_idx lacks the special tokens {missing}")
    idx_to_word = [None] * len(word_to_idx)
    for word, idx in word_to_idx.items():
        if not 0 <= idx < len(idx_to_word) or idx_to_word[idx] is not None:
            raise ValueError(f"word_to_idx must map its {len(idx_to_word)} words to distinct indices 0..V-1; "
                             f"{word!r} -> {idx}")
        idx_to_word[idx] = word
    return idx_to_word


def _run_lengths(keep):
    """Steps each row must run, of shape (N,): one past its last True in ``keep`` (N, T), 0 for none."""
    T = keep.shape[1]
    return np.where(keep.any(axis=1), T - np.argmax(keep[:, ::-1], axis=1), 0)


class CaptioningRNN:
    """A captioning language model conditioned on image features through its initial hidden state.

    Parameters (``params``): W_proj (I, H), b_proj (H,) map features to h0; W_embed (V, W) embeds words;
    Wx (W, G), Wh (H, G), b (G,) are the recurrent cell (G = H for 'rnn', 4H for 'lstm');
    W_vocab (H, V), b_vocab (V,) score the next word.

    Features are divided by ``feature_scale`` before W_proj. Training sets it to the features' typical
    norm / sqrt(I), so that h0 starts at unit scale whatever the features' units: PCA features of norm
    near 90 would otherwise start h0 at about 4 and saturate the first step's gates.
    """

    def __init__(self, word_to_idx, input_dim=512, wordvec_dim=128, hidden_dim=128, cell_type="rnn",
                 dtype=np.float32, seed=0, feature_scale=1.0):
        if cell_type not in CELLS:
            raise ValueError(f"cell_type must be one of {sorted(CELLS)}, got {cell_type!r}")
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"dtype must be a floating type, got {self.dtype}")
        self.word_to_idx = dict(word_to_idx)
        self.idx_to_word = _index_to_word(self.word_to_idx)
        self.null_idx, self.start_idx, self.end_idx = (self.word_to_idx[t] for t in SPECIAL_TOKENS)
        self.cell_type = cell_type
        self.input_dim, self.wordvec_dim, self.hidden_dim = input_dim, wordvec_dim, hidden_dim
        if not (np.isfinite(feature_scale) and feature_scale > 0):
            raise ValueError(f"feature_scale must be a positive number, got {feature_scale!r}")
        self.feature_scale = float(feature_scale)
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

    def config(self):
        """The JSON-able constructor arguments except word_to_idx (and seed, which only set the initial weights)."""
        return {"input_dim": self.input_dim, "wordvec_dim": self.wordvec_dim, "hidden_dim": self.hidden_dim,
                "cell_type": self.cell_type, "dtype": self.dtype.name, "feature_scale": self.feature_scale}

    def _check_features(self, features):
        """Features divided by ``feature_scale``, in the model dtype; ValueError unless of shape (N, input_dim)
        and floating point."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"features must have shape (N, {self.input_dim}), got {features.shape}")
        if not np.issubdtype(features.dtype, np.floating):
            raise ValueError(f"features must be floating point, got dtype {features.dtype}")
        return (features / self.feature_scale).astype(self.dtype, copy=False)

    def _check_captions(self, captions, N):
        """ValueError unless captions are integers of shape (N, T) with T >= 2 and valid word indices."""
        captions = np.asarray(captions)
        if not np.issubdtype(captions.dtype, np.integer):
            raise ValueError(f"captions must be integer word indices, got dtype {captions.dtype}")
        if captions.ndim != 2 or captions.shape[0] != N or captions.shape[1] < 2:
            raise ValueError(f"captions must have shape ({N}, T) with T >= 2 to match the features, "
                             f"got {captions.shape}")
        if captions.size and (captions.min() < 0 or captions.max() >= len(self.idx_to_word)):
            raise ValueError(f"captions hold word indices outside [0, {len(self.idx_to_word)})")
        return captions

    def loss(self, features, captions):
        """Training loss and gradients for a minibatch (teacher forcing).

        Inputs:
        - features: array of shape (N, I).
        - captions: int array of shape (N, T): <START> w1 .. wk <END> <NULL>...; the model reads
          captions[:, :-1] and predicts captions[:, 1:], ignoring <NULL> targets.

        Returns:
        - loss: float, the summed cross-entropy over the predicted words, divided by N.
        - grads: dict with the keys of ``params``, each of that parameter's shape.
        """
        features = self._check_features(features)
        captions = self._check_captions(captions, features.shape[0])
        p = self.params
        forward, backward, _ = CELLS[self.cell_type]
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        h0 = features @ p["W_proj"] + p["b_proj"]  # (N, I) @ (I, H) -> (N, H)
        words, embed_cache = layers.word_embedding_forward(captions_in, p["W_embed"])
        # Steps past a caption's last target cannot change the loss, so the cell does not compute them.
        # Words are scored only where there is a target: <NULL> padding (a third of the steps on typical
        # data) would cost vocabulary matmuls and a softmax only to be masked out. The M kept steps go
        # through the temporal layers as one sequence, (1, M, H); the loss is then rescaled to per caption.
        keep = captions_out != self.null_idx  # (N, T)
        h, cell_cache = forward(words, h0, p["Wx"], p["Wh"], p["b"], lengths=_run_lengths(keep))
        scores, vocab_cache = layers.temporal_affine_forward(h[keep][None], p["W_vocab"], p["b_vocab"])
        loss, dscores = layers.temporal_softmax_loss(scores, captions_out[keep][None], np.ones((1, keep.sum())))
        N = features.shape[0]
        loss /= N
        dscores /= N

        grads = {}
        dh_kept, grads["W_vocab"], grads["b_vocab"] = layers.temporal_affine_backward(dscores, vocab_cache)
        dh = np.zeros_like(h)
        dh[keep] = dh_kept[0]
        dwords, dh0, grads["Wx"], grads["Wh"], grads["b"] = backward(dh, cell_cache)
        grads["W_embed"] = layers.word_embedding_backward(dwords, embed_cache)
        grads["W_proj"] = features.T @ dh0  # (I, N) @ (N, H) -> (I, H)
        grads["b_proj"] = dh0.sum(axis=0)
        return loss, grads

    def init_decode(self, features):
        """Decoding state for N rows: (h, c), each of shape (N, H); c stays zero for the 'rnn' cell."""
        features = self._check_features(features)
        h = features @ self.params["W_proj"] + self.params["b_proj"]  # (N, I) @ (I, H) -> (N, H)
        return h, np.zeros_like(h)

    def decode_step(self, tokens, state):
        """One word for every row.

        Inputs: tokens of shape (N,), the previous words; state (h, c), each of shape (N, H).
        Returns: log_probs of shape (N, V), the log-softmax over the next word; the new state.
        """
        p = self.params
        h, c = state
        x = p["W_embed"][tokens]
        if self.cell_type == "lstm":
            h, c, _ = layers.lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])
        else:
            h, _ = layers.rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])
        scores = h @ p["W_vocab"] + p["b_vocab"]  # (N, H) @ (H, V) -> (N, V)
        scores -= scores.max(axis=1, keepdims=True)
        scores -= np.log(np.exp(scores).sum(axis=1, keepdims=True))
        return scores, (h, c)

    def reorder_state(self, state, index):
        """The state with row i taken from old row index[i]; index of shape (M,)."""
        h, c = state
        return h[index], c[index]

    def sample(self, features, max_length=30):
        """Greedy captions for features of shape (N, I): int array of shape (N, max_length), see greedy_decode."""
        return greedy_decode(self, features, max_length)
