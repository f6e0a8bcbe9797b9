"""core.layers.att_lstm: numeric gradient checks of every backward on every array backend, the packed sequence against
the step loop and against torch autograd, and what soft attention must do (weights summing to 1, cells as a set)."""
import numpy as np
import pytest
import torch

from benchmarks.bench_att_lstm import torch_att_lstm
from core.layers import att_lstm as AL
from core.layers.att_lstm import att_lstm_backward, att_lstm_forward
from tests.backends import BACKENDS, Arrays, assert_close
from tests.gradcheck import numeric_gradient, rel_error

N, T, W, R, C, A, H = 3, 4, 3, 5, 4, 6, 5
LENGTHS = {"full": None, "packed": np.array([2, T, 0])}  # unsorted, one row that never runs


NUMPY = Arrays("numpy")


def check_gradients(forward, backward, inputs, tol=1e-7, seed=0, arrays=NUMPY):
    """Compare backward's float64 gradients on backend ``arrays`` (tests/backends.py) to numeric ones for every
    array in ``inputs`` (a dict) it returns; the backend's forward must also equal numpy's.

    ``forward(inputs)`` returns (outputs, cache); the scalar checked is sum(output_k * upstream_k);
    ``backward(upstream, cache)`` returns a dict input name -> gradient. The numeric side runs in numpy's long
    double (x86's 80 bits): through several steps of attention some entries are near 1e-6, where float64's
    rounding noise of about 1e-12 alone would be a relative error of 1e-6.
    """
    rng = np.random.default_rng(seed)
    outputs, cache = forward(arrays.to(inputs))
    outputs = arrays.back(outputs)
    assert_close(outputs, forward(inputs)[0], f"{arrays} forward")
    upstream = [rng.standard_normal(out.shape) for out in outputs]
    analytic = arrays.back(backward(arrays.to(upstream), cache))
    precise = {name: value.astype(np.longdouble) for name, value in inputs.items()}

    def scalar():
        return sum(np.sum(out * up) for out, up in zip(forward(precise)[0], upstream))

    for name, grad in analytic.items():
        error = rel_error(grad, numeric_gradient(scalar, precise[name]).astype(np.float64))
        assert error < tol, f"d{name}: relative error {error:.2e}"


def make_weights(rng, gate=True):
    # A small W_att_h keeps the attention's tanh off saturation, where pa's gradient sinks into rounding noise.
    weights = {"W_att_h": rng.standard_normal((H, A)) * 0.3, "w_att": rng.standard_normal(A),
               "Wx": rng.standard_normal((W + C, 4 * H)) * 0.5, "Wh": rng.standard_normal((H, 4 * H)) * 0.5,
               "b": rng.standard_normal(4 * H) * 0.5}
    if gate:
        weights.update(W_beta=rng.standard_normal((H, 1)), b_beta=rng.standard_normal(1))
    return weights


def make_sequence_inputs(rng, gate=True, batch=N):
    return {"x": rng.standard_normal((batch, T, W)), "a": rng.standard_normal((batch, R, C)),
            "pa": rng.standard_normal((batch, R, A)), "h0": rng.standard_normal((batch, H)),
            "c0": rng.standard_normal((batch, H)), **make_weights(rng, gate)}


def split(inputs):
    """(the sequence's data arrays, the weights dict) of a flat inputs dict."""
    weights = {key: inputs[key] for key in AL.weight_keys(inputs)}
    return [inputs[key] for key in ("x", "a", "pa", "h0", "c0")], weights


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_attention_step_backward(rng, arrays):
    inputs = {"a": rng.standard_normal((N, R, C)), "pa": rng.standard_normal((N, R, A)),
              "prev_h": rng.standard_normal((N, H)), "W_att_h": rng.standard_normal((H, A)) * 0.3,
              "w_att": rng.standard_normal(A)}

    def forward(p):
        z, alpha, cache = AL.attention_step_forward(p["a"], p["pa"], p["prev_h"], p["W_att_h"], p["w_att"])
        return (z, alpha), cache

    def backward(upstream, cache):
        return dict(zip(("a", "pa", "prev_h", "W_att_h", "w_att"), AL.attention_step_backward(*upstream, cache)))
    check_gradients(forward, backward, inputs, arrays=arrays)


