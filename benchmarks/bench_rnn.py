"""Time one CaptioningRNN training step (forward + backward) against torch and against the matmul peak.

Run: python -m benchmarks.bench_rnn [--cell lstm] [--repeats 15] [--threads 2] [--backend numpy torch] [--dense]

Reports, measured in the same run with the same thread count:
- the hand-written step (CaptioningRNN.loss) on each array backend asked for (numpy by default; torch tensors:
  our backward on torch's kernels) and the same step in torch (nn.LSTM/nn.RNN + nn.Linear + cross-entropy,
  autograd), and their ratios torch/backend (>= 1: the backend at least as fast). CaptioningRNN computes only
  the steps each caption runs (core.layers.packing); torch is timed both on the plain padded batch and on a
  PackedSequence, which skips the same steps; ``--dense`` makes every caption full length (nothing to skip);
- the step's FLOP count (its matmuls) over the first backend's step time, as FLOP/s and as a fraction of numpy's
  (n, n) @ (n, n) matmul throughput, timed in the same rounds (median; the fastest round too);
- the "matmul floor": the time of the step's matmuls alone, same shapes, in the same order, in numpy and in
  torch. The gap between a floor and its step is the elementwise work (gate nonlinearities, softmax), which
  numpy runs on one core. torch's step over a backend's floor is the ceiling of that backend's ratio: the
  ratio it would reach if everything but its matmuls took no time.
"""
import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

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
from core.data.layout import NULL, SPECIAL_TOKENS
from core.layers.packing import Packing
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


def step_matmuls(cfg, gates, sizes, scored):
    """(m, k, n) of every matmul of one training step, forward then backward; G = gates * H.

    ``sizes`` (T,) holds n_t, the captions still running at step t, and P = sum(sizes): the recurrent
    cell computes only those positions (core.layers.packing). ``scored`` is the number M of positions with a
    target word: CaptioningRNN scores words only there (M <= P; here M = P).

    FLOPs = sum of 2 m k n =  2 N I H                      (features -> h0)
                             + 3 * 2 P W G                  (input projection: forward, dWx, dx)
                             + 3 * 2 P H G                  (recurrence: forward, dh_{t-1}, dWh)
                             + 3 * 2 M H V                  (vocabulary scores: forward, dW_vocab, dh)
                             + 2 N I H                      (dW_proj; features need no gradient)
    """
    N, W, H, V, I = cfg.N, cfg.W, cfg.H, cfg.V, cfg.I
    G, P, M = gates * H, int(sum(sizes)), scored
    forward = [(N, I, H), (P, W, G)] + [(n, H, G) for n in sizes] + [(M, H, V)]
    backward = ([(M, V, H), (H, M, V)] + [(n, G, H) for n in reversed(sizes)]
                + [(W, P, G), (P, G, W), (H, P, G), (I, N, H)])
    return forward + backward


def matmul_floor(shapes, rng, library=np):
    """A function running just the matmuls of ``shapes`` (float32, preallocated outputs) back to back, with
    ``library``'s matmul: numpy, or torch (its CPU tensors share the numpy arrays' memory)."""
    wrap = torch.from_numpy if library is torch else np.asarray
    operands = [tuple(wrap(v) for v in (rng.standard_normal((m, k), dtype=np.float32),
                                        rng.standard_normal((k, n), dtype=np.float32),
                                        np.empty((m, n), dtype=np.float32))) for m, k, n in shapes]

    def run():
        for a, b, out in operands:
            library.matmul(a, b, out=out)  # (m, k) @ (k, n) -> (m, n)
    return run


class TorchCaptioner(torch.nn.Module):
    """The same model as CaptioningRNN written with torch modules, trained with autograd.

    ``packed``: run the cell on a PackedSequence, only the steps each caption runs (as CaptioningRNN
    does), and score only those; otherwise the plain padded (N, T) batch with ignore_index.
    """

    def __init__(self, cfg, cell, null_idx, packed):
        super().__init__()
        self.null_idx, self.packed = null_idx, packed
        self.proj = torch.nn.Linear(cfg.I, cfg.H)
        self.embed = torch.nn.Embedding(cfg.V, cfg.W)
        self.cell = (torch.nn.LSTM(cfg.W, cfg.H, batch_first=True) if cell == "lstm"
                     else torch.nn.RNN(cfg.W, cfg.H, nonlinearity="tanh", batch_first=True))
        self.vocab = torch.nn.Linear(cfg.H, cfg.V)

    def forward(self, features, captions):
        h0 = self.proj(features).unsqueeze(0)  # (N, I) -> (1, N, H): one layer
        state = (h0, torch.zeros_like(h0)) if isinstance(self.cell, torch.nn.LSTM) else h0
        words, targets = self.embed(captions[:, :-1]), captions[:, 1:]  # (N, T, W), (N, T)
        if self.packed:
            lengths = (targets != self.null_idx).sum(dim=1)  # <NULL> pads only the end of a caption
            words = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
            targets = pack_padded_sequence(targets, lengths, batch_first=True, enforce_sorted=False).data
        h, _ = self.cell(words, state)
        h = h.data if self.packed else h.reshape(-1, h.shape[-1])  # (P, H) or (N, T, H) -> (N*T, H)
        loss = F.cross_entropy(self.vocab(h), targets.reshape(-1), ignore_index=self.null_idx, reduction="sum")
        return loss / features.shape[0]


def make_batch(cfg, rng, dense=False):
    """Random features (N, I) and captions (N, T + 1), see benchmarks.harness.make_captions."""
    features = rng.standard_normal((cfg.N, cfg.I), dtype=np.float32)
    return features, make_captions(cfg.N, cfg.T, cfg.V, rng, dense)


