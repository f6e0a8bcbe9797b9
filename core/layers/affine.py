"""Numpy layers around the recurrence of a captioner: the affine map (image features to the initial hidden state),
the word embedding, the same affine map at every time step (hidden states to word scores), the softmax loss, and the two
together as the loss of the next words (``word_loss``).

Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward`` takes the upstream gradient and that cache;
the loss returns its value and gradient at once. Every function takes the Array API namespace of its inputs
(core.runtime.arrays): numpy arrays, torch tensors or CuPy arrays, word indices and masks of the same library.

Dimension legend: N batch, T time steps, D input width, M output width, V vocabulary size.
Arrays keep the dtype of their inputs (float32 stays float32).
"""
from core.runtime.arrays import device_of, namespace, ops


def affine_forward(x, w, b):
    """An affine map.

    Inputs: x of shape (N, D), w of shape (D, M), b of shape (M,).
    Returns: out of shape (N, M), cache for affine_backward.
    """
    return x @ w + b, (x, w)  # (N, D) @ (D, M) -> (N, M)


def affine_backward(dout, cache):
    """Backward of affine_forward.

    Inputs: dout of shape (N, M), cache.
    Returns: dx of shape (N, D), dw (D, M), db (M,).
    """
    x, w = cache
    return dout @ w.T, x.T @ dout, namespace(dout).sum(dout, axis=0)  # (N, M) @ (M, D); (D, N) @ (N, M)


def word_embedding_forward(x, W):
    """Look up word vectors.

    Inputs: x of shape (N, T), integer word indices in [0, V); W of shape (V, D).
    Returns: out of shape (N, T, D), cache for word_embedding_backward.
    """
    xp = namespace(x, W)
    out = xp.take(W, xp.reshape(x, (-1,)), axis=0)  # (N*T, D)
    return xp.reshape(out, (*x.shape, W.shape[1])), (x, W)  # (N*T, D) -> (N, T, D)


def word_embedding_backward(dout, cache):
    """Backward of word_embedding_forward (the indices get no gradient).

    Inputs: dout of shape (N, T, D), cache.
    Returns: dW of shape (V, D).
    """
    x, W = cache
    xp = namespace(dout, x)
    dW = xp.zeros(W.shape, dtype=W.dtype, device=device_of(W))
    # (N, T) -> (N*T,); (N, T, D) -> (N*T, D); repeated words must accumulate
    return ops(xp).add_rows_at(dW, xp.reshape(x, (-1,)), xp.reshape(dout, (-1, W.shape[1])))


def temporal_affine_forward(x, w, b):
    """The same affine map at every time step.

    Inputs: x of shape (N, T, D), w of shape (D, M), b of shape (M,).
    Returns: out of shape (N, T, M), cache for temporal_affine_backward.
    """
    xp = namespace(x, w, b)
    N, T, D = x.shape
    out = xp.reshape(xp.reshape(x, (N * T, D)) @ w, (N, T, -1))  # (N*T, D) @ (D, M) -> (N, T, M)
    out += b
    return out, (x, w)


def temporal_affine_backward(dout, cache):
    """Backward of temporal_affine_forward.

    Inputs: dout of shape (N, T, M), cache.
    Returns: dx of shape (N, T, D), dw (D, M), db (M,).
    """
    x, w = cache
    xp = namespace(dout, x)
    N, T, D = x.shape
    flat = xp.reshape(dout, (N * T, -1))  # (N, T, M) -> (N*T, M)
    dx = xp.reshape(flat @ w.T, (N, T, D))  # (N*T, M) @ (M, D) -> (N, T, D)
    dw = xp.reshape(x, (N * T, D)).T @ flat  # (D, N*T) @ (N*T, M) -> (D, M)
    return dx, dw, xp.sum(flat, axis=0)


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Softmax cross-entropy summed over the unmasked time steps, divided by N.

    Inputs: x of shape (N, T, V), scores; y of shape (N, T), target indices in [0, V);
    mask of shape (N, T), true (or 1) where the step counts; verbose: print the gradient's shape (CS231n's
    signature has it, for debugging).
    Returns: loss, a float; dx of shape (N, T, V), the gradient of the loss.
    """
    xp = namespace(x, y, mask)
    N, T, V = x.shape
    flat = xp.reshape(x, (N * T, V))
    targets = xp.astype(xp.reshape(y, (-1,)), xp.int64, copy=False)  # (N, T) -> (N*T,); torch gathers by int64
    maxes = xp.max(flat, axis=1)
    probs = flat - maxes[:, None]  # the max shift keeps exp from overflowing
    target_logits = xp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]  # (N*T, 1) -> (N*T,)
    ops(xp).exp(probs, out=probs)
    sums = xp.sum(probs, axis=1)
    weights = xp.astype(xp.reshape(mask, (-1,)), x.dtype)  # (N, T) -> (N*T,)
    loss = -float(weights @ (target_logits - xp.log(sums))) / N  # (N*T,) @ (N*T,) -> ()
    # dx = weight / N * (softmax - onehot(y)): normalising and weighting fused into one pass.
    probs *= (weights / N / sums)[:, None]
    ops(xp).subtract_at_columns(probs, targets, weights / N)
    if verbose:
        print(f"dx, flattened: {tuple(probs.shape)}")
    return loss, xp.reshape(probs, (N, T, V))  # (N*T, V) -> (N, T, V)


def word_loss(h, targets, weights, W_vocab, b_vocab, keep):
    """The next words' cross-entropy, each word weighted, summed and divided by N; words outside ``keep`` (the
    <NULL> targets) are not scored at all. Training weights the words by 1; a policy gradient by its advantages.

    Inputs: h of shape (N, T, H); targets of shape (N, T), word indices; weights of shape (N, T);
    W_vocab of shape (H, V); b_vocab of shape (V,); keep of shape (N, T), bool.
    Returns: loss, a float; dh of shape (N, T, H), dW_vocab (H, V), db_vocab (V,).
    """
    # The M kept positions go through the temporal layers as one sequence, (1, M, H).
    scores, cache = temporal_affine_forward(h[keep][None, ...], W_vocab, b_vocab)
    loss, dscores = temporal_softmax_loss(scores, targets[keep][None, ...], weights[keep][None, ...])
    N = h.shape[0]
    dh_kept, dW_vocab, db_vocab = temporal_affine_backward(dscores / N, cache)
    dh = namespace(h).zeros_like(h)
    dh[keep] = dh_kept[0, ...]
    return loss / N, dh, dW_vocab, db_vocab