@pytest.mark.parametrize("gate", [True, False])
def test_att_lstm_step_backward(rng, gate, arrays):
    inputs = {"x": rng.standard_normal((N, W)), "prev_h": rng.standard_normal((N, H)),
              "prev_c": rng.standard_normal((N, H)), "a": rng.standard_normal((N, R, C)),
              "pa": rng.standard_normal((N, R, A)), **make_weights(rng, gate)}
    keys = AL.weight_keys(inputs)

    def forward(p):
        h, c, alpha, cache = AL.att_lstm_step_forward(p["x"], p["prev_h"], p["prev_c"], p["a"], p["pa"],
                                                      {key: p[key] for key in keys})
        return (h, c, alpha), cache

    def backward(upstream, cache):
        *grads, weight_grads = AL.att_lstm_step_backward(*upstream, cache)
        assert set(weight_grads) == set(keys)
        return {**dict(zip(("x", "prev_h", "prev_c", "a", "pa"), grads)), **weight_grads}
    check_gradients(forward, backward, inputs, arrays=arrays)


def sequence_forward(lengths):
    def forward(p):
        arrays, weights = split(p)
        h, alpha, cache = att_lstm_forward(*arrays, weights, lengths=lengths)
        return (h, alpha), cache
    return forward


def sequence_backward(upstream, cache):
    *grads, weight_grads = att_lstm_backward(*upstream, cache)
    return {**dict(zip(("x", "a", "pa", "h0", "c0"), grads)), **weight_grads}


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("packing", sorted(LENGTHS))
def test_att_lstm_backward(rng, gate, packing, arrays):
    inputs = make_sequence_inputs(rng, gate)
    check_gradients(sequence_forward(LENGTHS[packing]), sequence_backward, inputs, arrays=arrays)


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_doubly_stochastic_penalty_gradient(rng, lam, arrays):
    alpha = rng.random((N, T, R))
    penalty, dalpha = arrays.back(AL.doubly_stochastic_penalty(arrays.to(alpha), lam))
    assert rel_error(dalpha, numeric_gradient(lambda: AL.doubly_stochastic_penalty(alpha, lam)[0], alpha)) < 1e-7
    assert penalty == pytest.approx(lam * np.sum((1 - alpha.sum(axis=1)) ** 2) / N, rel=1e-12)
    assert (penalty > 0) == (lam > 0)


def test_penalty_counts_only_the_steps_a_row_runs(rng):
    """Rows of lengths 2, T and 0: the penalty of the sequence's alpha equals the formula over the running steps."""
    arrays, weights = split(make_sequence_inputs(rng))
    lengths = LENGTHS["packed"]
    _, alpha, _ = att_lstm_forward(*arrays, weights, lengths=lengths)
    covered = np.stack([alpha[n, :lengths[n]].sum(axis=0) for n in range(N)])  # (N, R)
    penalty, _ = AL.doubly_stochastic_penalty(alpha, 0.5)
    assert penalty == pytest.approx(0.5 * np.sum((1 - covered) ** 2) / N, rel=1e-12)
    assert np.all(covered[2] == 0)


