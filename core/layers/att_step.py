"""Numpy layers of soft ("Show, Attend and Tell", Xu et al. 2015) attention over a grid of image cells, one step
at a time: one attention step, one attention-LSTM step, and the doubly stochastic penalty. They are the readable
reference and serve decoding; core.layers.att_lstm computes the same equations over a whole caption batch fast.

Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward`` takes the upstream gradient and that cache;
the penalty, a loss, returns its value and gradient at once (like core.layers.rnn.temporal_softmax_loss).

Dimension legend: N batch, T time steps, R grid cells, C cell channels, A attention width, H hidden width,
W word vector width. LSTM gates are stacked in the order i, f, o, g, as in core.layers.rnn.

The equations, for cells a of shape (N, R, C) and the previous hidden state h_{t-1}:
    pa = a @ W_att + b_att                          (N, R, A), once per batch (the caller's affine layer)
    e_ti = w_att . tanh(pa_i + h_{t-1} @ W_att_h)   (N, R)
    alpha_t = softmax over i of e_t                 (N, R), sums to 1 over the cells
    z_t = sum_i alpha_ti a_i                        (N, C), the context
    beta_t = sigmoid(h_{t-1} @ W_beta + b_beta)     (N, 1), the optional gate: one scalar per row
    h_t, c_t = LSTM([x_t, beta_t z_t], h_{t-1}, c_{t-1})   with Wx of shape (W + C, 4H)

The recurrent weights travel as one dict ``weights`` with the keys W_att_h (H, A), w_att (A,), Wx (W + C, 4H),
Wh (H, 4H), b (4H,), and, for the gated model, W_beta (H, 1) and b_beta (1,); the gate runs exactly when
``weights`` holds W_beta. Backward functions return the gradients as a dict with the same keys.
Arrays keep the dtype of their inputs (float32 stays float32); every function takes the Array API namespace of
its inputs (core.runtime.arrays), as core.layers.rnn does.
"""
from core.layers.rnn import lstm_step_backward, lstm_step_forward, sigmoid
from core.runtime.arrays import namespace

RECURRENT_KEYS = ("W_att_h", "w_att", "Wx", "Wh", "b")
GATE_KEYS = ("W_beta", "b_beta")


def weight_keys(weights):
    """The keys of ``weights`` that the attention LSTM uses: the gate's too when it holds W_beta."""
    return RECURRENT_KEYS + (GATE_KEYS if "W_beta" in weights else ())


def softmax_cells(e):
    """Softmax over the last axis of scores e of shape (..., R); the max shift keeps exp from overflowing."""
    xp = namespace(e)
    alpha = xp.exp(e - xp.max(e, axis=-1, keepdims=True))
    alpha /= xp.sum(alpha, axis=-1, keepdims=True)
    return alpha


def softmax_cells_backward(dalpha, alpha):
    """The scores' gradient, of shape (..., R), from the weights' gradient dalpha and the weights alpha."""
    return alpha * (dalpha - namespace(alpha, dalpha).sum(alpha * dalpha, axis=-1, keepdims=True))


def attention_step_forward(a, pa, prev_h, W_att_h, w_att):
    """Where one step looks: attention weights over the cells and the context they give.

    Inputs: a of shape (N, R, C), the cells; pa of shape (N, R, A), their projection a @ W_att + b_att;
    prev_h of shape (N, H); W_att_h of shape (H, A); w_att of shape (A,).
    Returns: z of shape (N, C), the context; alpha of shape (N, R); cache for attention_step_backward.
    """
    u = namespace(a, pa, prev_h).tanh(pa + (prev_h @ W_att_h)[:, None, :])  # (N, H) @ (H, A) -> (N, 1, A)
    alpha = softmax_cells(u @ w_att)  # (N, R, A) @ (A,) -> (N, R)
    z = (alpha[:, None, :] @ a)[:, 0, :]  # (N, 1, R) @ (N, R, C) -> (N, 1, C) -> (N, C)
    return z, alpha, (a, prev_h, W_att_h, w_att, u, alpha)


