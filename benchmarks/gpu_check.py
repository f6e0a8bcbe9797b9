"""Train each hand-written model kind a few steps on CUDA through the torch and CuPy backends and compare with numpy.

Run: python -m benchmarks.gpu_check [--steps 5] [--device cuda] [--small]

For rnn, lstm and att_lstm, the same initial weights and minibatch train ``--steps`` Adam steps on numpy (the
reference), on torch tensors and on CuPy arrays (where CuPy is installed). Printed per kind and backend:
- in float64 at small sizes, the largest difference of the per-step losses (relative) and of the final weights
  (absolute) from numpy's: the same equations on other kernels, expected near 1e-10;
- in float32 at the benchmarks' sizes (bench_rnn, bench_att_lstm; tiny ones with ``--small``), the median step
  time, and numpy's over it.
Without a CUDA device it says so and exits 0; ``--device cpu`` runs the torch backend on the CPU instead (a check
of this script itself).
"""
import argparse
import time

import numpy as np

from benchmarks import bench_att_lstm, bench_rnn
from benchmarks.harness import make_captions, print_rows, report_machine, synchronize
from core.data.layout import SPECIAL_TOKENS
from core.model.registry import model_kind
from core.runtime.arrays import pick_backend
from core.runtime.errors import UserError
from core.training.recipes import OptimConfig, recipe

KINDS = ("rnn", "lstm", "att_lstm")
CHECK_SIZES = {"N": 16, "T": 8, "W": 32, "H": 64, "V": 100, "I": 48, "R": 16, "C": 32, "A": 32}
TINY_SIZES = {"N": 8, "T": 6, "W": 8, "H": 16, "V": 30, "I": 12, "R": 4, "C": 8, "A": 8}
LR = 1e-3


def bench_sizes(kind):
    """The benchmark's shapes for ``kind``: bench_att_lstm's for a grid reader, bench_rnn's for the others."""
    grid = model_kind(kind).make_config({}).reads_grid
    config = bench_att_lstm.BenchConfig() if grid else bench_rnn.BenchConfig()
    return {**TINY_SIZES, **vars(config)}


def setup(kind_name, sizes, dtype, backend, rng):
    """A model of ``kind_name`` on ``backend`` (seed 0), its updater, and one minibatch (features, captions)."""
    kind = model_kind(kind_name)
    grid = kind.make_config({}).reads_grid
    shape = (sizes["N"], sizes["R"], sizes["C"]) if grid else (sizes["N"], sizes["I"])
    features = np.abs(rng.standard_normal(shape)).astype(np.float32)
    captions = make_captions(sizes["N"], sizes["T"], sizes["V"], rng)
    options = {"wordvec_dim": sizes["W"], "hidden_dim": sizes["H"], "dtype": dtype}
    if "att_dim" in kind.option_names():
        options["att_dim"] = sizes["A"]
    config = kind.make_config(options).for_data(features)
    words = [*SPECIAL_TOKENS, *(f"w{k}" for k in range(sizes["V"] - len(SPECIAL_TOKENS)))]
    import torch

    device = torch.device(backend.device)
    model = kind.build({word: k for k, word in enumerate(words)}, config, seed=0, device=device, backend=backend.name)
    return model, recipe(kind).make_updater(model, OptimConfig(lr=LR)), features, captions


def train(kind_name, sizes, dtype, backend, steps):
    """(losses of each step, final weights as numpy, median seconds of a step after the first) on ``backend``."""
    model, updater, features, captions = setup(kind_name, sizes, dtype, backend, np.random.default_rng(0))
    losses, seconds = [], []
    for _ in range(steps):
        start = time.perf_counter()
        losses.append(updater.train_step(features, captions, LR))
        synchronize(model.backend)
        seconds.append(time.perf_counter() - start)
    return np.array(losses), updater.snapshot(), float(np.median(seconds[1:] or seconds))


def backends_here(device):
    """The non-numpy backends that can run on ``device`` here, and a note for each that cannot."""
    found, notes = [], []
    for name in ("torch", "cupy"):
        try:
            found.append(pick_backend(name, device))
        except UserError as err:
            notes.append(str(err))
    return found, notes


def check_kind(kind, backends, steps, small):
    """The rows of one kind: agreement with numpy in float64, step times in float32."""
    reference = train(kind, CHECK_SIZES, "float64", pick_backend("numpy"), steps)
    sizes = TINY_SIZES if small else bench_sizes(kind)
    numpy_seconds = train(kind, sizes, "float32", pick_backend("numpy"), steps)[2]
    rows = [("numpy float32 step", f"{numpy_seconds * 1e3:.1f} ms")]
    for backend in backends:
        losses, weights, _ = train(kind, CHECK_SIZES, "float64", backend, steps)
        loss_diff = float(np.max(np.abs(losses - reference[0]) / np.abs(reference[0])))
        weight_diff = max(float(np.max(np.abs(weights[name] - value))) for name, value in reference[1].items())
        seconds = train(kind, sizes, "float32", backend, steps)[2]
        label = f"{backend.name} on {backend.device}"
        rows += [(f"{label}: float64 losses, largest relative difference", f"{loss_diff:.1e}"),
                 (f"{label}: float64 weights, largest difference", f"{weight_diff:.1e}"),
                 (f"{label}: float32 step", f"{seconds * 1e3:.1f} ms ({numpy_seconds / seconds:.1f}x numpy)")]
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="Adam steps per run (default 5)")
    p.add_argument("--device", default="cuda", help="where torch and CuPy compute: cuda[:N], or cpu (default cuda)")
    p.add_argument("--small", action="store_true", help="tiny sizes for the timings too: a check that it runs")
    args = p.parse_args(argv)
    backends, notes = backends_here(args.device)
    for note in notes:
        print(f"skipped: {note}")
    if not backends:
        print("no backend but numpy can run here: nothing to check (a GPU check needs CUDA)")
        return 0
    report_machine()
    for kind in KINDS:
        print_rows(f"{kind}: {args.steps} Adam steps, float64 check at {CHECK_SIZES}, float32 timings at "
                   f"{TINY_SIZES if args.small else bench_sizes(kind)}", check_kind(kind, backends, args.steps,
                                                                                    args.small))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
