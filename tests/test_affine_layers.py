"""core.layers.affine: numeric gradient checks of every backward (float64, on every array backend) and torch autograd
cross-checks of the same equations."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.layers import affine as A
from tests.backends import assert_close
from tests.gradcheck import numeric_gradient, rel_error
from tests.test_rnn_layers import check_backward

N, T, D, V = 3, 5, 4, 7


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_affine_backward(rng, arrays):
    inputs = {"x": rng.standard_normal((N, D)), "w": rng.standard_normal((D, V)), "b": rng.standard_normal(V)}
    check_backward(A.affine_forward, A.affine_backward, inputs, {"x": 0, "w": 1, "b": 2}, arrays=arrays)


def _torch_grads(function, arrays, upstream):
    """Gradients of sum(function(*tensors) * upstream) by autograd, for float64 numpy ``arrays``."""
    tensors = [torch.tensor(a, requires_grad=np.issubdtype(a.dtype, np.floating)) for a in arrays]
    (function(*tensors) * torch.tensor(upstream)).sum().backward()
    return [t.grad.numpy() if t.grad is not None else None for t in tensors]


@pytest.mark.parametrize("layer", ["affine", "temporal_affine", "word_embedding"])
def test_layers_match_torch_autograd(rng, layer):
    x = rng.standard_normal((N, D) if layer == "affine" else (N, T, D))
    w, b = rng.standard_normal((D, V)), rng.standard_normal(V)
    if layer == "word_embedding":
        words, W = rng.integers(0, V, size=(N, T)), rng.standard_normal((V, D))
        out, cache = A.word_embedding_forward(words, W)
        upstream = rng.standard_normal(out.shape)
        (dW_ref,) = _torch_grads(lambda W_t: F.embedding(torch.tensor(words), W_t), [W], upstream)
        assert np.max(np.abs(A.word_embedding_backward(upstream, cache) - dW_ref)) < 1e-12
        return
    forward, backward = ((A.affine_forward, A.affine_backward) if layer == "affine" else
                         (A.temporal_affine_forward, A.temporal_affine_backward))
    out, cache = forward(x, w, b)
    upstream = rng.standard_normal(out.shape)
    reference = _torch_grads(lambda x_t, w_t, b_t: x_t @ w_t + b_t, [x, w, b], upstream)
    for ours, theirs in zip(backward(upstream, cache), reference):
        assert np.max(np.abs(ours - theirs)) < 1e-12


def test_word_loss_on_every_backend(rng, arrays):
    """word_loss on a backend equals numpy's, a repeated target word included."""
    H = 6
    inputs = (rng.standard_normal((N, T, H)), rng.integers(0, V, size=(N, T)), rng.standard_normal((N, T)),
              rng.standard_normal((H, V)), rng.standard_normal(V), rng.random((N, T)) > 0.3)
    inputs[1][0, :3] = 2
    loss, *grads = A.word_loss(*inputs)
    ours, *our_grads = arrays.back(A.word_loss(*arrays.to(inputs)))
    assert abs(ours - loss) < 1e-12
    assert_close(our_grads, grads, f"{arrays} word_loss")


def test_word_loss_matches_torch_autograd(rng):
    """The next words' weighted cross-entropy over the kept positions, against the same equations in torch."""
    H = 6
    h, W_vocab, b_vocab = rng.standard_normal((N, T, H)), rng.standard_normal((H, V)), rng.standard_normal(V)
    targets = rng.integers(0, V, size=(N, T))
    keep = rng.random((N, T)) > 0.3
    weights = rng.standard_normal((N, 1)) * np.ones((N, T))
    loss, dh, dW, db = A.word_loss(h, targets, weights, W_vocab, b_vocab, keep)
    h_t, W_t, b_t = (torch.tensor(a, requires_grad=True) for a in (h, W_vocab, b_vocab))
    mask = torch.tensor(keep)
    scores = (h_t @ W_t + b_t)[mask]
    per_word = F.cross_entropy(scores, torch.tensor(targets)[mask], reduction="none")
    reference = (per_word * torch.tensor(weights)[mask]).sum() / N
    reference.backward()
    assert abs(loss - reference.item()) < 1e-12
    for ours, theirs in ((dh, h_t.grad), (dW, W_t.grad), (db, b_t.grad)):
        assert np.max(np.abs(ours - theirs.numpy())) < 1e-12


def test_word_embedding_backward(rng, arrays):
    words = rng.integers(0, V, size=(N, T))
    words[0, :3] = 2  # a repeated word: its gradient must accumulate
    inputs = {"x": words, "W": rng.standard_normal((V, D))}
    check_backward(A.word_embedding_forward, A.word_embedding_backward, inputs, {"W": 0}, arrays=arrays)


def test_temporal_affine_backward(rng, arrays):
    inputs = {"x": rng.standard_normal((N, T, D)), "w": rng.standard_normal((D, V)), "b": rng.standard_normal(V)}
    check_backward(A.temporal_affine_forward, A.temporal_affine_backward, inputs, {"x": 0, "w": 1, "b": 2},
                   arrays=arrays)


def test_temporal_softmax_loss_gradient(rng, arrays):
    x = rng.standard_normal((N, T, V))
    y = rng.integers(0, V, size=(N, T))
    mask = rng.random((N, T)) > 0.3
    loss, dx = arrays.back(A.temporal_softmax_loss(*arrays.to((x, y, mask))))
    error = rel_error(dx, numeric_gradient(lambda: A.temporal_softmax_loss(x, y, mask)[0], x))
    assert error < 1e-7
    assert abs(loss - A.temporal_softmax_loss(x, y, mask)[0]) < 1e-12
    assert np.all(dx[~mask] == 0)


def test_temporal_softmax_loss_matches_torch_and_is_stable(rng):
    x = rng.standard_normal((N, T, V)) * 3
    x[0, 0, 1] = 1e4  # exp would overflow without the max shift
    y = rng.integers(0, V, size=(N, T))
    mask = rng.random((N, T)) > 0.3
    loss, dx = A.temporal_softmax_loss(x, y, mask)
    xt = torch.tensor(x, requires_grad=True)
    keep = torch.tensor(mask)
    ref = F.cross_entropy(xt[keep], torch.tensor(y)[keep], reduction="sum") / N
    ref.backward()
    assert np.isfinite(loss)
    assert abs(loss - ref.item()) < 1e-10
    assert np.max(np.abs(dx - xt.grad.numpy())) < 1e-10
