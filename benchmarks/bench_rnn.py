"""Time one CaptioningRNN training step (forward + backward) against torch and against the matmul peak.

Run: python -m benchmarks.bench_rnn [--cell lstm] [--repeats 15] [--threads 2]

Reports, measured in the same run with the same thread count:
- the numpy step (CaptioningRNN.loss) and the same step in torch (nn.LSTM/nn.RNN + nn.Linear + cross-entropy,
  autograd), and their ratio torch/numpy (>= 1: numpy at least as fast);
- the step's FLOP count (its matmuls) over the numpy step time, as FLOP/s and as a fraction of numpy's
  (n, n) @ (n, n) matmul peak;
- the "matmul floor": the time of the step's matmuls alone, same shapes, in the same order. The gap between
  it and the step is the elementwise work (gate nonlinearities, softmax), which numpy runs on one core.
"""
import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.harness import interleaved_medians, numpy_matmul_peak, print_rows
from core.model.rnn_model import CaptioningRNN


@dataclass(frozen=True)
class BenchConfig:
    """The measured shapes: N captions of T steps, word vectors W, hidden H, vocabulary V, features I."""
    N: int = 128
    T: int = 16
    W: int = 256
    H: int = 512
    V: int = 1004
    I: int = 512


def step_matmuls(cfg, gates, scored):
    """(m, k, n) of every matmul of one training step, forward then backward; G = gates * H.

    ``scored`` is the number M of (caption, step) positions with a target word: CaptioningRNN scores
    words only there (torch's ignore_index computes all N T rows and drops the padding afterwards).

    FLOPs = sum of 2 m k n =  2 N I H                      (features -> h0)
                             + 3 * 2 (N T) W G              (input projection: forward, dWx, dx)
                             + 3 * 2 (N T) H G              (recurrence: forward, dh_{t-1}, dWh)
                             + 3 * 2 M H V                  (vocabulary scores: forward, dW_vocab, dh)
                             + 2 N I H                      (dW_proj; features need no gradient)
    """
    N, T, W, H, V, I = cfg.N, cfg.T, cfg.W, cfg.H, cfg.V, cfg.I
    G, NT, M = gates * H, cfg.N * cfg.T, scored
    forward = [(N, I, H), (NT, W, G)] + [(N, H, G)] * T + [(M, H, V)]
    backward = [(M, V, H), (H, M, V)] + [(N, G, H)] * T + [(W, NT, G), (NT, G, W), (H, NT, G), (I, N, H)]
    return forward + backward


def matmul_floor(shapes, rng):
    """A function running just the matmuls of ``shapes`` (float32, preallocated outputs) back to back."""
    operands = [(rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32),
                 np.empty((m, n), dtype=np.float32)) for m, k, n in shapes]

    def run():
        for a, b, out in operands:
            np.matmul(a, b, out=out)  # (m, k) @ (k, n) -> (m, n)
    return run


class TorchCaptioner(torch.nn.Module):
    """The same model as CaptioningRNN written with torch modules, trained with autograd."""

    def __init__(self, cfg, cell, null_idx):
        super().__init__()
        self.null_idx = null_idx
        self.proj = torch.nn.Linear(cfg.I, cfg.H)
        self.embed = torch.nn.Embedding(cfg.V, cfg.W)
        self.cell = (torch.nn.LSTM(cfg.W, cfg.H, batch_first=True) if cell == "lstm"
                     else torch.nn.RNN(cfg.W, cfg.H, nonlinearity="tanh", batch_first=True))
        self.vocab = torch.nn.Linear(cfg.H, cfg.V)

    def forward(self, features, captions):
        h0 = self.proj(features).unsqueeze(0)  # (N, I) -> (1, N, H): one layer
        state = (h0, torch.zeros_like(h0)) if isinstance(self.cell, torch.nn.LSTM) else h0
        h, _ = self.cell(self.embed(captions[:, :-1]), state)  # (N, T, W) -> (N, T, H)
        scores = self.vocab(h)  # (N, T, H) -> (N, T, V)
        targets = captions[:, 1:].reshape(-1)  # (N, T) -> (N*T,)
        loss = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), targets,  # (N*T, V)
                               ignore_index=self.null_idx, reduction="sum")
        return loss / features.shape[0]


