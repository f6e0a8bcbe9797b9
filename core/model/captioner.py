"""What the captioners share: their vocabulary's special words, the checks of their configs and inputs, and the
base of the two hand-written captioners (constructor, config record, array backend, word scores, greedy sampling).

Dimension legend: N captions (or images), T caption length, H hidden width, V vocabulary size, I feature width.
"""
from dataclasses import asdict, replace

import numpy as np

from core.data.layout import END, NULL, START
from core.data.vocab import index_to_word
from core.decoding import greedy_decode
from core.runtime.arrays import Backend, to_numpy


def check_positive_ints(config, names):
    """ValueError unless each field of ``config`` named in ``names`` is a positive integer (not a bool)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_numpy_config(config, positive_ints):
    """The checks both numpy configs need: a floating dtype, a positive finite feature_scale, positive widths."""
    if not np.issubdtype(np.dtype(config.dtype), np.floating):
        raise ValueError(f"dtype must be a floating type, got {config.dtype}")
    if not (np.isfinite(config.feature_scale) and config.feature_scale > 0):
        raise ValueError(f"feature_scale must be a positive number, got {config.feature_scale!r}")
    check_positive_ints(config, positive_ints)


def set_vocabulary(model, word_to_idx):
    """Give ``model`` its vocabulary: word_to_idx, idx_to_word and the indices of <NULL>, <START> and <END>."""
    model.word_to_idx = dict(word_to_idx)
    model.idx_to_word = index_to_word(model.word_to_idx)
    model.null_idx, model.start_idx, model.end_idx = (model.word_to_idx[t] for t in (NULL, START, END))


def feature_scale(features, rows=4096):
    """The typical norm of a feature row over sqrt(width), from the first ``rows`` rows (any (M, D)
    array or LazyFeatures): dividing by it gives rows of norm about sqrt(D), entries of unit scale."""
    sample = np.asarray(features[:rows], dtype=np.float64)
    scale = float(np.linalg.norm(sample, axis=1).mean() / np.sqrt(sample.shape[1]))
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def check_captions(captions, N, vocab_size):
    """Captions as a numpy array; ValueError unless integers of shape (N, T) with T >= 2 and indices below
    vocab_size."""
    captions = np.asarray(to_numpy(captions))
    if not np.issubdtype(captions.dtype, np.integer):
        raise ValueError(f"captions must be integer word indices, got dtype {captions.dtype}")
    if captions.ndim != 2 or captions.shape[0] != N or captions.shape[1] < 2:
        raise ValueError(f"captions must have shape ({N}, T) with T >= 2 to match the features, "
                         f"got {captions.shape}")
    if captions.size and (captions.min() < 0 or captions.max() >= vocab_size):
        raise ValueError(f"captions hold word indices outside [0, {vocab_size})")
    return captions


def check_weights(weights, N):
    """Per-caption weights as float64 of shape (N,); ValueError unless finite and of that shape."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (N,) or not np.all(np.isfinite(weights)):
        raise ValueError(f"weights must be {N} finite numbers, one per caption, got shape {weights.shape}")
    return weights


def run_lengths(keep):
    """Steps each row must run, of shape (N,): one past its last True in ``keep`` (N, T), 0 for none."""
    T = keep.shape[1]
    return np.where(keep.any(axis=1), T - np.argmax(keep[:, ::-1], axis=1), 0)


class NumpyCaptioner:
    """The part of CaptioningRNN and CaptioningAttLSTM that is the same: each subclass names its ``Config``
    dataclass, calls ``_configure`` first in its constructor and keeps W_vocab (H, V), b_vocab (V,) in ``params``.

    The parameters live on ``backend`` (core.runtime.arrays.Backend: numpy by default, torch tensors or CuPy arrays
    after ``to_backend``); the methods take numpy inputs (or the backend's), and decoding gives numpy results."""

    Config = None

    def _configure(self, word_to_idx, config, options):
        """Set the config (``config`` or the defaults, then ``options`` by field name; ``dtype`` may be a numpy
        type), the vocabulary, the dtype and the numpy backend."""
        if "dtype" in options:
            options["dtype"] = np.dtype(options["dtype"]).name
        self._config = replace(config or self.Config(), **options)
        set_vocabulary(self, word_to_idx)
        self.dtype = np.dtype(self._config.dtype)
        self.backend = Backend()

    def to_backend(self, backend):
        """Move the parameters (copies) to ``backend``, a core.runtime.arrays.Backend; returns the model."""
        self.params = {name: backend.asarray(value, copy=True) for name, value in self.params.items()}
        self.backend = backend
        return self

    def _on(self, array):
        """``array`` (numpy, or the backend's) as the backend's array."""
        return self.backend.asarray(array)

    def config(self):
        """The JSON-able config of this model (the seed only set the initial weights)."""
        return asdict(self._config)

    def _check_captions(self, captions, N):
        return check_captions(captions, N, len(self.idx_to_word))

    def _check_floating(self, features, shape, what):
        """``features`` on the backend; ValueError unless floating point of ``shape`` (None: any size)."""
        features = self._on(features)
        expected = ", ".join("N" if size is None else str(size) for size in shape)
        if features.ndim != len(shape) or any(size not in (None, got) for size, got in zip(shape, features.shape)):
            raise ValueError(f"features must have shape ({expected}){what}, got {tuple(features.shape)}")
        if not self.backend.xp.isdtype(features.dtype, "real floating"):
            raise ValueError(f"features must be floating point, got dtype {features.dtype}")
        return features

    def _scaled(self, features):
        """Floating ``features`` on the backend divided by the config's feature_scale, in the model dtype."""
        xp = self.backend.xp
        return xp.astype(features / self._config.feature_scale, getattr(xp, self.dtype.name), copy=False)

    def _word_log_probs(self, h):
        """The log-softmax over the next word of hidden states h (N, H): numpy, of shape (N, V)."""
        xp = self.backend.xp
        scores = h @ self.params["W_vocab"] + self.params["b_vocab"]  # (N, H) @ (H, V) -> (N, V)
        scores -= xp.max(scores, axis=1, keepdims=True)
        scores -= xp.log(xp.sum(xp.exp(scores), axis=1, keepdims=True))
        return to_numpy(scores)

    def _rows(self, arrays, index):
        """Each of ``arrays`` with row i taken from old row index[i], as a tuple; index of shape (M,)."""
        index = self._on(index)
        return tuple(self.backend.xp.take(array, index, axis=0) for array in arrays)

    def sample(self, features, max_length=30):
        """Greedy captions: int array of shape (N, max_length), see ``core.decoding.greedy_decode``."""
        return greedy_decode(self, features, max_length)