def attention_step_backward(dz, dalpha, cache):
    """Backward of attention_step_forward.

    Inputs: dz of shape (N, C); dalpha of shape (N, R), the weights' gradient from elsewhere (the penalty);
    cache.
    Returns: da of shape (N, R, C), dpa (N, R, A), dprev_h (N, H), dW_att_h (H, A), dw_att (A,).
    """
    a, prev_h, W_att_h, w_att, u, alpha = cache
    xp = namespace(dz, a)
    dalpha = dalpha + (a @ dz[:, :, None])[:, :, 0]  # (N, R, C) @ (N, C, 1) -> (N, R, 1) -> (N, R)
    de = softmax_cells_backward(dalpha, alpha)
    da = alpha[:, :, None] * dz[:, None, :]  # (N, R, 1) * (N, 1, C) -> (N, R, C)
    dpa = de[:, :, None] * w_att * (1 - u ** 2)  # (N, R, 1) * (A,) * (N, R, A) -> (N, R, A)
    dhp = xp.sum(dpa, axis=1)  # (N, R, A) -> (N, A)
    A = w_att.shape[0]
    dw_att = xp.reshape(u, (-1, A)).T @ xp.reshape(de, (-1,))  # (A, N*R) @ (N*R,) -> (A,)
    return da, dpa, dhp @ W_att_h.T, prev_h.T @ dhp, dw_att  # (N, A) @ (A, H); (H, N) @ (N, A)


def att_lstm_step_forward(x, prev_h, prev_c, a, pa, weights):
    """One step of the attention LSTM: attend, gate the context, run the LSTM on [x, gated context].

    Inputs: x of shape (N, W), the word vectors; prev_h and prev_c of shape (N, H); a of shape (N, R, C);
    pa of shape (N, R, A), a @ W_att + b_att; weights, the dict of the module docstring.
    Returns: next_h and next_c of shape (N, H); alpha of shape (N, R), where this step looked;
    cache for att_lstm_step_backward.
    """
    z, alpha, att_cache = attention_step_forward(a, pa, prev_h, weights["W_att_h"], weights["w_att"])
    beta = None
    if "W_beta" in weights:
        beta = sigmoid(prev_h @ weights["W_beta"] + weights["b_beta"])  # (N, H) @ (H, 1) -> (N, 1)
        z_in = beta * z
    else:
        z_in = z
    x_in = namespace(x, z_in).concat([x, z_in], axis=1)  # (N, W) and (N, C) -> (N, W + C)
    next_h, next_c, lstm_cache = lstm_step_forward(x_in, prev_h, prev_c, weights["Wx"], weights["Wh"],
                                                   weights["b"])
    return next_h, next_c, alpha, (att_cache, lstm_cache, prev_h, z, beta, weights, x.shape[1])


def att_lstm_step_backward(dnext_h, dnext_c, dalpha, cache):
    """Backward of att_lstm_step_forward.

    Inputs: dnext_h and dnext_c of shape (N, H); dalpha of shape (N, R); cache.
    Returns: dx of shape (N, W), dprev_h (N, H), dprev_c (N, H), da (N, R, C), dpa (N, R, A), and the dict of
    the weights' gradients.
    """
    att_cache, lstm_cache, prev_h, z, beta, weights, W = cache
    grads = {}
    dx_in, dprev_h, dprev_c, grads["Wx"], grads["Wh"], grads["b"] = lstm_step_backward(dnext_h, dnext_c,
                                                                                       lstm_cache)
    dz = dx_in[:, W:]
    if beta is not None:
        xp = namespace(dz, z)
        dbeta = xp.sum(dz * z, axis=1, keepdims=True) * beta * (1 - beta)  # through the sigmoid, (N, 1)
        dz = dz * beta
        grads["W_beta"] = prev_h.T @ dbeta  # (H, N) @ (N, 1) -> (H, 1)
        grads["b_beta"] = xp.sum(dbeta, axis=0)
        dprev_h += dbeta @ weights["W_beta"].T  # (N, 1) @ (1, H) -> (N, H)
    da, dpa, dprev_h_att, grads["W_att_h"], grads["w_att"] = attention_step_backward(dz, dalpha, att_cache)
    return dx_in[:, :W], dprev_h + dprev_h_att, dprev_c, da, dpa, grads


def doubly_stochastic_penalty(alpha, lam):
    """The doubly stochastic penalty lam * sum over cells of (1 - sum over steps of alpha)^2, averaged over
    the batch: it asks every cell to receive, over the caption, about one step's worth of attention.

    Inputs: alpha of shape (N, T, R), zero at the steps a row does not run (as att_lstm_forward returns it), so
    only the steps a row runs count; lam, a float >= 0.
    Returns: penalty, a float; dalpha of shape (N, T, R), its gradient.
    """
    xp, N = namespace(alpha), alpha.shape[0]
    missing = 1 - xp.sum(alpha, axis=1)  # (N, T, R) -> (N, R)
    penalty = lam * float(xp.sum(missing ** 2)) / N
    dalpha = xp.broadcast_to((-2 * lam / N) * missing[:, None, :], alpha.shape)  # (N, 1, R) -> (N, T, R)
    return penalty, xp.astype(dalpha, alpha.dtype)
