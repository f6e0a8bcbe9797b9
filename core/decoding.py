"""Caption decoding written once for every model, over a small step interface.

A decodable model has integer attributes ``null_idx``, ``start_idx``, ``end_idx`` and three methods,
with numpy arrays at the boundary:

    state = model.init_decode(features)           # features of shape (N, D) -> state for N rows
    log_probs, state = model.decode_step(tokens, state)
                                                   # tokens of shape (N,) int: the previous word of each row
                                                   # log_probs of shape (N, V): log-softmax of the next word
    state = model.reorder_state(state, index)      # index of shape (M,) int: new row i is old row index[i]

A model may also have ``max_length``, the most positions it decodes (the Transformer's positional table).
``state`` is opaque here (hidden vectors for the RNNs, a key/value cache for the Transformer).
Beam search treats beams as extra rows of the batch and uses ``reorder_state`` to follow them.

Scripts call ``decode`` with a ``DecodeConfig``; ``greedy_decode``, ``beam_search`` and ``sample_decode``
are the three strategies behind it.

Dimension legend: N images, D feature width, V vocabulary size, L max caption length, B beam size.
"""
from dataclasses import dataclass, replace

import numpy as np

from core.runtime.errors import UserError

# Ceilings, far beyond any use and checked before decoding allocates: the beams' scores grow with the beam width
# times the vocabulary, every caption array with its steps; the length penalty's power overflows beyond a few tens,
# and dividing log-probabilities by a temperature near 0 overflows too.
MAX_BEAM_SIZE = 100
MAX_DECODE_STEPS = 1000
MAX_LENGTH_PENALTY = 10.0
MIN_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class DecodeConfig:
    """How captions are decoded.

    - beam_size: 1 decodes greedily (or samples, with a temperature); more runs beam search.
    - length_penalty: alpha of the GNMT length penalty ((5 + length) / 6) ** alpha that beam search
      divides log-probabilities by; 0 ranks by the plain log-probability sum (favours short captions).
    - temperature: None decodes deterministically; a positive value samples each word from
      softmax(log_probs / temperature) (near 0: greedy, 1: the model's distribution).
    """
    beam_size: int = 1
    length_penalty: float = 0.0
    temperature: float | None = None

    def __post_init__(self):
        if isinstance(self.beam_size, bool) or not isinstance(self.beam_size, (int, np.integer)) \
                or not 1 <= self.beam_size <= MAX_BEAM_SIZE:
            raise UserError(f"beam_size={self.beam_size!r}: set the beam size to an integer in 1..{MAX_BEAM_SIZE}")
        if not np.isfinite(self.length_penalty) or not 0 <= self.length_penalty <= MAX_LENGTH_PENALTY:
            raise UserError(f"length_penalty={self.length_penalty!r}: set the length penalty to a number in "
                            f"0..{MAX_LENGTH_PENALTY}")
        if self.temperature is not None:
            if not np.isfinite(self.temperature) or self.temperature < MIN_TEMPERATURE:
                raise UserError(f"temperature={self.temperature!r}: set the sampling temperature to "
                                f"{MIN_TEMPERATURE} or more, or leave it unset to decode deterministically")
            if self.beam_size != 1:
                raise UserError(f"temperature={self.temperature!r} with beam_size={self.beam_size}: sampling "
                                f"draws one caption per image; use beam_size=1 or leave the temperature unset")


def check_max_length(model, max_length):
    """UserError when ``max_length`` is beyond what ``model`` decodes (its optional ``max_length`` attribute) or
    beyond MAX_DECODE_STEPS."""
    limit = min(getattr(model, "max_length", None) or MAX_DECODE_STEPS, MAX_DECODE_STEPS)
    if max_length > limit:
        raise UserError(f"--max-length {max_length} is more than this model decodes ({limit} positions); "
                        f"use --max-length {limit} or less")


def decode(model, features, max_length, *, config=None, rng=None, **options):
    """Captions for ``features`` with the strategy a ``DecodeConfig`` names: the entry point scripts call.

    Inputs:
    - model: an object with the step interface above.
    - features: array of shape (N, D).
    - max_length: int, the most words generated per caption (<END> included).
    - config: a DecodeConfig (default: greedy); ``options`` override its fields by name, e.g.
      ``decode(model, features, 16, beam_size=3)``. An unknown option name raises TypeError.
    - rng: np.random.Generator, required when sampling (temperature set).

    Returns:
    - captions: int64 array of shape (N, max_length), laid out as ``greedy_decode`` returns them.
    """
    config = replace(config or DecodeConfig(), **options)
    if config.temperature is not None:
        if rng is None:
            raise ValueError("sampling (temperature set) needs an explicit np.random.Generator as rng")
        return sample_decode(model, features, max_length, config.temperature, rng=rng)
    if config.beam_size == 1:
        return greedy_decode(model, features, max_length)
    return beam_search(model, features, config.beam_size, max_length, config.length_penalty)


