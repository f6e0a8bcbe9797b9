"""core.layers.rnn: numeric gradient checks of every backward on every array backend, torch autograd cross-checks,
dtype handling."""
import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.layers import rnn as L
from tests.backends import BACKENDS, Arrays, assert_close
from tests.gradcheck import numeric_gradient, rel_error

N, T, D, H, V = 3, 5, 4, 6, 7
CELLS = {"rnn": (L.rnn_forward, L.rnn_backward, 1), "lstm": (L.lstm_forward, L.lstm_backward, 4)}


NUMPY = Arrays("numpy")


def check_backward(forward, backward, inputs, grad_of, tol=1e-7, seed=0, arrays=NUMPY):
    """Compare ``backward``'s gradients to numeric ones for the inputs named in ``grad_of``, both computed on the
    backend ``arrays`` (tests/backends.py), whose forward must also equal numpy's.

    ``forward(**inputs)`` returns a tuple whose first ``n_out`` entries are outputs followed by the cache;
    the scalar checked is sum(output_k * upstream_k). ``grad_of`` maps input name -> position in backward's result.
    The numeric gradients are numpy's.
    """
    rng = np.random.default_rng(seed)
    result = forward(**arrays.to(inputs))
    outputs, cache = arrays.back(result[:-1]), result[-1]
    assert_close(outputs, forward(**inputs)[:-1], f"{arrays} forward")
    upstream = [rng.standard_normal(out.shape) for out in outputs]
    analytic = arrays.back(backward(*arrays.to(upstream), cache))
    analytic = analytic if isinstance(analytic, tuple) else (analytic,)

    def scalar():
        return sum(float(np.sum(out * up)) for out, up in zip(forward(**inputs)[:-1], upstream))

    for name, position in grad_of.items():
        error = rel_error(analytic[position], numeric_gradient(scalar, inputs[name]))
        assert error < tol, f"d{name}: relative error {error:.2e}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _weights(rng, gates):
    return {"Wx": rng.standard_normal((D, gates * H)) * 0.5, "Wh": rng.standard_normal((H, gates * H)) * 0.5,
            "b": rng.standard_normal(gates * H) * 0.5}


def test_rnn_step_backward(rng, arrays):
    inputs = {"x": rng.standard_normal((N, D)), "prev_h": rng.standard_normal((N, H)), **_weights(rng, 1)}
    check_backward(L.rnn_step_forward, L.rnn_step_backward, inputs, {"x": 0, "prev_h": 1, "Wx": 2, "Wh": 3, "b": 4},
                   arrays=arrays)


def test_rnn_backward(rng, arrays):
    inputs = {"x": rng.standard_normal((N, T, D)), "h0": rng.standard_normal((N, H)), **_weights(rng, 1)}
    check_backward(L.rnn_forward, L.rnn_backward, inputs, {"x": 0, "h0": 1, "Wx": 2, "Wh": 3, "b": 4}, arrays=arrays)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_backward_with_lengths(rng, cell_type, arrays):
    """Sequences of lengths 3, 5 and 0 (unsorted): only the running steps get and pass gradients."""
    forward, backward, gates = CELLS[cell_type]
    inputs = {"x": rng.standard_normal((N, T, D)), "h0": rng.standard_normal((N, H)), **_weights(rng, gates),
              "lengths": np.array([3, T, 0])}
    check_backward(forward, backward, inputs, {"x": 0, "h0": 1, "Wx": 2, "Wh": 3, "b": 4}, arrays=arrays)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_lengths_compute_the_running_steps_of_the_padded_batch(rng, cell_type):
    forward, backward, gates = CELLS[cell_type]
    lengths = np.array([T, 2, 4, 1, T, 0, 3])
    x, h0, w = rng.standard_normal((len(lengths), T, D)), rng.standard_normal((len(lengths), H)), _weights(rng, gates)
    running = (np.arange(T)[None, :] < lengths[:, None])[:, :, None]  # (N, T, 1)
    h, cache = forward(x, h0, **w, lengths=lengths)
    h_padded, cache_padded = forward(x, h0, **w)
    assert np.max(np.abs(h - np.where(running, h_padded, 0))) < 1e-12
    dh = rng.standard_normal(h.shape)
    grads = backward(dh, cache)
    grads_padded = backward(np.where(running, dh, 0), cache_padded)
    for name, a, b in zip(("dx", "dh0", "dWx", "dWh", "db"), grads, grads_padded):
        assert np.max(np.abs(a - b)) < 1e-12, name


