"""Numpy layers around the recurrence of a captioner: the affine map (image features to the initial hidden state),
the word embedding, the same affine map at every time step (hidden states to word scores), the softmax loss, and the two
together as the loss of the next words (``word_loss``).

Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward`` takes the upstream gradient and that cache;
the loss returns its value and gradient at once.

Dimension legend: N batch, T time steps, D input width, M output width, V vocabulary size.
Arrays keep the dtype of their inputs (float32 stays float32).
"""
import numpy as np


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
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)  # (N, M) @ (M, D); (D, N) @ (N, M)


def word_embedding_forward(x, W):
    """Look up word vectors.

    Inputs: x of shape (N, T), integer word indices in [0, V); W of shape (V, D).
    Returns: out of shape (N, T, D), cache for word_embedding_backward.
    """
    return W[x], (x, W.shape, W.dtype)


def word_embedding_backward(dout, cache):
    """Backward of word_embedding_forward (the indices get no gradient).

    Inputs: dout of shape (N, T, D), cache.
    Returns: dW of shape (V, D).
    """
    x, shape, dtype = cache
    dW = np.zeros(shape, dtype=dtype)
    np.add.at(dW, x.ravel(), dout.reshape(-1, shape[1]))  # repeated words must accumulate, hence add.at
    return dW


def temporal_affine_forward(x, w, b):
    """The same affine map at every time step.

    Inputs: x of shape (N, T, D), w of shape (D, M), b of shape (M,).
    Returns: out of shape (N, T, M), cache for temporal_affine_backward.
    """
    N, T, D = x.shape
    out = (x.reshape(N * T, D) @ w).reshape(N, T, -1)  # (N*T, D) @ (D, M) -> (N, T, M)
    out += b
    return out, (x, w)


def temporal_affine_backward(dout, cache):
    """Backward of temporal_affine_forward.

    Inputs: dout of shape (N, T, M), cache.
    Returns: dx of shape (N, T, D), dw (D, M), db (M,).
    """
    x, w = cache
    N, T, D = x.shape
    flat = dout.reshape(N * T, -1)
    dx = (flat @ w.T).reshape(N, T, D)  # (N*T, M) @ (M, D) -> (N, T, D)
    dw = x.reshape(N * T, D).T @ flat  # (D, N*T) @ (N*T, M) -> (D, M)
    return dx, dw, flat.sum(axis=0)


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Softmax cross-entropy summed over the unmasked time steps, divided by N.

    Inputs: x of shape (N, T, V), scores; y of shape (N, T), target indices in [0, V);
    mask of shape (N, T), true (or 1) where the step counts; verbose: print the gradient's shape (CS231n's
    signature has it, for debugging).
    Returns: loss, a float; dx of shape (N, T, V), the gradient of the loss.
    """
    N, T, V = x.shape
    flat = x.reshape(N * T, V)
    rows, targets = np.arange(N * T), y.ravel()
    maxes = flat.max(axis=1)
    probs = flat - maxes[:, None]  # the max shift keeps exp from overflowing
    target_logits = probs[rows, targets]
    np.exp(probs, out=probs)
    sums = probs.sum(axis=1)
    weights = mask.ravel().astype(x.dtype)
    loss = -float(np.dot(weights, target_logits - np.log(sums))) / N
    # dx = weight / N * (softmax - onehot(y)): normalising and weighting fused into one pass.
    probs *= (weights / N / sums)[:, None]
    probs[rows, targets] -= weights / N
    if verbose:
        print(f"dx, flattened: {probs.shape}")
    return loss, probs.reshape(N, T, V)


def word_loss(h, targets, weights, W_vocab, b_vocab, keep):
    """The next words' cross-entropy, each word weighted, summed and divided by N; words outside ``keep`` (the
    <NULL> targets) are not scored at all. Training weights the words by 1; a policy gradient by its advantages.

    Inputs: h of shape (N, T, H); targets of shape (N, T), word indices; weights of shape (N, T);
    W_vocab of shape (H, V); b_vocab of shape (V,); keep of shape (N, T), bool.
    Returns: loss, a float; dh of shape (N, T, H), dW_vocab (H, V), db_vocab (V,).
    """
    # The M kept positions go through the temporal layers as one sequence, (1, M, H).
    scores, cache = temporal_affine_forward(h[keep][None], W_vocab, b_vocab)
    loss, dscores = temporal_softmax_loss(scores, targets[keep][None], weights[keep][None])
    N = h.shape[0]
    dh_kept, dW_vocab, db_vocab = temporal_affine_backward(dscores / N, cache)
    dh = np.zeros_like(h)
    dh[keep] = dh_kept[0]
    return loss / N, dh, dW_vocab, db_vocab
