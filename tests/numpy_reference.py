"""Every numpy result the hand-written models compute, through the classic signatures only, written to an .npz:
``python tests/numpy_reference.py OUT.npz`` with the ``core`` to measure first on PYTHONPATH.

tests/test_backends.py runs it on this tree and on the tree of an earlier commit and asks for identical bits:
the layers, losses, update rules, models, decoding and training steps of the default numpy backend must not move.
It imports nothing of ``tests`` (the earlier tree has another one) and only what both trees have.
"""
import sys
from types import SimpleNamespace

import numpy as np

from core.decoding import beam_search, greedy_decode, sample_decode
from core.layers import affine, att_lstm, rnn
from core.model.att_lstm import CaptioningAttLSTM
from core.model.rnn_model import CaptioningRNN
from core.training import optim

N, T, D, H, V, R, C, A = 9, 6, 7, 12, 11, 4, 5, 8
LENGTHS = np.array([6, 2, 0, 6, 3, 1, 5, 4, 6])


def _layers(out, rng, dtype):
    """The sequence and step layers, forward and backward, in ``dtype``."""
    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)

    for cell, gates in (("rnn", 1), ("lstm", 4)):
        forward, backward = getattr(rnn, f"{cell}_forward"), getattr(rnn, f"{cell}_backward")
        x, h0, Wx, Wh, b = draw(N, T, D), draw(N, H), draw(D, gates * H), draw(H, gates * H), draw(gates * H)
        for lengths in (None, LENGTHS):
            h, cache = forward(x, h0, Wx, Wh, b, lengths=lengths)
            out.update({f"{cell}/{lengths is None}/h": h})
            for k, grad in enumerate(backward(draw(N, T, H), cache)):
                out[f"{cell}/{lengths is None}/grad{k}"] = grad
    x, prev_h, prev_c = draw(N, D), draw(N, H), draw(N, H)
    h, cache = rnn.rnn_step_forward(x, prev_h, draw(D, H), draw(H, H), draw(H))
    out.update(rnn_step=h, rnn_step_grads=np.concatenate([g.ravel() for g in rnn.rnn_step_backward(draw(N, H), cache)]))
    h, c, cache = rnn.lstm_step_forward(x, prev_h, prev_c, draw(D, 4 * H), draw(H, 4 * H), draw(4 * H))
    grads = rnn.lstm_step_backward(draw(N, H), draw(N, H), cache)
    out.update(lstm_step=np.concatenate([h, c]), lstm_step_grads=np.concatenate([g.ravel() for g in grads]))


def _affine(out, rng, dtype):
    def draw(*shape):
        return rng.standard_normal(shape).astype(dtype)

    y, cache = affine.affine_forward(draw(N, D), draw(D, V), draw(V))
    out.update(affine=y, affine_grads=np.concatenate([g.ravel() for g in affine.affine_backward(draw(N, V), cache)]))
    y, cache = affine.temporal_affine_forward(draw(N, T, D), draw(D, V), draw(V))
    grads = affine.temporal_affine_backward(draw(N, T, V), cache)
    out.update(temporal=y, temporal_grads=np.concatenate([g.ravel() for g in grads]))
    words = rng.integers(0, V, size=(N, T))
    y, cache = affine.word_embedding_forward(words, draw(V, D))
    out.update(embed=y, embed_grad=affine.word_embedding_backward(draw(N, T, D), cache))
    mask = rng.random((N, T)) > 0.3
    loss, dx = affine.temporal_softmax_loss(draw(N, T, V) * 3, words, mask)
    out.update(softmax_loss=np.array(loss), softmax_grad=dx)
    loss, *grads = affine.word_loss(draw(N, T, H), words, draw(N, T), draw(H, V), draw(V), mask)
    out.update(word_loss=np.array(loss), word_loss_grads=np.concatenate([g.ravel() for g in grads]))


