"""CaptioningAttLSTM: a "Show, Attend and Tell" captioner (Xu et al. 2015, soft attention) in numpy: at every
word an LSTM looks at a grid of image cells through soft attention and reads their weighted mean.

Features are the encoder's spatial map, of shape (N, R, C): R = side * side cells in row-major order (cell
r = y * side + x, y from the top), C channels each. Soft attention sums cells, so by itself it cannot tell
where a cell is; the model appends each cell's centre (x, y), scaled to [-1, 1], as two more channels, and
these C + 2 channels enter both the attention and the context. The data stays the encoder's map.

Dimension legend: N images, R cells, C cell channels (input_dim), D = C + 2 channels with the position,
A attention width, W word vector width, H hidden width, V vocabulary size, T caption length.
"""
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from core.layers.affine import word_embedding_backward, word_embedding_forward, word_loss
from core.layers.att_lstm import (
    att_lstm_backward,
    att_lstm_forward,
    att_lstm_step_forward,
    doubly_stochastic_penalty,
    weight_keys,
)
from core.model.captioner import NumpyCaptioner, check_numpy_config, check_weights, feature_scale, run_lengths
from core.runtime.arrays import to_numpy

POSITION_CHANNELS = 2  # each cell's centre (x, y)


@dataclass(frozen=True)
class AttLSTMConfig:
    """Architecture of a CaptioningAttLSTM. ``input_dim``, ``num_cells`` and ``feature_scale`` are measured from
    the training grid (``for_data``); the defaults fit VGG16's conv5_3 map (14 x 14 cells of 512 channels)."""
    input_dim: int = 512  # C, channels per cell as the encoder gives them
    num_cells: int = 196  # R, a square number: side * side cells
    wordvec_dim: int = 256
    hidden_dim: int = 512
    att_dim: int = 256  # A: the tanh over (N, R, A) at every step is most of a step's elementwise work
    gate: bool = True  # the gate beta_t scaling the context (the paper's)
    # lambda of the doubly stochastic penalty; 0 switches it off. The paper's 1 pushes attention off the objects
    # here: with 64 cells and ~10 words it asks every cell for a total weight of 1 (shapes test, 2 epochs: attention
    # correctness 0.073 at lambda 1, below the uniform 0.110; 0.695 at lambda 0, with F1 0.990 -> 0.993).
    att_penalty: float = 0.0
    dtype: str = "float32"  # numpy dtype name of the parameters and of every computation
    feature_scale: float = 1.0  # cells are divided by it before the position channels are appended

    def __post_init__(self):
        check_numpy_config(self, ("input_dim", "num_cells", "wordvec_dim", "hidden_dim", "att_dim"))
        if isinstance(self.att_penalty, bool) or not (np.isfinite(self.att_penalty) and self.att_penalty >= 0):
            raise ValueError(f"att_penalty must be a number >= 0 (0 switches it off), got {self.att_penalty!r}")
        if not isinstance(self.gate, (bool, np.bool_)):
            raise ValueError(f"gate must be True or False, got {self.gate!r}")
        if math.isqrt(self.num_cells) ** 2 != self.num_cells:
            raise ValueError(f"num_cells must be a square number (a side x side grid), got {self.num_cells}")

    reads_grid = True  # grid features of shape (N, R, C)

    def num_parameters(self, vocab_size):
        """How many numbers the model's parameters hold, for a vocabulary of ``vocab_size`` words."""
        V, D, A, W, H = vocab_size, self.input_dim + POSITION_CHANNELS, self.att_dim, self.wordvec_dim, self.hidden_dim
        gate = H + 1 if self.gate else 0
        return V * W + 2 * (D + 1) * H + (D + 1) * A + (H + 1) * A + gate + (W + D + H + 1) * 4 * H + (H + 1) * V

    def for_data(self, grid, rows=64):
        """This config fitted to a training grid of shape (M, R, C) (an array, or an h5py-backed object sliced
        as ``grid[:rows]``): R, C, and the cells' typical norm over sqrt(C) as ``feature_scale``, from the
        first ``rows`` images only."""
        sample = np.asarray(grid[:rows])
        if sample.ndim != 3:
            raise ValueError(f"a grid must have shape (M, R, C), got {sample.shape}")
        M, R, C = sample.shape
        scale = feature_scale(sample.reshape(M * R, C), rows=M * R)  # (M, R, C) -> (M*R, C): every sampled cell
        return replace(self, input_dim=int(C), num_cells=int(R), feature_scale=scale)


def cell_positions(num_cells):
    """Each cell's centre (x, y) on a square grid, row-major, scaled to [-1, 1]; of shape (R, 2)."""
    side = math.isqrt(num_cells)
    centres = (2 * np.arange(side) + 1) / side - 1  # (side,)
    y, x = np.meshgrid(centres, centres, indexing="ij")  # cell y * side + x: x varies fastest
    return np.stack([x.ravel(), y.ravel()], axis=1)


