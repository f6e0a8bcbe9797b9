"""Caption decoding written once for every model, over a small step interface.

A decodable model has integer attributes ``null_idx``, ``start_idx``, ``end_idx`` and three methods,
with numpy arrays at the boundary:

    state = model.init_decode(features)           # features of shape (N, D) -> state for N rows
    log_probs, state = model.decode_step(tokens, state)
                                                   # tokens of shape (N,) int: the previous word of each row
                                                   # log_probs of shape (N, V): log-softmax of the next word
    state = model.reorder_state(state, index)      # index of shape (M,) int: new row i is old row index[i]

``state`` is opaque here (hidden vectors for the RNNs, a key/value cache for the Transformer).
Beam search treats beams as extra rows of the batch and uses ``reorder_state`` to follow them.

Dimension legend: N images, D feature width, V vocabulary size, L max caption length.
"""
import numpy as np


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
    N = features.shape[0]
    captions = np.full((N, max_length), model.null_idx, dtype=np.int64)
    tokens = np.full(N, model.start_idx, dtype=np.int64)
    alive = np.ones(N, dtype=bool)
    state = model.init_decode(features)
    for t in range(max_length):
        log_probs, state = model.decode_step(tokens, state)
        tokens = np.argmax(log_probs, axis=1)
        captions[alive, t] = tokens[alive]
        alive &= tokens != model.end_idx
        if not alive.any():
            break
    return captions