def torch_step(cfg, cell, null_idx, features, captions, packed):
    """A function running one forward + backward of the torch model (float32) on the batch."""
    model = TorchCaptioner(cfg, cell, null_idx, packed)
    features_t, captions_t = torch.from_numpy(features), torch.from_numpy(captions)

    def run():
        model.zero_grad(set_to_none=True)
        model(features_t, captions_t).backward()
    return run


def contenders(cell, cfg, rng, backends=("numpy",), device="cpu", dense=False):
    """What the benchmark times, in turns: the hand-written step on each backend, the torch step (padded and
    packed), the step's matmuls alone and the peak probe. Returns (name -> function, the sizes n_t, the step's
    FLOPs, the probe's)."""
    words = list(SPECIAL_TOKENS) + [f"w{k}" for k in range(cfg.V - len(SPECIAL_TOKENS))]

    def make_model():
        return CaptioningRNN({w: i for i, w in enumerate(words)}, input_dim=cfg.I, wordvec_dim=cfg.W,
                             hidden_dim=cfg.H, cell_type=cell, dtype=np.float32)
    null_idx = make_model().null_idx
    features, captions = make_batch(cfg, rng, dense)
    lengths = (captions[:, 1:] != null_idx).sum(axis=1)  # padding only at the end: all positions scored
    sizes = Packing.of(lengths, cfg.N, cfg.T).sizes
    shapes = step_matmuls(cfg, 4 if cell == "lstm" else 1, sizes, scored=int(lengths.sum()))
    probe, probe_flops = matmul_peak_probe()
    fns = {**backend_steps(make_model, features, captions, backends, device),
           "torch": torch_step(cfg, cell, null_idx, features, captions, packed=False),
           "torch packed": torch_step(cfg, cell, null_idx, features, captions, packed=True),
           "floor": matmul_floor(shapes, rng),
           "torch floor": matmul_floor(shapes, rng, library=torch),
           "peak": probe}
    return fns, sizes, sum(2 * m * k * n for m, k, n in shapes), probe_flops


def run_benchmark(cell, repeats, threads, backends=("numpy",), device="cpu", dense=False, cfg=BenchConfig()):
    """Measure and print the figures described in the module docstring."""
    torch.set_num_threads(threads)
    fns, sizes, flops, probe_flops = contenders(cell, cfg, np.random.default_rng(0), backends, device, dense)
    times = interleaved_times(fns, repeats=repeats)
    seconds = {name: float(np.median(t)) for name, t in times.items()}
    step_time, floor_time = seconds[f"{backends[0]} backend"], seconds["floor"]
    peak, fastest_peak = probe_flops / seconds["peak"], probe_flops / min(times["peak"])
    rows = []
    for name in backends:
        step = seconds[f"{name} backend"]
        rows += [(f"{name} backend step", f"{step * 1e3:.1f} ms"),
                 (f"ratio torch autograd padded/{name} backend", f"{seconds['torch'] / step:.2f}"),
                 (f"ratio torch autograd packed/{name} backend", f"{seconds['torch packed'] / step:.2f}")]
    print_rows(f"{cell} training step, N={cfg.N} T={cfg.T} W={cfg.W} H={cfg.H} V={cfg.V} I={cfg.I}, float32, "
               f"{'dense' if dense else 'realistic lengths'}, {threads} thread(s), device {device}, median of "
               f"{repeats} rounds taken in turns; FLOP rates of the {backends[0]} backend", rows + [
                   ("torch step, padded batch", f"{seconds['torch'] * 1e3:.1f} ms"),
                   ("torch step, PackedSequence", f"{seconds['torch packed'] * 1e3:.1f} ms"),
                   ("positions computed", f"{sizes.sum()} of {cfg.N * cfg.T} (the rest is {NULL} padding)"),
                   ("step FLOPs (matmuls)", f"{flops / 1e9:.2f} GFLOP"),
                   ("achieved", f"{flops / step_time / 1e9:.1f} GFLOP/s"),
                   ("numpy matmul peak", f"{peak / 1e9:.1f} GFLOP/s, (1024, 1024) products in the same rounds "
                                         f"(fastest round {fastest_peak / 1e9:.1f})"),
                   ("fraction of peak", f"{flops / step_time / peak:.0%} "
                                        f"({flops / step_time / fastest_peak:.0%} of the fastest round)"),
                   ("matmul floor (matmuls alone)", f"{floor_time * 1e3:.1f} ms "
                                                    f"({flops / floor_time / peak:.0%} of peak)"),
                   ("non-matmul share of step", f"{max(0.0, 1 - floor_time / step_time):.0%}"),
                   ("torch matmul floor (same matmuls)", f"{seconds['torch floor'] * 1e3:.1f} ms"),
                   ("ceiling of ratio torch padded/numpy", f"{seconds['torch'] / floor_time:.2f} (torch step over "
                                                           "the numpy floor)"),
                   ("ceiling of ratio torch padded/torch backend", f"{seconds['torch'] / seconds['torch floor']:.2f} "
                                                                   "(torch step over the torch floor)"),
               ])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", choices=["lstm", "rnn"], default="lstm", help="recurrent cell to time (default lstm)")
    add_rounds_and_threads(parser, repeats=15)
    add_backend_flags(parser)
    return check_rounds_and_threads(parser, parser.parse_args(argv))


def main():
    args = parse_args()
    pin_blas_threads("benchmarks.bench_rnn", args.threads)
    report_machine()
    report_blas()
    run_benchmark(args.cell, args.repeats, args.threads, args.backend, args.device, args.dense)


if __name__ == "__main__":
    main()
