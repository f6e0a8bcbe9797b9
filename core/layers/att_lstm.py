"""Numpy layers of soft attention over a grid of image cells (the equations, keys and weights of
core.layers.att_step), over a whole caption batch: ``att_lstm_forward``/``att_lstm_backward``, and, from
core.layers.att_step, the one-step layers and the doubly stochastic penalty.

The batch functions compute the steps' equations fast, the way core.layers.rnn.lstm_forward computes the plain
LSTM: given ``lengths``, only the steps each row runs (core.layers.packing); the word part of the input projection
is one matmul for all steps before the loop; the three products of h_{t-1} (LSTM gates, attention, gate beta) are
one matmul per step with the weights side by side, in both directions; the weight gradients and the cells'
gradient are big matmuls after the backward loop, and the gradient of pa is summed over the steps before w_att
multiplies it, once. Off numpy, the tanh of the attention is recomputed backward rather than kept (see
att_lstm_forward).

Dimension legend: N batch, T time steps, R grid cells, C cell channels, A attention width, H hidden width,
W word vector width, P positions computed (the sum of the lengths), K = 4H + A (+ 1 with the gate) the width
of the recurrent product.
"""
from core.layers.att_step import (
    GATE_KEYS,
    RECURRENT_KEYS,
    att_lstm_step_backward,
    att_lstm_step_forward,
    attention_step_backward,
    attention_step_forward,
    doubly_stochastic_penalty,
    softmax_cells,
    softmax_cells_backward,
    weight_keys,
)
from core.layers.packing import Packing
from core.layers.rnn import (
    lstm_gate_scale,
    lstm_gates_backward,
    lstm_gates_forward,
    recurrent_weight_gradient,
    sigmoid,
)
from core.runtime.arrays import device_of, namespace, ops

__all__ = ["GATE_KEYS", "RECURRENT_KEYS", "att_lstm_backward", "att_lstm_forward", "att_lstm_step_backward",
           "att_lstm_step_forward", "attention_step_backward", "attention_step_forward", "doubly_stochastic_penalty",
           "softmax_cells", "softmax_cells_backward", "weight_keys"]


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
    a @ W_att + b_att; h0 and c0 of shape (N, H); weights, the dict of core.layers.att_step;
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
    shapes = {"rec_att": (P, A), "alpha": (P, R), "z": (P, C), "c": (P, H), "tanh_c": (P, H), "h": (P, H)}
    # numpy keeps every step's tanh of the attention for the backward, as the numpy-only layers did; the other
    # namespaces recompute it there from rec_att, sparing P*R*A values (330 MB at docs/speed.md's sizes) that
    # torch's CPU allocator would otherwise fault in page by page at every call
    if ops(xp).seed_arithmetic:
        shapes["u"] = (P, R, A)
    buffers = {name: xp.empty(shape, dtype=dtype, device=device) for name, shape in shapes.items()}
    buffers["beta"] = xp.empty((P, 1), dtype=dtype, device=device) if "W_beta" in weights else None
    scratch = None if "u" in buffers else xp.empty((x.shape[0], R, A), dtype=dtype, device=device)
    W_rec, W_ctx = _recurrent_weights(weights, scale), weights["Wx"][W:, :] * scale
    prev_h, prev_c = h0, c0
    with ops(xp).quiet_overflow():  # exp(large) = inf is fine: 1 / (1 + inf) = 0, the right limit
        for t in range(pack.steps):
            n, rows = pack.step(t)
            step_buffers = {name: None if array is None else array[rows, ...] for name, array in buffers.items()}
            step_buffers.setdefault("u", None if scratch is None else scratch[:n, ...])
            _step_forward(prev_h[:n, :], prev_c[:n, :], a[:n, ...], pa[:n, ...], gates[rows, :], W_rec, W_ctx,
                          weights, step_buffers)
            prev_h, prev_c = buffers["h"][rows, :], buffers["c"][rows, :]
    cache = (x_packed, a, pa, h0, c0, weights, gates, buffers, pack)
    return pack.unpack(buffers["h"]), pack.unpack(buffers["alpha"]), cache


