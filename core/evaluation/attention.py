"""Where attention models look: greedy captions with each word's attention over the grid cells and, on the shapes
world, their attention correctness (the maps are drawn by ``core.inference.attention_maps``).

A model attends when its config reads grid features; after each ``decode_step`` its ``attention(state)`` gives
the step's weights, cells first (R of them, row-major), then any extra slot (the Transformer's global position),
and its ``attention_note`` says what they are. Maps and correctness use the cells' weights only; for the
Transformer those are the last decoder layer's cross-attention averaged over heads, and what the global slot
received is left out (the figures say so).

Dimension legend: N images, L most words decoded, R grid cells.
"""
import numpy as np

from core.decoding import greedy_decode
from core.evaluation.attention_correctness import attention_correctness


class AttentionRecorder:
    """A decodable model that also records, for every original row, each step's attention over the cells.

    It follows rows through ``reorder_state`` (greedy decoding drops finished captions from the state), so
    ``weights[n, t]`` is what row n's word t looked at; steps after a caption's <END> stay zero.
    """

    def __init__(self, model, num_rows, max_length, num_cells):
        self.model, self.num_cells = model, num_cells
        self.null_idx, self.start_idx, self.end_idx = model.null_idx, model.start_idx, model.end_idx
        self.weights = np.zeros((num_rows, max_length, num_cells), dtype=np.float32)  # (N, L, R)
        self.rows, self.step = np.arange(num_rows), 0

    def init_decode(self, features):
        return self.model.init_decode(features)

    def decode_step(self, tokens, state):
        log_probs, state = self.model.decode_step(tokens, state)
        self.weights[self.rows, self.step] = self.model.attention(state)[:, :self.num_cells]  # (M, R)
        self.step += 1
        return log_probs, state

    def reorder_state(self, state, index):
        self.rows = self.rows[index]
        return self.model.reorder_state(state, index)


def greedy_with_attention(model, features, max_length, num_cells):
    """Greedy captions (N, L) of features (N, ...) and each word's attention over the cells, (N, L, R)."""
    recorder = AttentionRecorder(model, len(features), max_length, num_cells)
    captions = greedy_decode(recorder, np.asarray(features, dtype=np.float32), max_length)
    return captions, recorder.weights


def words_of(ids, idx_to_word, end_idx):
    """The words of one decoded row (L,) up to and including its <END>, for the panels of a map."""
    words = []
    for i in ids.tolist():
        words.append(idx_to_word[i])
        if i == end_idx:
            break
    return words


def correctness_of(model, features, images, captions_text, scenes, max_length, num_cells, image_size,
                   batch_size=500):
    """Attention correctness (``core.evaluation.attention_correctness``) of greedy captions of ``images`` (their rows in
    ``features``), with the uniform-attention baseline; ``captions_text`` maps image row -> greedy caption.

    Each word's weights over the cells are renormalised to sum to 1: the Transformer's global position, which
    has no place in the image, takes the rest, and ``cell_share`` reports how much the cells got on average.
    """
    attentions, shares = {}, []
    for start in range(0, len(images), batch_size):
        rows = images[start:start + batch_size]
        ids, weights = greedy_with_attention(model, features[rows], max_length, num_cells)
        for row, row_ids, row_weights in zip(rows.tolist(), ids, weights):
            length = len(words_of(row_ids, model.idx_to_word, model.end_idx))
            mass = row_weights[:length].sum(axis=1, keepdims=True)  # (length, 1)
            shares.append(mass.ravel())
            attentions[row] = row_weights[:length] / np.maximum(mass, 1e-12)
    predictions = {row: captions_text[row] for row in attentions}
    result = attention_correctness(predictions, attentions, {row: scenes[row] for row in attentions},
                                   image_size=image_size)
    return dict(result, cell_share=float(np.concatenate(shares).mean()) if shares else float("nan"))