@pytest.mark.parametrize("gate", [True, False])
def test_sequence_equals_the_step_loop(rng, gate):
    """The packed sequence computes exactly the reference step at every running position, gradients included."""
    arrays, weights = split(make_sequence_inputs(rng, gate))
    x, a, pa, h, c = arrays
    lengths = LENGTHS["packed"]
    h_seq, alpha_seq, cache = att_lstm_forward(*arrays, weights, lengths=lengths)
    dh, dalpha = rng.standard_normal(h_seq.shape), rng.standard_normal(alpha_seq.shape)
    dx, da, dpa, dh0, dc0, dweights = att_lstm_backward(dh, dalpha, cache)
    total_dweights = {key: np.zeros_like(value) for key, value in weights.items()}
    for n in range(N):  # one row at a time, each for its own number of steps
        rows = slice(n, n + 1)
        state, caches = (h[rows], c[rows]), []
        for t in range(lengths[n]):
            next_h, next_c, alpha, step_cache = AL.att_lstm_step_forward(x[rows, t], *state, a[rows], pa[rows],
                                                                         weights)
            assert np.max(np.abs(next_h - h_seq[rows, t])) < 1e-12
            assert np.max(np.abs(alpha - alpha_seq[rows, t])) < 1e-12
            state, caches = (next_h, next_c), caches + [step_cache]
        assert np.all(h_seq[rows, lengths[n]:] == 0) and np.all(alpha_seq[rows, lengths[n]:] == 0)
        grad_h, grad_c = np.zeros((1, H)), np.zeros((1, H))
        total_da, total_dpa = np.zeros((1, R, C)), np.zeros((1, R, A))
        for t in reversed(range(lengths[n])):
            step_dx, grad_h, grad_c, step_da, step_dpa, step_dweights = AL.att_lstm_step_backward(
                dh[rows, t] + grad_h, grad_c, dalpha[rows, t], caches[t])
            assert np.max(np.abs(step_dx - dx[rows, t])) < 1e-12
            total_da, total_dpa = total_da + step_da, total_dpa + step_dpa
            for key, grad in step_dweights.items():
                total_dweights[key] += grad
        for name, ours, reference in (("da", da, total_da), ("dpa", dpa, total_dpa), ("dh0", dh0, grad_h),
                                      ("dc0", dc0, grad_c)):
            assert np.max(np.abs(ours[rows] - reference)) < 1e-12, (n, name)
    assert set(dweights) == set(weights)
    for key, grad in dweights.items():
        assert np.max(np.abs(grad - total_dweights[key])) < 1e-12, key


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("batch", [N, 40])
def test_sequence_matches_torch(rng, gate, batch):
    inputs = make_sequence_inputs(rng, gate, batch)
    arrays, weights = split(inputs)
    lengths = rng.integers(0, T + 1, size=batch)
    h, alpha, cache = att_lstm_forward(*arrays, weights, lengths=lengths)
    dh, dalpha = rng.standard_normal(h.shape), rng.standard_normal(alpha.shape)
    ours = sequence_backward((dh, dalpha), cache)
    tensors = {key: torch.tensor(value, requires_grad=True) for key, value in inputs.items()}
    ref_h, ref_alpha = torch_att_lstm(*(tensors[key] for key in ("x", "a", "pa", "h0", "c0")),
                                      {key: tensors[key] for key in weights}, torch.tensor(lengths))
    ((ref_h * torch.tensor(dh)).sum() + (ref_alpha * torch.tensor(dalpha)).sum()).backward()
    assert np.max(np.abs(h - ref_h.detach().numpy())) < 1e-10
    assert np.max(np.abs(alpha - ref_alpha.detach().numpy())) < 1e-10
    assert set(ours) == set(inputs)
    for name, grad in ours.items():
        assert np.max(np.abs(grad - tensors[name].grad.numpy())) < 1e-10, name


def test_alpha_sums_to_one_over_the_cells_where_a_row_runs(rng):
    arrays, weights = split(make_sequence_inputs(rng))
    lengths = LENGTHS["packed"]
    _, alpha, _ = att_lstm_forward(*arrays, weights, lengths=lengths)
    running = np.arange(T)[None, :] < lengths[:, None]  # (N, T)
    assert np.all(alpha >= 0)
    assert np.max(np.abs(alpha.sum(axis=2) - running)) < 1e-12


def test_permuting_the_cells_permutes_alpha_and_keeps_the_context(rng):
    """Soft attention treats the cells as a set: position enters only through the cells' own channels."""
    a, pa, prev_h = rng.standard_normal((N, R, C)), rng.standard_normal((N, R, A)), rng.standard_normal((N, H))
    weights = make_weights(rng)
    perm = rng.permutation(R)
    assert np.any(perm != np.arange(R))
    z, alpha, _ = AL.attention_step_forward(a, pa, prev_h, weights["W_att_h"], weights["w_att"])
    z_perm, alpha_perm, _ = AL.attention_step_forward(a[:, perm], pa[:, perm], prev_h, weights["W_att_h"],
                                                      weights["w_att"])
    assert np.max(np.abs(z_perm - z)) < 1e-12 and np.max(np.abs(alpha_perm - alpha[:, perm])) < 1e-12
    x, h0, c0 = rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    h, _, _ = att_lstm_forward(x, a, pa, h0, c0, weights)
    h_perm, _, _ = att_lstm_forward(x, a[:, perm], pa[:, perm], h0, c0, weights)
    assert np.max(np.abs(h_perm - h)) < 1e-12
    h_moved, _, _ = att_lstm_forward(x, a[:, perm], pa, h0, c0, weights)  # cells moved, projections not
    assert np.max(np.abs(h_moved - h)) > 1e-3


