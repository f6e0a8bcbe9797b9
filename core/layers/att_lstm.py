"""Numpy layers of soft ("Show, Attend and Tell", Xu et al. 2015) attention over a grid of image cells: one
attention step, one attention-LSTM step, the same over a whole caption batch, and the doubly stochastic penalty.

The step functions are the readable reference and serve decoding. ``att_lstm_forward``/``att_lstm_backward``
compute the same equations over a batch fast, the way core.layers.rnn.lstm_forward computes the plain LSTM: given
``lengths``, only the steps each row runs (core.layers.packing); the word part of the input projection is one
matmul for all steps before the loop; the three products of h_{t-1} (LSTM gates, attention, gate beta) are one
matmul per step with the weights side by side, in both directions; the weight gradients and the cells' gradient
are big matmuls after the backward loop, and the gradient of pa is summed over the steps before w_att multiplies
it, once.

Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward`` takes the upstream gradient and that cache;
the penalty, a loss, returns its value and gradient at once (like core.layers.rnn.temporal_softmax_loss).

Dimension legend: N batch, T time steps, R grid cells, C cell channels, A attention width, H hidden width,
W word vector width, P positions computed (the sum of the lengths), K = 4H + A (+ 1 with the gate) the width
of the recurrent product. LSTM gates are stacked in the order i, f, o, g, as in core.layers.rnn.

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
from core.layers.packing import Packing
from core.layers.rnn import (
    lstm_gate_scale,
    lstm_gates_backward,
    lstm_gates_forward,
    lstm_step_backward,
    lstm_step_forward,
    recurrent_weight_gradient,
    sigmoid,
)
from core.runtime.arrays import device_of, namespace, ops

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


def _check_sequence(x, a, pa, h0, c0, weights):
    """Raise ValueError unless the shapes fit together as att_lstm_forward documents them."""
    if x.ndim != 3 or x.shape[1] < 1 or a.ndim != 3 or a.shape[0] != x.shape[0] or h0.ndim != 2:
        raise ValueError(f"expected x of shape (N, T, W) with T >= 1, a of shape (N, R, C) and h0 of shape (N, H), "
                         f"got {x.shape}, {a.shape} and {h0.shape}")
    (N, _, W), (_, R, C), H, A = x.shape, a.shape, h0.shape[1], weights["w_att"].shape[0]
    expected = {"pa": (N, R, A), "h0": (N, H), "c0": (N, H), "W_att_h": (H, A), "w_att": (A,),
                "Wx": (W + C, 4 * H), "Wh": (H, 4 * H), "b": (4 * H,), "W_beta": (H, 1), "b_beta": (1,)}
    arrays = {"pa": pa, "h0": h0, "c0": c0, **{key: weights[key] for key in weight_keys(weights)}}
    for name, array in arrays.items():
        if array.shape != expected[name]:
            raise ValueError(f"expected {name} of shape {expected[name]}, got {array.shape}")


def _recurrent_weights(weights, gate_scale=1):
    """The weights h_{t-1} multiplies, side by side: Wh (gate columns times gate_scale), W_att_h, W_beta; (H, K)."""
    parts = [weights["Wh"] * gate_scale, weights["W_att_h"]] + ([weights["W_beta"]] if "W_beta" in weights else [])
    return namespace(*parts).concat(parts, axis=1)


def att_lstm_forward(x, a, pa, h0, c0, weights, lengths=None):
    """The attention LSTM over a whole sequence.

    Inputs: x of shape (N, T, W), the word vectors; a of shape (N, R, C), the cells; pa of shape (N, R, A),
    a @ W_att + b_att; h0 and c0 of shape (N, H); weights, the dict of core.layers.att_lstm;
    lengths of shape (N,), optional: row n runs lengths[n] steps (see core.layers.packing), default T.
    Returns: h of shape (N, T, H), the hidden state at every step, and alpha of shape (N, T, R), where each
    step looked (both zero past a row's length); cache for att_lstm_backward.
    """
    _check_sequence(x, a, pa, h0, c0, weights)
    arrays = (x, a, pa, h0, c0, *(weights[key] for key in weight_keys(weights)))
    xp, device = namespace(*arrays), device_of(x)
    pack = Packing.of(lengths, *x.shape[:2])
    dtype = xp.result_type(*arrays)
    W, (_, R, C), H = x.shape[2], a.shape, h0.shape[1]
    scale = lstm_gate_scale(H, dtype, x)
    x_packed = pack.pack(x)
    # scaled pre-activations, turned into the gate values i, f, o, g in place
    gates = x_packed @ (weights["Wx"][:W, :] * scale)  # (P, W) @ (W, 4H) -> (P, 4H)
    gates += weights["b"] * scale
    a, pa, h0, c0 = (pack.sort_rows(array) for array in (a, pa, h0, c0))
    P, A = gates.shape[0], pa.shape[2]
    shapes = {"u": (P, R, A), "alpha": (P, R), "z": (P, C), "c": (P, H), "tanh_c": (P, H), "h": (P, H)}
    buffers = {name: xp.empty(shape, dtype=dtype, device=device) for name, shape in shapes.items()}
    buffers["beta"] = xp.empty((P, 1), dtype=dtype, device=device) if "W_beta" in weights else None
    W_rec, W_ctx = _recurrent_weights(weights, scale), weights["Wx"][W:, :] * scale
    prev_h, prev_c = h0, c0
    with ops(xp).quiet_overflow():  # exp(large) = inf is fine: 1 / (1 + inf) = 0, the right limit
        for t in range(pack.steps):
            n, rows = pack.step(t)
            step_buffers = {name: None if array is None else array[rows, ...] for name, array in buffers.items()}
            _step_forward(prev_h[:n, :], prev_c[:n, :], a[:n, ...], pa[:n, ...], gates[rows, :], W_rec, W_ctx,
                          weights, step_buffers)
            prev_h, prev_c = buffers["h"][rows, :], buffers["c"][rows, :]
    cache = (x_packed, a, h0, c0, weights, gates, buffers, pack)
    return pack.unpack(buffers["h"]), pack.unpack(buffers["alpha"]), cache


def _step_forward(prev_h, prev_c, a, pa, gates, W_rec, W_ctx, weights, out):
    """One step for the n rows still running, written into ``out`` (views of the sequence's buffers).

    Inputs: prev_h, prev_c (n, H); a (n, R, C); pa (n, R, A); gates (n, 4H), the word part of the scaled
    pre-activations, turned into the gate values in place; W_rec (H, K); W_ctx (C, 4H), scaled.
    Outputs: u (n, R, A), the tanh of the attention; alpha (n, R); z (n, C); beta (n, 1) or None; c, tanh_c, h (n, H).
    """
    xp, kernels = namespace(prev_h, pa), ops(namespace(prev_h, pa))
    H, A = prev_h.shape[1], pa.shape[2]
    rec = prev_h @ W_rec  # (n, H) @ (H, K) -> (n, K)
    u = out["u"]
    kernels.add(pa, rec[:, None, 4 * H:4 * H + A], out=u)  # (n, R, A) + (n, 1, A)
    kernels.tanh(u, out=u)
    scores = xp.reshape(xp.reshape(u, (-1, A)) @ weights["w_att"], (u.shape[0], -1))  # (n*R, A) @ (A,) -> (n, R)
    out["alpha"][...] = softmax_cells(scores)
    out["z"][...] = (out["alpha"][:, None, :] @ a)[:, 0, :]  # (n, 1, R) @ (n, R, C) -> (n, 1, C) -> (n, C)
    z_in = out["z"]
    if out["beta"] is not None:
        out["beta"][...] = sigmoid(rec[:, -1:] + weights["b_beta"])
        z_in = z_in * out["beta"]
    recurrent = z_in @ W_ctx  # (n, C) @ (C, 4H) -> (n, 4H)
    recurrent += rec[:, :4 * H]
    lstm_gates_forward(gates, recurrent, prev_c, out["c"], out["tanh_c"], out["h"])


def att_lstm_backward(dh, dalpha, cache):
    """Backward of att_lstm_forward.

    Inputs: dh of shape (N, T, H) and dalpha of shape (N, T, R), the upstream gradients of the hidden states and
    of the attention weights (both ignored past a row's length); cache.
    Returns: dx of shape (N, T, W), da (N, R, C), dpa (N, R, A), dh0 (N, H), dc0 (N, H), and the dict of the
    weights' gradients.
    """
    x_packed, a, h0, c0, weights, gates, buffers, pack = cache
    xp = namespace(dh, dalpha, gates)
    (N, R, C), H, (P, A) = a.shape, h0.shape[1], (gates.shape[0], weights["w_att"].shape[0])
    dh, dalpha = pack.pack(dh), pack.pack(dalpha)
    W_rec = _recurrent_weights(weights)

    def empty(*shape):
        return xp.empty(shape, dtype=gates.dtype, device=device_of(gates))

    # Columns as in the recurrent product: the gates' pre-activation gradients, then the attention's and beta's.
    drec, dz, de = empty(P, W_rec.shape[1]), empty(P, C), empty(P, R)
    # Row j holds h_t's and c_t's gradients through step t + 1; rows not yet running at t + 1 stay zero.
    dprev_h, dc = xp.zeros_like(h0, dtype=gates.dtype), xp.zeros_like(h0, dtype=gates.dtype)
    # The sum over steps of (1 - u^2) de: pa's gradient before w_att multiplies it, once, after the loop.
    dpa = xp.zeros((N, R, A), dtype=gates.dtype, device=device_of(gates))
    scratch = {"lstm": empty(N, 3 * H), "att": empty(N, R, A)}
    W_ctx_T = weights["Wx"][x_packed.shape[1]:, :].T
    for t in reversed(range(pack.steps)):
        n, rows = pack.step(t)
        saved = {name: None if array is None else array[rows, ...] for name, array in buffers.items()}
        saved["gates"] = gates[rows, :]
        saved["prev_c"] = c0[:n, :] if t == 0 else buffers["c"][pack.block(t - 1), :][:n, :]
        _step_backward(dh[rows, :], dalpha[rows, :], dprev_h[:n, :], dc[:n, :], a[:n, ...], W_rec, W_ctx_T, weights,
                       saved, {"drec": drec[rows, :], "dz": dz[rows, :], "de": de[rows, :], "dpa": dpa[:n, ...]},
                       {name: array[:n, ...] for name, array in scratch.items()})
    dpa *= weights["w_att"]
    # (N, T, R) -> (N, R, T); (N, R, T) @ (N, T, C) -> (N, R, C)
    da = xp.permute_dims(pack.unpack(buffers["alpha"]), (0, 2, 1)) @ pack.unpack(dz)
    dx, grads = _weight_gradients(drec, de, x_packed, h0, buffers, weights, pack)
    return dx, da, pack.unsort_rows(dpa), pack.unsort_rows(dprev_h), pack.unsort_rows(dc), grads


def _step_backward(dh, dalpha, dh_next, dc, a, W_rec, W_ctx_T, weights, saved, out, scratch):
    """One step backward for the n rows running at it, written into ``out`` (views of the sequence's buffers).

    Inputs: dh (n, H) and dalpha (n, R), the upstream gradients at this step; dh_next (n, H), h_t's gradient
    through step t + 1, turned into h_{t-1}'s; dc (n, H), c_t's, turned into c_{t-1}'s; a (n, R, C);
    W_rec (H, K); W_ctx_T (4H, C), unscaled; saved: this step's forward buffers, its gate values and prev_c.
    Outputs: drec (n, K), the recurrent product's gradient; dz (n, C), the context's; de (n, R), the scores';
    dpa (n, R, A), to which this step's (1 - u^2) de is added.
    """
    xp = namespace(dh, a)
    kernels = ops(xp)
    H, A = dh.shape[1], weights["w_att"].shape[0]
    drec, dz = out["drec"], out["dz"]
    lstm_gates_backward(dh, dh_next, dc, saved["gates"], saved["prev_c"], saved["tanh_c"], drec[:, :4 * H],
                        scratch["lstm"])
    kernels.matmul(drec[:, :4 * H], W_ctx_T, out=dz)  # (n, 4H) @ (4H, C) -> (n, C), the gated context's gradient
    if saved["beta"] is not None:
        beta = saved["beta"]
        drec[:, -1:] = xp.sum(dz * saved["z"], axis=1, keepdims=True) * beta * (1 - beta)
        dz *= beta
    dalpha = dalpha + (a @ dz[:, :, None])[:, :, 0]  # (n, R, C) @ (n, C, 1) -> (n, R, 1) -> (n, R)
    out["de"][...] = softmax_cells_backward(dalpha, saved["alpha"])
    u, q = saved["u"], scratch["att"]
    kernels.multiply(u, u, out=q)
    kernels.subtract(1, q, out=q)  # tanh' = 1 - u^2
    q *= out["de"][:, :, None]
    out["dpa"] += q
    kernels.multiply(xp.sum(q, axis=1), weights["w_att"], out=drec[:, 4 * H:4 * H + A])  # (n, R, A) -> (n, A)
    kernels.matmul(drec, W_rec.T, out=dh_next)  # (n, K) @ (K, H) -> (n, H)


def _weight_gradients(drec, de, x_packed, h0, buffers, weights, pack):
    """The word vectors' gradient, of shape (N, T, W), and the weights' gradients, each one matmul over all
    positions, from the recurrent product's gradient drec (P, K) and the scores' gradient de (P, R)."""
    xp = namespace(drec, de)
    H, W = h0.shape[1], x_packed.shape[1]
    P, R, A = buffers["u"].shape
    dgates = drec[:, :4 * H]
    dW_rec = recurrent_weight_gradient(drec, h0, buffers["h"], pack)  # (H, K)
    z_in = buffers["z"] if buffers["beta"] is None else buffers["z"] * buffers["beta"]
    grads = {"Wh": dW_rec[:, :4 * H], "W_att_h": dW_rec[:, 4 * H:4 * H + A],
             "Wx": xp.concat([x_packed.T @ dgates, z_in.T @ dgates]),  # (W, P), (C, P) @ (P, 4H) -> (W + C, 4H)
             "b": xp.sum(dgates, axis=0),
             "w_att": xp.reshape(buffers["u"], (P * R, A)).T @ xp.reshape(de, (P * R,))}  # (A, P*R) @ (P*R,) -> (A,)
    if buffers["beta"] is not None:
        grads["W_beta"], grads["b_beta"] = dW_rec[:, -1:], xp.sum(drec[:, -1], keepdims=True)
    dx = pack.unpack(dgates @ weights["Wx"][:W, :].T)  # (P, 4H) @ (4H, W) -> (P, W) -> (N, T, W)
    return dx, grads