def test_lstm_step_backward(rng, arrays):
    inputs = {"x": rng.standard_normal((N, D)), "prev_h": rng.standard_normal((N, H)),
              "prev_c": rng.standard_normal((N, H)), **_weights(rng, 4)}
    check_backward(L.lstm_step_forward, L.lstm_step_backward, inputs,
                   {"x": 0, "prev_h": 1, "prev_c": 2, "Wx": 3, "Wh": 4, "b": 5}, arrays=arrays)


def test_lstm_backward(rng, arrays):
    inputs = {"x": rng.standard_normal((N, T, D)), "h0": rng.standard_normal((N, H)), **_weights(rng, 4)}
    check_backward(L.lstm_forward, L.lstm_backward, inputs, {"x": 0, "h0": 1, "Wx": 2, "Wh": 3, "b": 4}, arrays=arrays)


def _torch_reference(cell_type, x, h0, Wx, Wh, b, dh, lengths):
    """Outputs and gradients of torch.nn.RNN/LSTM (float64) given our weight layout; a PackedSequence
    of ``lengths`` unless None."""
    gates = 1 if cell_type == "rnn" else 4
    module = (torch.nn.RNN(D, H, nonlinearity="tanh", batch_first=True) if cell_type == "rnn"
              else torch.nn.LSTM(D, H, batch_first=True)).double()
    # Torch stacks gates as i, f, g, o and stores weights as (gates*H, in); ours are i, f, o, g and (in, gates*H).
    order = np.arange(gates * H) if gates == 1 else np.concatenate(
        [np.arange(k * H, (k + 1) * H) for k in (0, 1, 3, 2)])
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.tensor(Wx[:, order].T))
        module.weight_hh_l0.copy_(torch.tensor(Wh[:, order].T))
        module.bias_ih_l0.copy_(torch.tensor(b[order]))
        module.bias_hh_l0.zero_()
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)  # (1, N, H): one layer
    state = h0t if gates == 1 else (h0t, torch.zeros_like(h0t))
    if lengths is None:
        out, _ = module(xt, state)
    else:
        packed, _ = module(pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False),
                           state)
        out, _ = pad_packed_sequence(packed, batch_first=True, total_length=T)  # zeros past each length
    (out * torch.tensor(dh)).sum().backward()
    grads = (xt.grad.numpy(), h0t.grad[0].numpy(), module.weight_ih_l0.grad.numpy().T[:, np.argsort(order)],
             module.weight_hh_l0.grad.numpy().T[:, np.argsort(order)],
             module.bias_ih_l0.grad.numpy()[np.argsort(order)])
    return out.detach().numpy(), grads


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
@pytest.mark.parametrize("batch", [N, 100])
@pytest.mark.parametrize("packed", [False, True])
def test_sequence_layers_match_torch(rng, cell_type, batch, packed):
    forward, backward, gates = CELLS[cell_type]
    x, h0 = rng.standard_normal((batch, T, D)), rng.standard_normal((batch, H))
    w = _weights(rng, gates)
    lengths = rng.integers(1, T + 1, size=batch) if packed else None  # torch packs lengths >= 1 only
    h, cache = forward(x, h0, **w, lengths=lengths)
    dh = rng.standard_normal(h.shape)
    ours = backward(dh, cache)
    ref_h, ref_grads = _torch_reference(cell_type, x, h0, w["Wx"], w["Wh"], w["b"], dh, lengths)
    assert np.max(np.abs(h - ref_h)) < 1e-10
    for name, a, b in zip(("dx", "dh0", "dWx", "dWh", "db"), ours, ref_grads):
        assert np.max(np.abs(a - b)) < 1e-10, name


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_stays_float32(rng, cell_type, backend):
    forward, backward, gates = CELLS[cell_type]
    arrays = Arrays(backend)
    x = rng.standard_normal((N, T, D)).astype(np.float32)
    h0 = rng.standard_normal((N, H)).astype(np.float32)
    w = {k: v.astype(np.float32) for k, v in _weights(rng, gates).items()}
    h, cache = forward(*arrays.to((x, h0)), **arrays.to(w))
    h = arrays.back(h)
    assert h.dtype == np.float32
    assert all(g.dtype == np.float32 for g in arrays.back(backward(arrays.to(np.ones_like(h)), cache)))
    h64, _ = forward(x.astype(np.float64), h0.astype(np.float64), **{k: v.astype(np.float64) for k, v in w.items()})
    assert np.max(np.abs(h - h64)) < 1e-5


def test_sequence_shape_mismatch_raises(rng):
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    w = _weights(rng, 1)  # RNN-sized weights are too narrow for an LSTM
    with pytest.raises(ValueError, match="Wx"):
        L.lstm_forward(x, h0, **w)
