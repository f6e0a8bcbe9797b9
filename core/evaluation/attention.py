"""Where attention models look: captions with each word's attention over the grid cells, recorded in the pass that
decodes them (greedy, sampled or beam search), and, on the shapes world, their attention correctness (the maps are
drawn by ``core.inference.attention_maps`` and the evaluation report).

A model attends when its config reads grid features; after each ``decode_step`` its ``attention(state)`` gives
the step's weights, cells first (R of them, row-major), then any extra slot (the Transformer's global position),
and its ``attention_note`` says what they are. Maps and correctness use the cells' weights only; for the
Transformer those are the last decoder layer's cross-attention averaged over heads, and what the global slot
received is left out (the figures say so).

Dimension legend: N images, L most words decoded, R grid cells.
"""
import numpy as np

from core.decoding import DecodeConfig, beam_hypotheses, decode
from core.evaluation.attention_correctness import attention_correctness


class AttentionRecorder:
    """A decodable model that also records each step's attention over the cells of every state row.

    ``steps[t]`` is (rows, weights): the original row of each state row at step t, followed through
    ``reorder_state``, and its attention over the cells, float32 of shape (M, R). Greedy decoding and sampling
    drop finished captions from the state, and ``per_row`` files each step under its row; beam search keeps
    several hypotheses of a row, which ``beam_attention`` follows with the search's own trace.
    """

    def __init__(self, model, num_rows, num_cells):
        self.model, self.num_cells = model, num_cells
        self.null_idx, self.start_idx, self.end_idx = model.null_idx, model.start_idx, model.end_idx
        self.num_rows, self.rows, self.steps = num_rows, np.arange(num_rows), []

    def init_decode(self, features):
        return self.model.init_decode(features)

    def decode_step(self, tokens, state):
        log_probs, state = self.model.decode_step(tokens, state)
        weights = np.asarray(self.model.attention(state)[:, :self.num_cells], dtype=np.float32)  # (M, R)
        self.steps.append((self.rows, weights))
        return log_probs, state

    def reorder_state(self, state, index):
        self.rows = self.rows[index]
        return self.model.reorder_state(state, index)

    def per_row(self, max_length):
        """Each row's word t's attention, (N, L, R); steps after a caption's <END> stay zero."""
        weights = np.zeros((self.num_rows, max_length, self.num_cells), dtype=np.float32)  # (N, L, R)
        for t, (rows, step) in enumerate(self.steps):
            weights[rows, t] = step
        return weights


def beam_attention(beams, steps, slot=0):
    """Each word's attention of every image's hypothesis ``slot`` (0: the best), (N, L, R), from a
    ``core.decoding.Beams`` and the ``steps`` an ``AttentionRecorder`` took in the same search.

    Going back from the last step, a hypothesis' word t came from the state row that continued its parent slot
    then (``beams.live[t]``); where the parent had already ended, the word is the <NULL> of a finished slot and its
    attention stays zero.
    """
    N, B, L = beams.captions.shape
    weights = np.zeros((N, L, steps[0][1].shape[1]), dtype=np.float32)  # (N, L, R)
    images, slots = np.arange(N), np.full(N, slot, dtype=np.int64)
    for t in range(len(beams.history) - 1, -1, -1):
        parents = beams.history[t][0][images, slots]
        state_row = np.full(N * B, -1, dtype=np.int64)
        state_row[beams.live[t]] = np.arange(len(beams.live[t]))
        rows = state_row[images * B + parents]
        decoded = rows >= 0
        weights[images[decoded], t] = steps[t][1][rows[decoded]]
        slots = parents
    return weights


def decode_recorded(model, features, max_length, config=None, rng=None, num_cells=None):
    """Captions as ``core.decoding.decode`` makes them and what the same pass shows of them:
    (captions (N, L), weights (N, L, R) or None, beams or None).

    With ``num_cells`` (a model attending over R cells) ``weights[n, t]`` is the attention of caption n's word t;
    with beam search, ``beams`` is every image's ``core.decoding.Beams`` hypotheses and captions are the best.
    """
    config = config or DecodeConfig()
    recorder = model if num_cells is None else AttentionRecorder(model, len(features), num_cells)
    if config.beam_size == 1:
        captions = decode(recorder, features, max_length, config=config, rng=rng)
        return captions, None if num_cells is None else recorder.per_row(max_length), None
    beams = beam_hypotheses(recorder, features, config.beam_size, max_length, config.length_penalty)
    return beams.captions[:, 0], None if num_cells is None else beam_attention(beams, recorder.steps), beams


def greedy_with_attention(model, features, max_length, num_cells):
    """Greedy captions (N, L) of features (N, ...) and each word's attention over the cells, (N, L, R)."""
    return decode_recorded(model, np.asarray(features, dtype=np.float32), max_length, num_cells=num_cells)[:2]


def words_of(ids, idx_to_word, end_idx):
    """The words of one decoded row (L,) up to and including its <END>, for the panels of a map."""
    words = []
    for i in ids.tolist():
        words.append(idx_to_word[i])
        if i == end_idx:
            break
    return words


def correctness_of(captions, attentions, scenes, image_size, world):
    """Attention correctness (``core.evaluation.attention_correctness``) of captions (image row -> caption text)
    from the attention each word had while it was decoded (image row -> (T, R): a row per word, <END>'s after
    them), with the uniform-attention baseline; ``world``: the scenes' ``core.shapes_world.worlds.World``.

    Each word's weights over the cells are renormalised to sum to 1: the Transformer's global position, which
    has no place in the image, takes the rest, and ``cell_share`` reports how much the cells got on average.
    """
    normalised, shares = {}, []
    for row, weights in attentions.items():
        mass = weights.sum(axis=1, keepdims=True)  # (T, 1)
        shares.append(mass.ravel())
        normalised[row] = weights / np.maximum(mass, 1e-12)
    result = attention_correctness({row: captions[row] for row in normalised}, normalised,
                                   {row: scenes[row] for row in normalised}, image_size=image_size, world=world)
    return dict(result, cell_share=float(np.concatenate(shares).mean()) if shares else float("nan"))
