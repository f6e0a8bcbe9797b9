"""Time one CaptioningAttLSTM training step (forward + backward) against the same model in torch and against the
matmul peak.

Run: python -m benchmarks.bench_att_lstm [--repeats 9] [--threads 2] [--backend numpy torch] [--dense]

Reports, measured in the same run with the same thread count:
- the hand-written step (CaptioningAttLSTM.loss) on each array backend asked for (numpy by default; torch
  tensors: our backward on torch's kernels) and the same equations in torch autograd (``torch_loss`` below, which
  the tests also hold the numpy model to), and their ratios torch/backend (>= 1: the backend at least as fast).
  Both compute only the steps each caption runs, with the same work hoisted out of the time loop; ``--dense``
  makes every caption full length;
- the step's FLOP count (its matmuls, matrix-vector products included) over the first backend's step time, as
  FLOP/s and as a fraction of numpy's (n, n) @ (n, n) matmul throughput, timed in the same rounds;
- with the torch backend, where the time of its step and of the autograd step goes (matmuls, copies, elementwise;
  benchmarks.op_breakdown), after the timed rounds, and the ceiling of their ratio: the autograd step over the
  backend's matmul time.
"""
import argparse
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.harness import (
    add_backend_flags,
    add_rounds_and_threads,
    backend_steps,
    check_rounds_and_threads,
    interleaved_times,
    make_captions,
    matmul_peak_probe,
    pin_blas_threads,
    print_rows,
    report_blas,
    report_machine,
)
from benchmarks.op_breakdown import breakdown_rows
from core.data.layout import SPECIAL_TOKENS
from core.layers.packing import Packing
from core.model.att_lstm import AttLSTMConfig, CaptioningAttLSTM


@dataclass(frozen=True)
class BenchConfig:
    """The measured shapes: N captions of T steps, word vectors W, hidden H, vocabulary V, R cells of C channels,
    attention width A (the model's default)."""
    N: int = 128
    T: int = 16
    W: int = 256
    H: int = 512
    V: int = 1004
    R: int = 196
    C: int = 512
    A: int = AttLSTMConfig.att_dim


def step_matmuls(cfg, sizes, scored, gate=True):
    """(m, k, n) of every matmul of one training step, forward then backward, with D = C + 2 channels per cell
    and K = 4H + A (+ 1 with the gate) columns in the recurrent product.

    ``sizes`` (T,) holds n_t, the captions still running at step t, P = sum(sizes); ``scored`` is the
    number M of positions with a target word. A batch of n products (1, k) @ (k, m) counts as (n, k, m).

    FLOPs = sum of 2 m k n =  2 * 2 N D H + 2 * 2 N D H        (h0, c0 from the mean cell; their gradients)
                             + 2 * 2 N R D A                  (cells -> pa; dW_att)
                             + 3 * 2 P W 4H                   (word part of the input: forward, dWx, dx)
                             + 3 * 2 P H K                    (recurrent product: forward, dh_{t-1}, dW_rec)
                             + 2 * 2 P R A                    (scores e = tanh(..) @ w_att; dw_att)
                             + 2 * 2 P R D                    (context z, its gradient to alpha; the cells' own
                                                               gradient is not computed: they are data)
                             + 3 * 2 P D 4H                   (context part of the input: forward, dWx, dz)
                             + 3 * 2 M H V                    (vocabulary scores: forward, dW_vocab, dh)
    """
    N, W, H, V, R, A = cfg.N, cfg.W, cfg.H, cfg.V, cfg.R, cfg.A
    D, K, P, M = cfg.C + 2, 4 * H + A + (1 if gate else 0), int(sum(sizes)), scored
    forward = ([(N, D, H), (N, D, H), (N * R, D, A), (P, W, 4 * H)]
               + [shape for n in sizes for shape in ((n, H, K), (n * R, A, 1), (n, R, D), (n, D, 4 * H))]
               + [(M, H, V)])
    backward = ([(M, V, H), (H, M, V)]
                + [shape for n in reversed(sizes) for shape in ((n, 4 * H, D), (n, D, R), (n, K, H))]
                + [(A, P * R, 1), (H, P, K), (W, P, 4 * H), (D, P, 4 * H), (P, 4 * H, W), (D, N * R, A),
                   (D, N, H), (D, N, H)])
    return forward + backward