def _step_forward(prev_h, prev_c, a, pa, gates, W_rec, W_ctx, weights, out):
    """One step for the n rows still running, written into ``out`` (views of the sequence's buffers).

    Inputs: prev_h, prev_c (n, H); a (n, R, C); pa (n, R, A); gates (n, 4H), the word part of the scaled
    pre-activations, turned into the gate values in place; W_rec (H, K); W_ctx (C, 4H), scaled.
    Outputs: rec_att (n, A), h_{t-1} @ W_att_h; u (n, R, A), the tanh of the attention; alpha (n, R); z (n, C);
    beta (n, 1) or None; c, tanh_c, h (n, H).
    """
    xp = namespace(prev_h, pa)
    H, A = prev_h.shape[1], pa.shape[2]
    rec = prev_h @ W_rec  # (n, H) @ (H, K) -> (n, K)
    out["rec_att"][...] = rec[:, 4 * H:4 * H + A]
    u = _attention_tanh(pa, out["rec_att"], out["u"])
    scores = ops(xp).batched_matvec(u, weights["w_att"])  # (n, R, A) @ (A,) -> (n, R)
    out["alpha"][...] = softmax_cells(scores)
    out["z"][...] = (out["alpha"][:, None, :] @ a)[:, 0, :]  # (n, 1, R) @ (n, R, C) -> (n, 1, C) -> (n, C)
    z_in = out["z"]
    if out["beta"] is not None:
        out["beta"][...] = sigmoid(rec[:, -1:] + weights["b_beta"])
        z_in = z_in * out["beta"]
    recurrent = z_in @ W_ctx  # (n, C) @ (C, 4H) -> (n, 4H)
    recurrent += rec[:, :4 * H]
    lstm_gates_forward(gates, recurrent, prev_c, out["c"], out["tanh_c"], out["h"])


def _attention_tanh(pa, rec_att, u):
    """tanh(pa + rec_att) written into u and returned: pa and u of shape (n, R, A), rec_att (n, A)."""
    kernels = ops(namespace(pa, rec_att, u))
    kernels.add(pa, rec_att[:, None, :], out=u)  # (n, R, A) + (n, 1, A)
    return kernels.tanh(u, out=u)


def att_lstm_backward(dh, dalpha, cache, cells_gradient=True):
    """Backward of att_lstm_forward.

    Inputs: dh of shape (N, T, H) and dalpha of shape (N, T, R), the upstream gradients of the hidden states and
    of the attention weights (both ignored past a row's length); cache; cells_gradient: False skips da, which a
    model whose cells are data has no use for (an (N, R, T) @ (N, T, C) product and an (N, R, C) array).
    Returns: dx of shape (N, T, W), da (N, R, C) or None, dpa (N, R, A), dh0 (N, H), dc0 (N, H), and the dict of
    the weights' gradients.
    """
    x_packed, a, pa, h0, c0, weights, gates, buffers, pack = cache
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
    dw_att = None if "u" in buffers else xp.zeros((1, A), dtype=gates.dtype, device=device_of(gates))
    scratch = {"lstm": empty(N, 3 * H), "att": empty(N, R, A)}
    W_ctx_T = weights["Wx"][x_packed.shape[1]:, :].T
    for t in reversed(range(pack.steps)):
        n, rows = pack.step(t)
        saved = {name: None if array is None else array[rows, ...] for name, array in buffers.items()}
        saved["gates"] = gates[rows, :]
        saved["prev_c"] = c0[:n, :] if t == 0 else buffers["c"][pack.block(t - 1), :][:n, :]
        saved.setdefault("u", None)
        _step_backward(dh[rows, :], dalpha[rows, :], dprev_h[:n, :], dc[:n, :], a[:n, ...], pa[:n, ...], W_rec,
                       W_ctx_T, weights, saved, {"drec": drec[rows, :], "dz": dz[rows, :], "de": de[rows, :],
                                                 "dpa": dpa[:n, ...], "dw_att": dw_att},
                       {name: array[:n, ...] for name, array in scratch.items()})
    dpa *= weights["w_att"]
    da = None
    if cells_gradient:  # (N, T, R) -> (N, R, T); (N, R, T) @ (N, T, C) -> (N, R, C)
        da = xp.permute_dims(pack.unpack(buffers["alpha"]), (0, 2, 1)) @ pack.unpack(dz)
    dx, grads = _weight_gradients(drec, de, dw_att, x_packed, h0, buffers, weights, pack)
    return dx, da, pack.unsort_rows(dpa), pack.unsort_rows(dprev_h), pack.unsort_rows(dc), grads