def greedy_decode(model, features, max_length):
    """Greedy decoding, batched; each caption stops at its first <END>.

    Inputs:
    - model: an object with the step interface above.
    - features: array of shape (N, D).
    - max_length: int, the most words generated per caption (<END> included).

    Returns:
    - captions: int64 array of shape (N, max_length): the generated words (no <START>), the <END>
      where one was produced, then <NULL> padding.
    """
    return _decode_words(model, features, max_length, lambda log_probs: np.argmax(log_probs, axis=1))


def prefixed_greedy_decode(model, features, prefix, max_length):
    """Greedy captions that begin with given words: the model is fed ``prefix`` (teacher forcing), then
    continues greedily.

    Inputs: features of shape (N, D); prefix of shape (N, k), word indices without <START> and without <END>;
    max_length: int > k, the most words per caption (prefix and <END> included).
    Returns: captions of shape (N, max_length), the prefix in the first k columns, laid out as
    ``greedy_decode`` returns them.
    """
    prefix = np.asarray(prefix, dtype=np.int64)
    if prefix.shape[0] != len(features) or prefix.shape[1] >= max_length or (prefix == model.end_idx).any():
        raise ValueError(f"prefix must be (N={len(features)}, k < max_length={max_length}) without the end "
                         f"token, got {prefix.shape}")
    step = iter(range(max_length))

    def choose(log_probs):
        t = next(step)  # no prefix word is <END>, so every row is still decoding while t < k
        return prefix[:, t] if t < prefix.shape[1] else np.argmax(log_probs, axis=1)

    return _decode_words(model, features, max_length, choose)


def _decode_words(model, features, max_length, choose):
    """One word per row and step, ``choose(log_probs (M, V)) -> tokens (M,)``, until every row has ended.

    Rows that wrote <END> leave the state, so each step computes only the M captions still going.
    """
    N = features.shape[0]
    captions = np.full((N, max_length), model.null_idx, dtype=np.int64)
    rows = np.arange(N)  # the caption of each state row
    tokens = np.full(N, model.start_idx, dtype=np.int64)
    state = model.init_decode(features)
    for t in range(max_length):
        log_probs, state = model.decode_step(tokens, state)
        tokens = choose(log_probs)
        captions[rows, t] = tokens
        going = tokens != model.end_idx
        if not going.any() or t == max_length - 1:
            break
        if not going.all():
            state = model.reorder_state(state, np.flatnonzero(going))
            rows, tokens = rows[going], tokens[going]
    return captions