def torch_att_lstm(x, a, pa, h0, c0, weights, lengths):
    """The attention LSTM of core.layers.att_lstm in torch autograd: rows sorted longest first, step t runs the first
    n_t of them; the word part of the input projection is one product before the loop.

    Inputs: tensors x (N, T, W), a (N, R, D), pa (N, R, A), h0 and c0 (N, H), lengths (N,) int64; weights, a dict
    of tensors with core.layers.att_lstm' keys (the gate runs when it holds W_beta).
    Returns: h (N, T, H) and alpha (N, T, R), zero past each row's length.
    """
    N, T, W = x.shape
    H = h0.shape[1]
    order = torch.argsort(-lengths, stable=True)
    x, a, pa, h, c = (v[order] for v in (x, a, pa, h0, c0))
    x_part = x @ weights["Wx"][:W] + weights["b"]  # (N, T, W) @ (W, 4H) -> (N, T, 4H)
    hs, alphas = [], []
    for t in range(T):
        n = int((lengths > t).sum())
        h, c = h[:n], c[:n]
        u = torch.tanh(pa[:n] + (h @ weights["W_att_h"])[:, None, :])  # (n, R, A)
        alpha = torch.softmax(u @ weights["w_att"], dim=1)  # (n, R, A) @ (A,) -> (n, R)
        z = torch.bmm(alpha[:, None, :], a[:n])[:, 0]  # (n, 1, R) @ (n, R, D) -> (n, D)
        if "W_beta" in weights:
            z = torch.sigmoid(h @ weights["W_beta"] + weights["b_beta"]) * z
        pre = x_part[:n, t] + z @ weights["Wx"][W:] + h @ weights["Wh"]  # (n, 4H)
        i, f, o = (torch.sigmoid(pre[:, k * H:(k + 1) * H]) for k in range(3))
        c = f * c + i * torch.tanh(pre[:, 3 * H:])
        h = o * torch.tanh(c)
        hs.append(F.pad(h, (0, 0, 0, N - n)))
        alphas.append(F.pad(alpha, (0, 0, 0, N - n)))
    back = torch.argsort(order)
    return torch.stack(hs, dim=1)[back], torch.stack(alphas, dim=1)[back]


def torch_loss(params, features, captions, config, null_idx):
    """CaptioningAttLSTM.loss written in torch: params a dict of tensors with the model's names, features
    (N, R, C) and captions (N, T + 1) int64 tensors, config its AttLSTMConfig. Returns the loss, a 0-d tensor."""
    N, R, _ = features.shape
    side = math.isqrt(R)
    centres = torch.linspace(-1 + 1 / side, 1 - 1 / side, side, dtype=features.dtype)
    positions = torch.stack([centres.repeat(side), centres.repeat_interleave(side)], dim=1)  # (R, 2): x, then y
    grid = torch.cat([features / config.feature_scale, positions.expand(N, R, 2)], dim=2)
    mean = grid.mean(dim=1)
    h0 = torch.tanh(mean @ params["W_h0"] + params["b_h0"])
    c0 = mean @ params["W_c0"] + params["b_c0"]
    targets = captions[:, 1:]
    keep = targets != null_idx
    lengths = (keep * torch.arange(1, targets.shape[1] + 1)).amax(dim=1)  # one past the last target
    weights = {key: params[key] for key in ("W_att_h", "w_att", "Wx", "Wh", "b", "W_beta", "b_beta") if key in params}
    h, alpha = torch_att_lstm(params["W_embed"][captions[:, :-1]], grid, grid @ params["W_att"] + params["b_att"],
                              h0, c0, weights, lengths)
    scores = h[keep] @ params["W_vocab"] + params["b_vocab"]
    loss = F.cross_entropy(scores, targets[keep], reduction="sum") / N
    return loss + config.att_penalty * ((1 - alpha.sum(dim=1)) ** 2).sum() / N


def make_batch(cfg, rng, dense=False):
    """Random non-negative cells (N, R, C), as after a ReLU, and captions (N, T + 1), see
    benchmarks.harness.make_captions."""
    features = np.maximum(rng.standard_normal((cfg.N, cfg.R, cfg.C), dtype=np.float32), 0)
    return features, make_captions(cfg.N, cfg.T, cfg.V, rng, dense)


def torch_step(model, features, captions):
    """A function running one forward + backward of ``torch_loss`` (float32) with the model's initial weights."""
    params = {name: torch.tensor(value, requires_grad=True) for name, value in model.params.items()}
    config = model.Config(**model.config())
    features_t, captions_t = torch.from_numpy(features), torch.from_numpy(captions)

    def run():
        for value in params.values():
            value.grad = None
        torch_loss(params, features_t, captions_t, config, model.null_idx).backward()
    return run


