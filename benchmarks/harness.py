"""Timing helpers shared by the benchmarks: medians of repeated runs, the machine's matmul peak, which CPU, kernel
and BLAS they ran on, and the hand-written models' step on each array backend.

Benchmarks report ratios against a reference measured in the same run, never absolute targets.
"""
import os
import sys
import time

import numpy as np

from core.data.layout import SPECIAL_TOKENS
from core.runtime.arrays import BACKENDS, pick_backend
from core.runtime.machine import blas_lines, cpu_line


def time_call(fn, repeats=5, warmup=1):
    """Median wall time in seconds of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def interleaved_times(fns, repeats=5, warmup=2, seed=0):
    """Wall seconds of every function in ``fns`` (a dict name -> callable), timed in turns, one per round.

    Each round gives every function a turn, in a fresh random order, so a burst of load from elsewhere
    on a shared machine slows all of them rather than whichever happened to be running. A turn runs its
    function twice and times the second run: the first absorbs the previous turn's worker threads, which
    keep spinning for a while after their library returns (OpenBLAS, OpenMP) and would otherwise steal
    cores from whoever runs next. Returns a dict name -> list of ``repeats`` seconds.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rng = np.random.default_rng(seed)
    names = list(fns)
    times = {name: [] for name in names}
    for _ in range(repeats):
        for name in rng.permutation(names):
            fns[name]()
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(fns, repeats=5, warmup=2, seed=0):
    """Median wall seconds of every function in ``fns``, timed in turns (see interleaved_times)."""
    times = interleaved_times(fns, repeats=repeats, warmup=warmup, seed=seed)
    return {name: float(np.median(seconds)) for name, seconds in times.items()}


def matmul_peak_probe(n=1024, products=8, dtype=np.float32):
    """A function running ``products`` numpy (n, n) @ (n, n) matmuls back to back, and their FLOP count.

    Timed in turns with the code it is the ceiling for, it measures the machine's matmul throughput
    under the same load: on a shared machine a peak taken at another moment can be off by a third.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)

    def run():
        for _ in range(products):
            np.matmul(a, b, out=out)  # (n, n) @ (n, n) -> (n, n)
    return run, 2.0 * n ** 3 * products


def print_rows(title, rows):
    """Print ``rows`` (a list of (label, value) pairs) under ``title`` as an aligned table."""
    print(title)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def report_machine():
    """Print and return the line naming the CPU model, its logical cores and the operating system's kernel."""
    line = cpu_line()
    print(line)
    return line


def report_blas():
    """Print and return the lines naming numpy's BLAS (``core.runtime.machine.blas_lines``)."""
    lines = blas_lines()
    for line in lines:
        print(line)
    return lines


def add_rounds_and_threads(parser, repeats):
    """The flags every step benchmark takes: --repeats rounds (default ``repeats``) and --threads."""
    parser.add_argument("--repeats", type=int, default=repeats,
                        help="rounds of timed runs, each measurement once per round (the median is shown)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for numpy's BLAS and for torch (default: all CPU cores)")


def check_rounds_and_threads(parser, args):
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    return args


def pin_blas_threads(module, threads):
    """Run ``python -m module`` again with OPENBLAS_NUM_THREADS=threads unless already so: OpenBLAS fixes its
    thread count when numpy is imported, so another count needs a fresh interpreter (returns only when set)."""
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(threads):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
        os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def add_backend_flags(parser):
    """The flags of the hand-written models' step benchmarks: --backend (each timed), --device, --dense."""
    parser.add_argument("--backend", nargs="+", choices=BACKENDS, default=["numpy"],
                        help="array backends of the hand-written step to time, each against torch autograd "
                             "(default numpy)")
    parser.add_argument("--device", default="cpu",
                        help="where the torch and cupy backends compute: cpu or cuda[:N] (default cpu)")
    parser.add_argument("--dense", action="store_true",
                        help="every caption full length (no padding), instead of lengths 8 to T-1")


def backend_steps(make_model, features, captions, backends, device):
    """A function per backend (``"<name> backend"``) running one training step (``loss``) of a fresh
    ``make_model()`` moved to it, and waiting for the device to finish."""
    fns = {}
    for name in backends:
        backend = pick_backend(name, device)
        model = make_model().to_backend(backend)

        def run(model=model, backend=backend):
            model.loss(features, captions)
            synchronize(backend)
        fns[f"{name} backend"] = run
    return fns


def synchronize(backend):
    """Wait until ``backend``'s device has done the work queued on it (CUDA runs asynchronously)."""
    if backend.device.startswith("cuda"):
        if backend.name == "torch":
            import torch

            torch.cuda.synchronize(backend.device)
        else:
            import cupy

            cupy.cuda.Device(int(backend.device.partition(":")[2] or 0)).synchronize()


def make_captions(N, T, V, rng, dense=False):
    """Random captions (N, T + 1): the start token, 8 to T-1 random words (T - 1, every caption full length, when
    ``dense``), the end token, then null padding; words drawn after the special tokens, below V."""
    captions = np.zeros((N, T + 1), dtype=np.int64)
    captions[:, 0] = 1
    lengths = np.full(N, T - 1) if dense else rng.integers(min(8, T - 1), T, size=N)
    for row, k in enumerate(lengths):
        captions[row, 1:k + 1] = rng.integers(len(SPECIAL_TOKENS), V, size=k)
        captions[row, k + 1] = 2
    return captions