def _attention(out, rng, dtype):
    def draw(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    W = D
    for gate in (True, False):
        weights = {"W_att_h": draw(H, A, scale=0.3), "w_att": draw(A), "Wx": draw(W + C, 4 * H, scale=0.5),
                   "Wh": draw(H, 4 * H, scale=0.5), "b": draw(4 * H)}
        if gate:
            weights.update(W_beta=draw(H, 1), b_beta=draw(1))
        x, a, pa, h0, c0 = draw(N, T, W), draw(N, R, C), draw(N, R, A), draw(N, H), draw(N, H)
        h, alpha, cache = att_lstm.att_lstm_forward(x, a, pa, h0, c0, weights, lengths=LENGTHS)
        penalty, dalpha = att_lstm.doubly_stochastic_penalty(alpha, 0.7)
        *grads, wgrads = att_lstm.att_lstm_backward(draw(N, T, H), dalpha, cache)
        out.update({f"att/{gate}/h": h, f"att/{gate}/alpha": alpha, f"att/{gate}/penalty": np.array(penalty),
                    **{f"att/{gate}/grad{k}": g for k, g in enumerate(grads)},
                    **{f"att/{gate}/d{key}": g for key, g in wgrads.items()}})
        h, c, alpha, cache = att_lstm.att_lstm_step_forward(x[:, 0], h0, c0, a, pa, weights)
        *grads, wgrads = att_lstm.att_lstm_step_backward(draw(N, H), draw(N, H), draw(N, R), cache)
        out.update({f"att_step/{gate}/out": np.concatenate([h, c, alpha], axis=1),
                    **{f"att_step/{gate}/grad{k}": g for k, g in enumerate(grads)},
                    **{f"att_step/{gate}/d{key}": g for key, g in wgrads.items()}})


def _rules(out, rng):
    for name in ("sgd", "sgd_momentum", "rmsprop", "adam"):
        w, config = rng.standard_normal((5, 4)).astype(np.float32), None
        for _ in range(3):
            w, config = getattr(optim, name)(w, rng.standard_normal((5, 4)).astype(np.float32), config)
        out[f"rule/{name}"] = w


def _vocab():
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{k}" for k in range(V - 4)]
    return {word: k for k, word in enumerate(words)}


def _captions(rng, n):
    captions = np.zeros((n, T + 1), dtype=np.int32)
    for row, k in enumerate(rng.integers(1, T, size=n)):
        captions[row, 0], captions[row, k + 1] = 1, 2
        captions[row, 1:k + 1] = rng.integers(4, V, size=k)
    return captions


def _models(out, rng):
    """Loss and gradients, decoding, and training steps of NumpyUpdater, for each numpy model kind (float32)."""
    models = {"rnn": (CaptioningRNN(_vocab(), input_dim=D, wordvec_dim=6, hidden_dim=H, cell_type="rnn", seed=1),
                      (N, D)),
              "lstm": (CaptioningRNN(_vocab(), input_dim=D, wordvec_dim=6, hidden_dim=H, cell_type="lstm", seed=1),
                       (N, D)),
              "att": (CaptioningAttLSTM(_vocab(), input_dim=C, num_cells=R, wordvec_dim=6, hidden_dim=H, att_dim=A,
                                        att_penalty=0.5, seed=1), (N, R, C))}
    for name, (model, shape) in models.items():
        features, captions = rng.standard_normal(shape).astype(np.float32) * 2, _captions(rng, N)
        for weights in (None, rng.standard_normal(N)):
            loss, grads = model.loss(features, captions, **({} if weights is None else {"weights": weights}))
            out[f"{name}/loss/{weights is None}"] = np.array(loss)
            out.update({f"{name}/grad/{weights is None}/{key}": g for key, g in grads.items()})
        out[f"{name}/greedy"] = greedy_decode(model, features, 8)
        out[f"{name}/sample"] = sample_decode(model, features, 8, 0.8, rng=np.random.default_rng(3))
        out[f"{name}/beam"] = beam_search(model, features, beam_size=3, max_length=8)
        updater = optim.NumpyUpdater(model, SimpleNamespace(update_rule="adam", grad_clip=0.5, rule_options={}))
        out[f"{name}/train_losses"] = np.array([updater.train_step(features, captions, 1e-2) for _ in range(3)])
        out.update({f"{name}/trained/{key}": w for key, w in updater.state()["params"].items()})
        out.update({f"{name}/adam/{key}/m": state["m"] for key, state in updater.state()["optim"].items()})


def compute():
    """Every result, by name."""
    out, rng = {}, np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        part = {}
        _layers(part, rng, dtype)
        _affine(part, rng, dtype)
        _attention(part, rng, dtype)
        out.update({f"{np.dtype(dtype).name}/{key}": value for key, value in part.items()})
    _rules(out, rng)
    _models(out, rng)
    return out


if __name__ == "__main__":
    np.savez(sys.argv[1], **compute())