def contenders(cfg, rng, backends=("numpy",), device="cpu", dense=False):
    """What the benchmark times, in turns: the hand-written step on each backend, the torch step and the peak
    probe. Returns (name -> function, the sizes n_t, the step's FLOPs, the probe's)."""
    words = list(SPECIAL_TOKENS) + [f"w{k}" for k in range(cfg.V - len(SPECIAL_TOKENS))]

    def make_model():
        return CaptioningAttLSTM({w: i for i, w in enumerate(words)}, input_dim=cfg.C, num_cells=cfg.R,
                                 wordvec_dim=cfg.W, hidden_dim=cfg.H, att_dim=cfg.A, dtype=np.float32)
    model = make_model()
    features, captions = make_batch(cfg, rng, dense)
    lengths = (captions[:, 1:] != model.null_idx).sum(axis=1)  # padding only at the end: all positions scored
    sizes = Packing.of(lengths, cfg.N, cfg.T).sizes
    shapes = step_matmuls(cfg, sizes, scored=int(lengths.sum()))
    probe, probe_flops = matmul_peak_probe()
    fns = {**backend_steps(make_model, features, captions, backends, device),
           "torch": torch_step(model, features, captions), "peak": probe}
    return fns, sizes, sum(2 * m * k * n for m, k, n in shapes), probe_flops


def run_benchmark(cfg, repeats, threads, backends=("numpy",), device="cpu", dense=False):
    """Measure and print the figures described in the module docstring."""
    torch.set_num_threads(threads)
    fns, sizes, flops, probe_flops = contenders(cfg, np.random.default_rng(0), backends, device, dense)
    times = interleaved_times(fns, repeats=repeats)
    seconds = {name: float(np.median(t)) for name, t in times.items()}
    step_time, peak = seconds[f"{backends[0]} backend"], probe_flops / seconds["peak"]
    rows = [row for name in backends for row in (
        (f"{name} backend step", f"{seconds[f'{name} backend'] * 1e3:.1f} ms"),
        (f"ratio torch autograd/{name} backend", f"{seconds['torch'] / seconds[f'{name} backend']:.2f}"))]
    print_rows(f"attention LSTM training step, N={cfg.N} T={cfg.T} W={cfg.W} H={cfg.H} V={cfg.V} R={cfg.R} "
               f"C={cfg.C} A={cfg.A}, float32, {'dense' if dense else 'realistic lengths'}, {threads} thread(s), "
               f"device {device}, median of {repeats} rounds taken in turns; FLOP rates of the {backends[0]} "
               "backend", rows + [
                   ("torch step (autograd, same equations)", f"{seconds['torch'] * 1e3:.1f} ms"),
                   ("positions computed", f"{sizes.sum()} of {cfg.N * cfg.T}"),
                   ("step FLOPs (matmuls)", f"{flops / 1e9:.2f} GFLOP"),
                   ("achieved", f"{flops / step_time / 1e9:.1f} GFLOP/s"),
                   ("numpy matmul peak", f"{peak / 1e9:.1f} GFLOP/s, (1024, 1024) products in the same rounds "
                                         f"(fastest round {probe_flops / min(times['peak']) / 1e9:.1f})"),
                   ("fraction of peak", f"{flops / step_time / peak:.0%}"),
               ] + torch_breakdown(fns, seconds["torch"], backends))


def torch_breakdown(fns, torch_seconds, backends):
    """Rows of where the autograd step's and the torch backend's time goes, and the ceiling of their ratio (none
    without the torch backend)."""
    if "torch" not in backends:
        return []
    reference, _ = breakdown_rows("torch autograd", fns["torch"])
    ours, matmul_seconds = breakdown_rows("torch backend", fns["torch backend"])
    return reference + ours + [("ceiling of ratio torch autograd/torch backend",
                                f"{torch_seconds / matmul_seconds:.2f} (autograd step over the backend's matmuls)")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_rounds_and_threads(parser, repeats=9)
    add_backend_flags(parser)
    return check_rounds_and_threads(parser, parser.parse_args(argv))


def main():
    args = parse_args()
    pin_blas_threads("benchmarks.bench_att_lstm", args.threads)
    report_machine()
    report_blas()
    run_benchmark(BenchConfig(), args.repeats, args.threads, args.backend, args.device, args.dense)


if __name__ == "__main__":
    main()
