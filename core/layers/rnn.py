"""Numpy recurrent layers for captioning: the vanilla (tanh) RNN and the LSTM, step by step and over a sequence.

Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward`` takes the upstream gradient and that cache.
The step functions are the readable reference; the sequence functions compute the same thing fast:
the input projection of all time steps is one matmul before the loop, the loop keeps only the recurrent
matmul and the elementwise gate math (written into preallocated buffers), and the weight gradients are
single matmuls over all steps after the backward loop. Given ``lengths``, they compute only the steps
each sequence runs (core.layers.packing): on captions, a fifth to a third of a padded batch is never computed.

Every function takes the Array API namespace of its inputs (core.runtime.arrays): numpy arrays, torch tensors
or CuPy arrays, all of one library; the in-place kernels are the library's own where it has them (``Ops``).

Dimension legend: N batch, T time steps, D input width, H hidden width, P positions computed (the sum of the
lengths), G = H for the RNN and 4H for the LSTM. LSTM gates are stacked in the order i, f, o, g.
Arrays keep the dtype of their inputs (float32 stays float32).
"""
from core.layers.packing import Packing
from core.runtime.arrays import device_of, namespace, ops


def sigmoid(x):
    """Logistic sigmoid written via tanh, which cannot overflow for large negative x (unlike exp(-x))."""
    return 0.5 * namespace(x).tanh(0.5 * x) + 0.5


def _check_sequence(x, h0, Wx, Wh, b, gates):
    """Raise ValueError unless x (N, T, D), h0 (N, H), Wx (D, gates*H), Wh (H, gates*H), b (gates*H,)."""
    if x.ndim != 3 or x.shape[1] < 1 or h0.ndim != 2 or h0.shape[0] != x.shape[0]:
        raise ValueError(f"expected x of shape (N, T, D) with T >= 1 and h0 of shape (N, H), "
                         f"got {x.shape} and {h0.shape}")
    H = h0.shape[1]
    expected = {"Wx": (x.shape[2], gates * H), "Wh": (H, gates * H), "b": (gates * H,)}
    for name, array in (("Wx", Wx), ("Wh", Wh), ("b", b)):
        if array.shape != expected[name]:
            raise ValueError(f"expected {name} of shape {expected[name]}, got {array.shape}")


def _input_projection(x, Wx, b, pack, dtype):
    """x @ Wx + b at every running position, of shape (P, G); and x packed, of shape (P, D)."""
    xp = namespace(x, Wx, b)
    x_packed = pack.pack(x)
    out = xp.empty((x_packed.shape[0], Wx.shape[1]), dtype=dtype, device=device_of(x))
    ops(xp).matmul(x_packed, Wx, out=out)  # (P, D) @ (D, G) -> (P, G)
    out += b
    return out, x_packed


def _weight_gradients(dpre, x_packed, h0, h_packed, Wx, pack):
    """Gradients of the sequence layers' shared affine part from the pre-activation gradients dpre (P, G).

    h0 (N, H) is in packing order. Returns dx of shape (N, T, D), dWx (D, G), dWh (H, G), db (G,).
    """
    dx = pack.unpack(dpre @ Wx.T)  # (P, G) @ (G, D) -> (P, D) -> (N, T, D)
    dWx = x_packed.T @ dpre  # (D, P) @ (P, G) -> (D, G)
    return dx, dWx, recurrent_weight_gradient(dpre, h0, h_packed, pack), namespace(dpre).sum(dpre, axis=0)


def recurrent_weight_gradient(dpre, h0, h_packed, pack):
    """The gradient of the weights h_{t-1} multiplies, of shape (H, G), from the gradients dpre (P, G) of their
    products at every position; h0 (N, H) in packing order, h_packed (P, H) the layer's outputs."""
    n, first = pack.step(0)
    # Step t multiplies by h_{t-1}: h0 for the first step, the layer's own outputs for the rest.
    dW = h0[:n, :].T @ dpre[first, :]  # (H, n_0) @ (n_0, G) -> (H, G)
    dW += pack.previous_rows(h_packed).T @ dpre[first.stop:, :]  # (H, P - n_0) @ (P - n_0, G) -> (H, G)
    return dW