def sample_decode(model, features, max_length, temperature=1.0, *, rng):
    """Sample one caption per image, each word from softmax(log_probs / temperature); batched.

    Uses the Gumbel-max trick: argmax(log_probs / temperature + Gumbel noise) is an exact draw from
    that softmax, with no normalisation and no per-row Python loop.

    Inputs:
    - model: an object with the step interface above.
    - features: array of shape (N, D).
    - max_length: int, the most words generated per caption (<END> included).
    - temperature: float > 0; towards 0 the draws approach greedy decoding.
    - rng: np.random.Generator, the only source of randomness (same seed, same captions).

    Returns:
    - captions: int64 array of shape (N, max_length), laid out as ``greedy_decode`` returns them.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    # Gumbel-max: argmax(log_probs / T + Gumbel noise) is an exact draw from softmax(log_probs / T).
    def draw(log_probs):
        return np.argmax(log_probs / temperature + rng.gumbel(size=log_probs.shape), axis=1)  # (N,)

    return _decode_words(model, features, max_length, draw)


def beam_search(model, features, beam_size=3, max_length=30, length_penalty=0.0, return_scores=False):
    """Beam search batched over images and beams (``beam_hypotheses``), keeping each image's best hypothesis.

    Inputs:
    - model: an object with the step interface above.
    - features: array of shape (N, D).
    - beam_size: B, hypotheses kept per image.
    - max_length: int, the most words generated per caption (<END> included).
    - length_penalty: alpha >= 0; 0 ranks by the plain log-probability sum.
    - return_scores: also return the best hypothesis' ranking score per image.

    Returns:
    - captions: int64 array of shape (N, max_length): the best hypothesis per image, laid out as
      ``greedy_decode`` returns them.
    - scores (only with return_scores): float64 array of shape (N,).
    """
    beams = beam_hypotheses(model, features, beam_size, max_length, length_penalty)
    if return_scores:
        return beams.captions[:, 0], beams.scores[:, 0]
    return beams.captions[:, 0]


@dataclass(frozen=True)
class Beams:
    """What a beam search ends with: every image's B hypotheses, best first, and how they were reached.

    - captions: int64 of shape (N, B, L), each laid out as ``greedy_decode`` returns captions.
    - scores: float64 of shape (N, B), each hypothesis' ranking score (-inf for a slot no hypothesis reached).
    - history: per step t, (parents, words) of shape (N, B): slot b's word at t and the slot it extended.
    - live: per step t, the slots (n * B + b, before that step's selection) of the model's state rows, in the
      order ``decode_step`` saw them.
    """
    captions: np.ndarray
    scores: np.ndarray
    history: list
    live: list


def beam_hypotheses(model, features, beam_size, max_length, length_penalty=0.0):
    """Beam search batched over images and beams: slot b of image n is row n * B + b of the scores; the
    model's state holds only the hypotheses still going. Returns ``Beams``.

    A hypothesis ends at its first <END> (its length counts the <END>) or at max_length words without
    one. Hypotheses are ranked by log P(words) / ((5 + length) / 6) ** length_penalty (GNMT). Finished
    hypotheses keep their beam slot and compete with live ones at every step; the only continuation
    of a finished slot is <NULL> at log-probability 0. With B >= V ** (L - 1) no hypothesis is pruned
    before the last step, so the result is the best of all captions up to length L (exact search).
    Ties go to the lower word index, as ``np.argmax`` does, so ``beam_size=1`` reproduces
    ``greedy_decode`` exactly.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    N, B = features.shape[0], beam_size
    images = np.arange(N)[:, None]  # (N, 1): broadcasts against (N, B) beam indices
    # The state holds only the live hypotheses: state row i continues slot live[i] (slot n * B + b).
    # All B slots start as the same empty hypothesis; only slot 0 may expand (the others score -inf),
    # or the first step would fill the beam with B copies of the best word.
    state, live = model.init_decode(features), np.arange(N) * B
    tokens = np.full(N, model.start_idx, dtype=np.int64)
    scores = np.full((N, B), -np.inf)
    scores[:, 0] = 0.0
    finished = np.zeros((N, B), dtype=bool)
    lengths = np.zeros((N, B), dtype=np.int64)
    history, lives = [], []  # per step: (parents, words), each of shape (N, B); the live slots
    for t in range(max_length):
        live_log_probs, state = model.decode_step(tokens, state)
        lives.append(live)
        V = live_log_probs.shape[1]
        log_probs = np.zeros((N * B, V))  # rows of finished or unused slots are overwritten or -inf below
        log_probs[live] = live_log_probs
        totals = scores[:, :, None] + log_probs.reshape(N, B, V)  # (N * B, V) -> (N, B, V)
        totals[finished] = -np.inf
        totals[finished, model.null_idx] = scores[finished]
        lengths = np.where(finished, lengths, t + 1)
        ranking = totals / _length_penalty(lengths, length_penalty)[:, :, None] if length_penalty else totals
        best = top_k_indices(ranking.reshape(N, B * V), B)  # (N, B * V) -> (N, B), best first
        parents, words = np.divmod(best, V)
        scores = totals.reshape(N, B * V)[images, best]
        lengths = lengths[images, parents]
        finished = finished[images, parents] | (words == model.end_idx)
        history.append((parents, words))
        going = ~finished.ravel() & np.isfinite(scores.ravel())  # -inf: an unused slot of a tiny vocabulary
        if not going.any() or t == max_length - 1:
            break
        # A slot still going descends from a live one; find its parent's state row.
        state_row = np.zeros(N * B, dtype=np.int64)
        state_row[live] = np.arange(live.size)
        state = model.reorder_state(state, state_row[(images * B + parents).ravel()[going]])
        live, tokens = np.flatnonzero(going), words.ravel()[going]
    captions = np.stack([_backtrack(history, N, max_length, model.null_idx, b) for b in range(B)], axis=1)
    return Beams(captions, scores / _length_penalty(lengths, length_penalty), history, lives)


def _length_penalty(lengths, alpha):
    """GNMT length penalty ((5 + length) / 6) ** alpha of an int array of lengths, elementwise."""
    return ((5.0 + lengths) / 6.0) ** alpha


def top_k_indices(values, k):
    """Column indices of the k largest entries of each row of ``values`` (R, C), best first, (R, k).

    Beam search's selection, shared with the nearest-neighbour baseline. Among equal values the lower
    index wins, as in np.argmax, which keeps beam search with one beam identical to greedy decoding
    even on exact ties.

    k rounds of argmax, each taking every row's best entry out: for the small k of beam search this is
    several times faster than a partition (np.argpartition pays a per-row setup that dominates there).
    """
    R = values.shape[0]
    rows = np.arange(R)
    work = np.array(values, dtype=np.float64)  # a copy: taken entries become -inf
    taken = np.zeros(work.shape, dtype=bool)
    index = np.empty((R, k), dtype=np.int64)
    for j in range(k):
        best = np.argmax(work, axis=1)  # (R,)
        # argmax landing on a taken entry means every remaining entry is -inf: take the lowest untaken.
        stuck = taken[rows, best]
        if stuck.any():
            best[stuck] = np.argmax(~taken[stuck], axis=1)
        index[:, j] = best
        taken[rows, best] = True
        work[rows, best] = -np.inf
    return index


def _backtrack(history, N, max_length, null_idx, slot=0):
    """Words of beam slot ``slot`` of every image from per-step (parents, words), (N, max_length)."""
    captions = np.full((N, max_length), null_idx, dtype=np.int64)
    slot = np.full(N, slot, dtype=np.int64)
    images = np.arange(N)
    for t in range(len(history) - 1, -1, -1):
        parents, words = history[t]
        captions[:, t] = words[images, slot]
        slot = parents[images, slot]
    return captions