class AttDecodeState(NamedTuple):
    """Decoding state of N rows, arrays of the model's backend: h, c (N, H); grid (N, R, D), the cells with
    positions; projected (N, R, A), grid @ W_att + b_att; alpha (N, R), where the last step looked (zeros before the
    first step)."""
    h: np.ndarray
    c: np.ndarray
    grid: np.ndarray
    projected: np.ndarray
    alpha: np.ndarray


class CaptioningAttLSTM(NumpyCaptioner):
    """A captioning LSTM that attends over a grid of image cells at every word (soft attention).

    Parameters (``params``): W_h0 (D, H), b_h0 (H,) give h0 = tanh(mean cell @ W_h0 + b_h0), in the range of
    h = o * tanh(c); W_c0 (D, H), b_c0 (H,) give c0 = mean cell @ W_c0 + b_c0, affine since c is unbounded;
    W_att (D, A), b_att (A,) project the cells once per batch; W_att_h (H, A), w_att (A,) score them against
    h_{t-1}; W_beta (H, 1), b_beta (1,) gate the context (with ``gate``); W_embed (V, W) embeds words;
    Wx (W + D, 4H), Wh (H, 4H), b (4H,) are the LSTM on [word, gated context]; W_vocab (H, V), b_vocab (V,)
    score the next word. See core.layers.att_lstm for the equations.

    The loss is the summed cross-entropy of the caption words over N plus ``att_penalty`` times the doubly
    stochastic penalty (core.layers.att_lstm.doubly_stochastic_penalty). With R cells and T < R steps that penalty
    cannot fall below att_penalty * (R - T)^2 / R per image: the loss has that floor; only its gradient matters.
    """

    Config = AttLSTMConfig
    attention_note = "soft attention over the image's cells at each word"

    def __init__(self, word_to_idx, config=None, *, seed=0, **options):
        """
        Inputs:
        - word_to_idx: dict word -> index over V words, with ``<NULL>``, ``<START>`` and ``<END>``.
        - config: an AttLSTMConfig (default: its defaults); ``options`` override its fields by name
          (``dtype`` may be a numpy type).
        - seed: seed of the initial weights.
        """
        self._configure(word_to_idx, config, options)
        self.positions = cell_positions(self._config.num_cells).astype(self.dtype)  # (R, 2)
        self.params = self._init_params(np.random.default_rng(seed))

    def _init_params(self, rng):
        """Gaussian weights scaled by 1/sqrt(fan-in) so activations start near unit scale; zero biases, except
        the LSTM's forget gates at 1 (Jozefowicz et al. 2015)."""
        cfg = self._config
        V, D, A = len(self.idx_to_word), cfg.input_dim + POSITION_CHANNELS, cfg.att_dim
        W, H = cfg.wordvec_dim, cfg.hidden_dim
        shapes = {"W_h0": (D, H), "W_c0": (D, H), "W_att": (D, A), "W_att_h": (H, A), "w_att": (A,),
                  "Wx": (W + D, 4 * H), "Wh": (H, 4 * H), "W_vocab": (H, V)}
        if cfg.gate:
            shapes["W_beta"] = (H, 1)
        params = {name: rng.standard_normal(shape) / np.sqrt(shape[0]) for name, shape in shapes.items()}
        params["W_embed"] = rng.standard_normal((V, W)) / 100  # small: word vectors are learned from scratch
        params.update(b_h0=np.zeros(H), b_c0=np.zeros(H), b_att=np.zeros(A), b=np.zeros(4 * H), b_vocab=np.zeros(V))
        params["b"][H:2 * H] = 1.0  # forget gates start mostly open
        if cfg.gate:
            params["b_beta"] = np.zeros(1)
        return {name: value.astype(self.dtype) for name, value in params.items()}

    def _grid(self, features):
        """The cells divided by ``feature_scale`` with their positions appended, (N, R, D), in the model dtype;
        ValueError unless features are floating point of shape (N, R, C)."""
        xp, R, C = self.backend.xp, self._config.num_cells, self._config.input_dim
        cells = self._scaled(self._check_floating(features, (None, R, C),
                                                  f" (N images, {R} cells, {C} channels)"))
        positions = xp.broadcast_to(self._on(self.positions), (cells.shape[0], R, POSITION_CHANNELS))  # (N, R, 2)
        return xp.concat([cells, positions], axis=2)  # (N, R, C) and (N, R, 2) -> (N, R, D)

    def _start(self, grid):
        """h0 and c0 of shape (N, H) from the mean cell, and that mean, of shape (N, D)."""
        p, xp = self.params, self.backend.xp
        mean = xp.mean(grid, axis=1)  # (N, R, D) -> (N, D)
        h0 = xp.tanh(mean @ p["W_h0"] + p["b_h0"])  # (N, D) @ (D, H) -> (N, H)
        return h0, mean @ p["W_c0"] + p["b_c0"], mean

    def _recurrent_weights(self):
        """The dict of weights core.layers.att_lstm' functions take."""
        return {key: self.params[key] for key in weight_keys(self.params)}

    def loss(self, features, captions, weights=None, grads=None):
        """Training loss and gradients for a minibatch (teacher forcing).

        Inputs:
        - features: array of shape (N, R, C), the encoder's grid (see the module docstring).
        - captions: int array of shape (N, T): <START> w1 .. wk <END> <NULL>...; the model reads
          captions[:, :-1] and predicts captions[:, 1:], ignoring <NULL> targets.
        - weights: optional array of shape (N,), each caption's weight: the loss is then
          -sum_n weights[n] * log p(caption n) / N, self-critical training's surrogate, without the penalty
          (a regulariser of cross-entropy training's attention, not part of the policy).
        - grads: optional dict the gradients are set into as the backward pass produces them (default a new one);
          a process group's ``gradient_reducer`` starts each one's all-reduce there.

        Returns:
        - loss: float, the summed cross-entropy over the predicted words divided by N, plus the penalty.
        - grads: dict with the keys of ``params``, each of that parameter's shape.
        """
        grid = self._grid(features)
        captions = self._check_captions(captions, grid.shape[0])  # numpy: the masks are worked out on the host
        p, xp = self.params, self.backend.xp
        captions_in, captions_out = captions[:, :-1], captions[:, 1:]
        h0, c0, mean = self._start(grid)
        projected = grid @ p["W_att"] + p["b_att"]  # (N, R, D) @ (D, A) -> (N, R, A)
        words, embed_cache = word_embedding_forward(self._on(captions_in), p["W_embed"])
        keep = captions_out != self.null_idx  # (N, T); steps past a caption's last target are not computed
        h, alpha, cache = att_lstm_forward(words, grid, projected, h0, c0, self._recurrent_weights(),
                                           lengths=run_lengths(keep))
        grads = {} if grads is None else grads
        word_weights = keep.astype(self.dtype)  # (N, T)
        if weights is not None:
            word_weights *= check_weights(weights, grid.shape[0])[:, None]
        loss, dh, grads["W_vocab"], grads["b_vocab"] = word_loss(h, *map(self._on, (captions_out, word_weights)),
                                                                 p["W_vocab"], p["b_vocab"], self._on(keep))
        dalpha = xp.zeros_like(alpha)
        if self._config.att_penalty and weights is None:
            penalty, dalpha = doubly_stochastic_penalty(alpha, self._config.att_penalty)
            loss += penalty

        dwords, _, dprojected, dh0, dc0, recurrent_grads = att_lstm_backward(dh, dalpha, cache, cells_gradient=False)
        grads.update(recurrent_grads)
        grads["W_embed"] = word_embedding_backward(dwords, embed_cache)
        D, A = grid.shape[2], dprojected.shape[2]
        # The grid is data: W_att's gradient is needed, the cells' (another (N*R, A) @ (A, D)) is not.
        # (N, R, D) -> (N*R, D), (N, R, A) -> (N*R, A); (D, N*R) @ (N*R, A) -> (D, A)
        grads["W_att"] = xp.reshape(grid, (-1, D)).T @ xp.reshape(dprojected, (-1, A))
        grads["b_att"] = xp.sum(dprojected, axis=(0, 1))
        dh0 *= 1 - h0 ** 2  # through the tanh
        grads["W_h0"], grads["b_h0"] = mean.T @ dh0, xp.sum(dh0, axis=0)  # (D, N) @ (N, H) -> (D, H)
        grads["W_c0"], grads["b_c0"] = mean.T @ dc0, xp.sum(dc0, axis=0)
        return loss, grads

    def init_decode(self, features):
        """Decoding state for N rows, an AttDecodeState; features of shape (N, R, C)."""
        grid = self._grid(features)
        h0, c0, _ = self._start(grid)
        projected = grid @ self.params["W_att"] + self.params["b_att"]  # (N, R, D) @ (D, A) -> (N, R, A)
        return AttDecodeState(h0, c0, grid, projected, self.backend.xp.zeros_like(grid[:, :, 0]))

    def decode_step(self, tokens, state):
        """One word for every row.

        Inputs: tokens of shape (N,), the previous words; state, an AttDecodeState of N rows.
        Returns: log_probs of shape (N, V), the log-softmax over the next word; the new state, whose ``alpha``
        (also ``attention(state)``) holds where this step looked, of shape (N, R).
        """
        words = self.backend.xp.take(self.params["W_embed"], self._on(tokens), axis=0)  # (N, W)
        h, c, alpha, _ = att_lstm_step_forward(words, state.h, state.c, state.grid, state.projected,
                                               self._recurrent_weights())
        return self._word_log_probs(h), state._replace(h=h, c=c, alpha=alpha)

    def reorder_state(self, state, index):
        """The state with row i taken from old row index[i]; index of shape (M,)."""
        return AttDecodeState(*self._rows(state, index))

    def attention(self, state):
        """Where the state's last step looked: alpha of shape (N, R), summing to 1 over the cells (zeros before the
        first step), numpy."""
        return to_numpy(state.alpha)