def lstm_gate_scale(H, dtype, like):
    """Column factors -1 (i, f, o) and -2 (g), of shape (4H,) and ``dtype``, in the namespace and on the device of
    array ``like``, that let lstm_gates_forward use one exp for all four gates: sigmoid(a) = 1 / (1 + exp(-a)) and
    tanh(a) = 2 / (1 + exp(-2a)) - 1. Scaling the weight columns once, not the pre-activations at every step,
    costs nothing per step; float32 exp costs half of numpy's float32 tanh."""
    scale = namespace(like).full((4 * H,), -1, dtype=dtype, device=device_of(like))
    scale[3 * H:] = -2
    return scale


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One tanh RNN step: next_h = tanh(x @ Wx + prev_h @ Wh + b).

    Inputs: x of shape (N, D), prev_h of shape (N, H), Wx of shape (D, H), Wh of shape (H, H), b of shape (H,).
    Returns: next_h of shape (N, H), cache for rnn_step_backward.
    """
    next_h = namespace(x, prev_h, Wx, Wh, b).tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """Backward of rnn_step_forward.

    Inputs: dnext_h of shape (N, H), cache.
    Returns: dx of shape (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h ** 2)
    return da @ Wx.T, da @ Wh.T, x.T @ da, prev_h.T @ da, namespace(da).sum(da, axis=0)


def rnn_forward(x, h0, Wx, Wh, b, lengths=None):
    """A tanh RNN over a whole sequence.

    Inputs: x of shape (N, T, D), h0 of shape (N, H), Wx of shape (D, H), Wh of shape (H, H), b of shape (H,);
    lengths of shape (N,), optional: sequence n runs lengths[n] steps (see core.layers.packing), default T.
    Returns: h of shape (N, T, H), the hidden state at every step (zero past a sequence's length);
    cache for rnn_backward.
    """
    _check_sequence(x, h0, Wx, Wh, b, gates=1)
    xp = namespace(x, h0, Wx, Wh, b)
    pack = Packing.of(lengths, *x.shape[:2])
    # pre-activations, turned into h in place
    h_packed, x_packed = _input_projection(x, Wx, b, pack, xp.result_type(x, h0, Wx, Wh, b))
    h0 = pack.sort_rows(h0)
    recurrent = xp.empty_like(h0, dtype=h_packed.dtype)
    prev_h = h0
    for t in range(pack.steps):
        n, rows = pack.step(t)
        h = h_packed[rows, :]
        ops(xp).matmul(prev_h[:n, :], Wh, out=recurrent[:n, :])  # (n_t, H) @ (H, H) -> (n_t, H)
        h += recurrent[:n, :]
        ops(xp).tanh(h, out=h)
        prev_h = h
    return pack.unpack(h_packed), (x_packed, h0, Wx, Wh, h_packed, pack)