def make_batch(cfg, rng):
    """Random features (N, I) and captions (N, T + 1): <START>, 8..T-1 random words, <END>, <NULL> padding."""
    features = rng.standard_normal((cfg.N, cfg.I), dtype=np.float32)
    captions = np.zeros((cfg.N, cfg.T + 1), dtype=np.int64)
    captions[:, 0] = 1
    for row, k in enumerate(rng.integers(8, cfg.T, size=cfg.N)):
        captions[row, 1:k + 1] = rng.integers(4, cfg.V, size=k)
        captions[row, k + 1] = 2
    return features, captions


def torch_step(cfg, cell, null_idx, features, captions):
    """A function running one forward + backward of the torch model (float32) on the batch."""
    model = TorchCaptioner(cfg, cell, null_idx)
    features_t, captions_t = torch.from_numpy(features), torch.from_numpy(captions)

    def run():
        model.zero_grad(set_to_none=True)
        model(features_t, captions_t).backward()
    return run


def run_benchmark(cell, repeats, threads):
    """Measure and print the figures described in the module docstring."""
    torch.set_num_threads(threads)
    cfg = BenchConfig()
    rng = np.random.default_rng(0)
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{k}" for k in range(cfg.V - 4)]
    model = CaptioningRNN({w: i for i, w in enumerate(words)}, input_dim=cfg.I, wordvec_dim=cfg.W,
                          hidden_dim=cfg.H, cell_type=cell, dtype=np.float32)
    features, captions = make_batch(cfg, rng)
    scored = int((captions[:, 1:] != model.null_idx).sum())
    shapes = step_matmuls(cfg, 4 if cell == "lstm" else 1, scored)
    flops = sum(2 * m * k * n for m, k, n in shapes)

    seconds = interleaved_medians({"numpy": lambda: model.loss(features, captions),
                                   "torch": torch_step(cfg, cell, model.null_idx, features, captions),
                                   "floor": matmul_floor(shapes, rng)}, repeats=repeats)
    numpy_time, torch_time, floor_time = seconds["numpy"], seconds["torch"], seconds["floor"]
    peak = numpy_matmul_peak(dtype=np.float32)
    print_rows(f"{cell} training step, N={cfg.N} T={cfg.T} W={cfg.W} H={cfg.H} V={cfg.V} I={cfg.I}, float32, "
               f"{threads} thread(s), median of {repeats} rounds taken in turns", [
                   ("numpy step", f"{numpy_time * 1e3:.1f} ms"),
                   ("torch step", f"{torch_time * 1e3:.1f} ms"),
                   ("ratio torch/numpy", f"{torch_time / numpy_time:.2f}"),
                   ("scored positions", f"{scored} of {cfg.N * cfg.T} (the rest is <NULL> padding)"),
                   ("step FLOPs (matmuls)", f"{flops / 1e9:.2f} GFLOP"),
                   ("achieved", f"{flops / numpy_time / 1e9:.1f} GFLOP/s"),
                   ("numpy matmul peak", f"{peak / 1e9:.1f} GFLOP/s"),
                   ("fraction of peak", f"{flops / numpy_time / peak:.0%}"),
                   ("matmul floor (matmuls alone)", f"{floor_time * 1e3:.1f} ms "
                                                    f"({flops / floor_time / peak:.0%} of peak)"),
                   ("non-matmul share of step", f"{max(0.0, 1 - floor_time / numpy_time):.0%}"),
               ])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", choices=["lstm", "rnn"], default="lstm", help="recurrent cell to time")
    parser.add_argument("--repeats", type=int, default=15,
                        help="rounds of timed runs, each measurement once per round (the median is shown)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for numpy's BLAS and for torch (default: all CPU cores)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    return args


def main():
    args = parse_args()
    # OpenBLAS fixes its thread count when numpy is imported, so another count needs a fresh interpreter.
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads))
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.bench_rnn", *sys.argv[1:]], env)
    run_benchmark(args.cell, args.repeats, args.threads)


if __name__ == "__main__":
    main()