def test_a_saturated_cell_gets_almost_no_weight(rng):
    """Scores are w_att . tanh(..), so the lowest a cell can score is -|w_att|_1, reached when its projection
    saturates the tanh against w_att; with a large w_att that cell's weight vanishes, and nothing overflows."""
    a, prev_h = rng.standard_normal((N, R, C)), rng.standard_normal((N, H))
    weights = make_weights(rng)
    weights["w_att"] = 50 * np.sign(weights["w_att"])
    pa = rng.standard_normal((N, R, A)) * 0.01
    pa[:, 1] = -1e6 * np.sign(weights["w_att"])
    z, alpha, cache = AL.attention_step_forward(a, pa, prev_h, weights["W_att_h"], weights["w_att"])
    assert np.all(alpha[:, 1] < 1e-100) and np.all(alpha.argmin(axis=1) == 1)
    assert np.max(np.abs(alpha.sum(axis=1) - 1)) < 1e-12
    grads = AL.attention_step_backward(np.ones_like(z), np.zeros_like(alpha), cache)
    assert all(np.all(np.isfinite(g)) for g in grads)
    x, h0, c0 = rng.standard_normal((N, T, W)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    h, alpha_seq, cache = att_lstm_forward(x, a, pa, h0, c0, weights)
    assert np.all(alpha_seq[:, :, 1] < 1e-50) and np.all(alpha_seq.argmin(axis=2) == 1) and np.all(np.isfinite(h))
    dx, *_ = att_lstm_backward(np.ones_like(h), np.zeros_like(alpha_seq), cache)
    assert np.all(np.isfinite(dx))


@pytest.mark.parametrize("gate", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_stays_float32(rng, gate, backend):
    on = Arrays(backend)
    arrays, weights = split(make_sequence_inputs(rng, gate))
    h64, alpha64, _ = att_lstm_forward(*arrays, weights, lengths=LENGTHS["packed"])
    arrays32 = on.to([array.astype(np.float32) for array in arrays])
    weights32 = on.to({key: value.astype(np.float32) for key, value in weights.items()})
    h, alpha, cache = att_lstm_forward(*arrays32, weights32, lengths=LENGTHS["packed"])
    *grads, weight_grads = on.back(att_lstm_backward(h * 0 + 1, alpha * 0 + 1, cache))
    h, alpha = on.back((h, alpha))
    assert h.dtype == alpha.dtype == np.float32
    assert all(g.dtype == np.float32 for g in [*grads, *weight_grads.values()])
    assert np.max(np.abs(h - h64)) < 1e-5 and np.max(np.abs(alpha - alpha64)) < 1e-5
    step = AL.att_lstm_step_forward(arrays32[0][:, 0, :], arrays32[3], arrays32[4], arrays32[1], arrays32[2],
                                    weights32)
    assert all(out.dtype == np.float32 for out in on.back(step[:3]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_numpy_keeps_the_attention_tanh_for_the_backward(rng, backend):
    """numpy keeps every step's (n, R, A) tanh, the arithmetic of the numpy-only layers; the other namespaces keep
    only h_{t-1} @ W_att_h, (P, A), and recompute the tanh backward (the gradients above hold on every one)."""
    on = Arrays(backend)
    arrays, weights = split(make_sequence_inputs(rng))
    *_, cache = att_lstm_forward(*on.to(arrays), on.to(weights), lengths=LENGTHS["packed"])
    buffers = cache[7]
    assert buffers["rec_att"].shape == (int(LENGTHS["packed"].sum()), weights["w_att"].shape[0])
    assert ("u" in buffers) == (backend == "numpy")


def test_skipping_the_cells_gradient_changes_nothing_else(rng):
    arrays, weights = split(make_sequence_inputs(rng))
    h, alpha, cache = att_lstm_forward(*arrays, weights, lengths=LENGTHS["packed"])
    upstream = rng.standard_normal(h.shape), rng.standard_normal(alpha.shape)
    dx, da, *rest, dweights = att_lstm_backward(*upstream, cache)
    skipped_dx, none, *skipped_rest, skipped_dweights = att_lstm_backward(*upstream, cache, cells_gradient=False)
    assert none is None and da.shape == arrays[1].shape
    assert all(np.array_equal(x, y) for x, y in zip([dx, *rest], [skipped_dx, *skipped_rest]))
    assert all(np.array_equal(dweights[key], skipped_dweights[key]) for key in dweights)


def test_shape_mismatches_raise(rng):
    arrays, weights = split(make_sequence_inputs(rng))
    x, a, pa, h0, c0 = arrays
    with pytest.raises(ValueError, match="Wx"):
        att_lstm_forward(x[:, :, :2], a, pa, h0, c0, weights)  # words narrower than Wx expects
    with pytest.raises(ValueError, match="pa"):
        att_lstm_forward(x, a, pa[:, :2], h0, c0, weights)
    with pytest.raises(ValueError, match="W_beta"):
        att_lstm_forward(x, a, pa, h0, c0, {**weights, "W_beta": weights["W_beta"].ravel()})
    with pytest.raises(ValueError, match="lengths"):
        att_lstm_forward(x, a, pa, h0, c0, weights, lengths=np.array([1, 2]))