def rnn_backward(dh, cache):
    """Backward of rnn_forward.

    Inputs: dh of shape (N, T, H), the upstream gradient of every hidden state (ignored past a sequence's
    length); cache.
    Returns: dx of shape (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,).
    """
    x_packed, h0, Wx, Wh, h_packed, pack = cache
    xp = namespace(dh, h_packed)
    dh = pack.pack(dh)
    da = 1 - h_packed ** 2  # tanh' at all positions at once; becomes the pre-activation gradient in the loop
    # Row j of step t holds h_t's gradient through step t + 1; rows not yet running at t + 1 stay zero.
    dprev_h = xp.zeros_like(h0, dtype=da.dtype)
    for t in reversed(range(pack.steps)):
        n, rows = pack.step(t)
        dprev_h[:n, :] += dh[rows, :]
        da[rows, :] *= dprev_h[:n, :]
        ops(xp).matmul(da[rows, :], Wh.T, out=dprev_h[:n, :])  # (n_t, H) @ (H, H) -> (n_t, H)
    dx, dWx, dWh, db = _weight_gradients(da, x_packed, h0, h_packed, Wx, pack)
    return dx, pack.unsort_rows(dprev_h), dWx, dWh, db


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step.

    Inputs: x of shape (N, D), prev_h and prev_c of shape (N, H), Wx of shape (D, 4H), Wh of shape (H, 4H),
    b of shape (4H,).
    Returns: next_h and next_c of shape (N, H), cache for lstm_step_backward.
    """
    xp = namespace(x, prev_h, prev_c, Wx, Wh, b)
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i, f, o = (sigmoid(a[:, k * H:(k + 1) * H]) for k in range(3))
    g = xp.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    tanh_c = xp.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """Backward of lstm_step_forward.

    Inputs: dnext_h and dnext_c of shape (N, H), cache.
    Returns: dx of shape (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    xp = namespace(dnext_h, dnext_c, x)
    dc = dnext_c + dnext_h * o * (1 - tanh_c ** 2)
    da = xp.concat([dc * g * i * (1 - i), dc * prev_c * f * (1 - f),
                    dnext_h * tanh_c * o * (1 - o), dc * i * (1 - g ** 2)], axis=1)
    return da @ Wx.T, da @ Wh.T, dc * f, x.T @ da, prev_h.T @ da, xp.sum(da, axis=0)


def lstm_forward(x, h0, Wx, Wh, b, lengths=None):
    """An LSTM over a whole sequence, starting from cell state c0 = 0.

    Inputs: x of shape (N, T, D), h0 of shape (N, H), Wx of shape (D, 4H), Wh of shape (H, 4H), b of shape (4H,);
    lengths of shape (N,), optional: sequence n runs lengths[n] steps (see core.layers.packing), default T.
    Returns: h of shape (N, T, H), the hidden state at every step (zero past a sequence's length);
    cache for lstm_backward.
    """
    _check_sequence(x, h0, Wx, Wh, b, gates=4)
    xp, device = namespace(x, h0, Wx, Wh, b), device_of(x)
    pack = Packing.of(lengths, *x.shape[:2])
    dtype = xp.result_type(x, h0, Wx, Wh, b)
    H = h0.shape[1]
    scale = lstm_gate_scale(H, dtype, x)
    # scaled pre-activations, turned into the gate values i, f, o, g in place
    gates, x_packed = _input_projection(x, Wx * scale, b * scale, pack, dtype)
    Wh_scaled = Wh * scale
    c, tanh_c, h_packed = (xp.empty((gates.shape[0], H), dtype=dtype, device=device) for _ in range(3))
    h0 = pack.sort_rows(h0)
    recurrent = xp.empty((h0.shape[0], 4 * H), dtype=dtype, device=device)
    prev_h, prev_c = h0, xp.zeros((h0.shape[0], H), dtype=dtype, device=device)
    with ops(xp).quiet_overflow():  # exp(large) = inf is fine: 1 / (1 + inf) = 0, the right limit
        for t in range(pack.steps):
            n, rows = pack.step(t)
            ops(xp).matmul(prev_h[:n, :], Wh_scaled, out=recurrent[:n, :])  # (n_t, H) @ (H, 4H) -> (n_t, 4H)
            lstm_gates_forward(gates[rows, :], recurrent[:n, :], prev_c[:n, :], c[rows, :], tanh_c[rows, :],
                               h_packed[rows, :])
            prev_h, prev_c = h_packed[rows, :], c[rows, :]
    return pack.unpack(h_packed), (x_packed, h0, Wx, Wh, gates, c, tanh_c, h_packed, pack)


def lstm_gates_forward(a, recurrent, prev_c, c, tanh_c, h):
    """One step's gate math, written into its outputs.

    Inputs: a of shape (N, 4H), the input part of the scaled pre-activations (see lstm_forward), turned
    into the gate values i, f, o, g in place; recurrent (N, 4H), the recurrent part; prev_c (N, H).
    Outputs: c, tanh_c and h, each of shape (N, H). The caller silences exp's overflow warning.
    """
    H, kernels = c.shape[1], ops(namespace(a, recurrent, prev_c))
    a += recurrent
    kernels.sigmoid_negated(a, out=a)
    a[:, 3 * H:] *= 2
    a[:, 3 * H:] -= 1
    kernels.multiply(a[:, H:2 * H], prev_c, out=c)
    c += kernels.multiply(a[:, :H], a[:, 3 * H:], out=h)  # h as scratch until set below
    kernels.tanh(c, out=tanh_c)
    kernels.multiply(a[:, 2 * H:3 * H], tanh_c, out=h)


def lstm_backward(dh, cache):
    """Backward of lstm_forward.

    Inputs: dh of shape (N, T, H), the upstream gradient of every hidden state (ignored past a sequence's
    length); cache.
    Returns: dx of shape (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    x_packed, h0, Wx, Wh, gates, c, tanh_c, h_packed, pack = cache
    xp, device = namespace(dh, gates), device_of(gates)
    N, H = h0.shape
    dh = pack.pack(dh)
    dgates = xp.empty_like(gates)
    # Row j holds h_t's and c_t's gradients through step t + 1; rows not yet running at t + 1 stay zero.
    dprev_h, dc = (xp.zeros((N, H), dtype=gates.dtype, device=device) for _ in range(2))
    scratch = xp.empty((N, 3 * H), dtype=gates.dtype, device=device)
    for t in reversed(range(pack.steps)):
        n, rows = pack.step(t)
        prev_c = c[pack.block(t - 1), :][:n, :] if t > 0 else None
        lstm_gates_backward(dh[rows, :], dprev_h[:n, :], dc[:n, :], gates[rows, :], prev_c, tanh_c[rows, :],
                            dgates[rows, :], scratch[:n, :])
        ops(xp).matmul(dgates[rows, :], Wh.T, out=dprev_h[:n, :])  # (n_t, 4H) @ (4H, H) -> (n_t, H)
    dx, dWx, dWh, db = _weight_gradients(dgates, x_packed, h0, h_packed, Wx, pack)
    return dx, pack.unsort_rows(dprev_h), dWx, dWh, db


def lstm_gates_backward(dh, dh_next, dc, gates, prev_c, tanh_c, da, scratch):
    """One step's gate gradients, written into its outputs.

    Inputs: dh (N, H), the loss's gradient of h_t; dh_next (N, H), h_t's gradient through step t + 1,
    turned into h_t's total gradient in place; dc (N, H), c_t's gradient through step t + 1, turned into
    c_{t-1}'s in place; gates (N, 4H), the values i, f, o, g; prev_c (N, H), or None for c0 = 0;
    tanh_c (N, H); scratch (N, 3H).
    Output: da of shape (N, 4H), the gradient of the pre-activations.
    """
    H, kernels = dh.shape[1], ops(namespace(dh, gates, tanh_c))
    i, f, o, g = (gates[:, k * H:(k + 1) * H] for k in range(4))
    di, df, do, dg = (da[:, k * H:(k + 1) * H] for k in range(4))
    dh_next += dh  # now the total gradient of h_t
    kernels.multiply(dh_next, tanh_c, out=do)
    # dc_t += dh_t * o * tanh'(c_t), with tanh' = 1 - tanh^2; dg serves as scratch until set below
    kernels.multiply(tanh_c, tanh_c, out=dg)
    kernels.subtract(1, dg, out=dg)
    dg *= o
    dg *= dh_next
    dc += dg
    kernels.multiply(dc, g, out=di)
    if prev_c is None:
        df[...] = 0
    else:
        kernels.multiply(dc, prev_c, out=df)
    # Through the nonlinearities: tanh' = 1 - g^2 for g; sigmoid' = s (1 - s) for i, f, o.
    kernels.multiply(g, g, out=dg)
    kernels.subtract(1, dg, out=dg)
    dg *= i
    dg *= dc
    dc *= f  # carried back to c_{t-1}
    kernels.subtract(1, gates[:, :3 * H], out=scratch)
    scratch *= gates[:, :3 * H]
    da[:, :3 * H] *= scratch