def _step_backward(dh, dalpha, dh_next, dc, a, pa, W_rec, W_ctx_T, weights, saved, out, scratch):
    """One step backward for the n rows running at it, written into ``out`` (views of the sequence's buffers).

    Inputs: dh (n, H) and dalpha (n, R), the upstream gradients at this step; dh_next (n, H), h_t's gradient
    through step t + 1, turned into h_{t-1}'s; dc (n, H), c_t's, turned into c_{t-1}'s; a (n, R, C);
    pa (n, R, A); W_rec (H, K); W_ctx_T (4H, C), unscaled; saved: this step's forward buffers (u None where the
    forward did not keep it), its gate values and prev_c.
    Outputs: drec (n, K), the recurrent product's gradient; dz (n, C), the context's; de (n, R), the scores';
    dpa (n, R, A), to which this step's (1 - u^2) de is added; dw_att (1, A), to which this step's u^T de is added
    where u is recomputed (None where it was kept: the caller sums over all steps at once).
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
    dalpha = dalpha + kernels.batched_matvec(a, dz)  # (n, R, C) @ (n, C) -> (n, R)
    out["de"][...] = softmax_cells_backward(dalpha, saved["alpha"])
    u, q = saved["u"], scratch["att"]
    if u is None:  # recomputed into q, and its part of dw_att taken while it is at hand
        u = _attention_tanh(pa, saved["rec_att"], q)
        out["dw_att"] += xp.sum(out["de"][:, None, :] @ u, axis=0)  # (n, 1, R) @ (n, R, A) -> (n, 1, A) -> (1, A)
    kernels.multiply(u, u, out=q)
    kernels.subtract(1, q, out=q)  # tanh' = 1 - u^2
    q *= out["de"][:, :, None]
    out["dpa"] += q
    kernels.multiply(xp.sum(q, axis=1), weights["w_att"], out=drec[:, 4 * H:4 * H + A])  # (n, R, A) -> (n, A)
    kernels.matmul(drec, W_rec.T, out=dh_next)  # (n, K) @ (K, H) -> (n, H)


def _weight_gradients(drec, de, dw_att, x_packed, h0, buffers, weights, pack):
    """The word vectors' gradient, of shape (N, T, W), and the weights' gradients, each one matmul over all
    positions, from the recurrent product's gradient drec (P, K) and the scores' gradient de (P, R); w_att's is
    dw_att (1, A) where the steps summed it."""
    xp = namespace(drec, de)
    H, W = h0.shape[1], x_packed.shape[1]
    (P, R), A = buffers["alpha"].shape, weights["w_att"].shape[0]
    dgates = drec[:, :4 * H]
    dW_rec = recurrent_weight_gradient(drec, h0, buffers["h"], pack)  # (H, K)
    z_in = buffers["z"] if buffers["beta"] is None else buffers["z"] * buffers["beta"]
    grads = {"Wh": dW_rec[:, :4 * H], "W_att_h": dW_rec[:, 4 * H:4 * H + A],
             "Wx": xp.concat([x_packed.T @ dgates, z_in.T @ dgates]),  # (W, P), (C, P) @ (P, 4H) -> (W + C, 4H)
             "b": xp.sum(dgates, axis=0),
             "w_att": dw_att[0, :] if dw_att is not None else
             xp.reshape(buffers["u"], (P * R, A)).T @ xp.reshape(de, (P * R,))}  # (A, P*R) @ (P*R,) -> (A,)
    if buffers["beta"] is not None:
        grads["W_beta"], grads["b_beta"] = dW_rec[:, -1:], xp.sum(drec[:, -1], keepdims=True)
    dx = pack.unpack(dgates @ weights["Wx"][:W, :].T)  # (P, 4H) @ (4H, W) -> (P, W) -> (N, T, W)
    return dx, grads
