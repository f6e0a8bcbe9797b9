"""Scaling on one machine: training steps per second of 2 processes x 1 thread (torchrun, gloo) against
1 process x 2 threads, same global minibatch, and the share of a distributed step spent communicating.

Run: python -m benchmarks.bench_distributed [--models lstm transformer] [--batch-size 128] [--steps 20] [--rounds 3]
     [--reduce-dtype float32]

Each model runs at its default size on shapes-sized inputs (512-d features, captions of 17 tokens, the default
dataset's 1,004 words), with synthetic captions. The two set-ups are launched as fresh processes in turns, a
round each, and the median over the rounds is reported. Communication share: for the numpy models, the time the
step spends on its gradients' all-reduces, which overlap the backward pass (handing each gradient over, and the
wait before the update), over the step; the Transformer's, whose all-reduce DDP overlaps with its backward pass,
as 1 - (step under ``no_sync``) / (step). The bound on that share: the all-reduce of every gradient alone (each
parameter's for the numpy models, as they reduce them; 25 MB buckets for DDP), with nothing computing beside it,
over the step (on two cores both busy with the step, the communication finds no idle core to overlap onto).
``--reduce-dtype`` bfloat16 or float16: the 2-process runs all-reduce their gradients in it (training.py's flag),
and the bound all-reduces buffers of it.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import print_rows, report_blas, report_machine
from core.data.layout import SPECIAL_TOKENS
from core.runtime.gradient_reduction import REDUCE_DTYPES

ROOT = Path(__file__).resolve().parents[1]
VOCAB, FEATURES, TOKENS = 1004, 512, 17
SMALL = {"numpy": {"wordvec_dim": 16, "hidden_dim": 16}, "torch": {"wordvec_dim": 16, "num_heads": 2, "num_layers": 1}}


class TimedGroup:
    """A core.runtime.distributed.Group whose gradient reduction is timed where the step waits on it: handing each
    gradient over (scaling, copying, starting its all-reduce) and the wait before the update."""

    def __init__(self, group):
        self.group, self.seconds = group, 0.0

    def __getattr__(self, name):
        return getattr(self.group, name)

    def gradient_reducer(self, share):
        return TimedGradients(self.group.gradient_reducer(share), self)


class TimedGradients(dict):
    """An OverlappedGradients whose calls add their wall time to ``timer.seconds``."""

    def __init__(self, reducer, timer):
        super().__init__()
        self.reducer, self.timer = reducer, timer

    def __setitem__(self, name, grad):
        start = time.perf_counter()
        self.reducer[name] = grad
        super().__setitem__(name, self.reducer[name])
        self.timer.seconds += time.perf_counter() - start

    def update(self, grads=(), **more):
        for name, grad in dict(grads, **more).items():
            self[name] = grad

    def finish(self, loss):
        start = time.perf_counter()
        try:
            return self.reducer.finish(loss)
        finally:
            self.timer.seconds += time.perf_counter() - start


def synthetic_batch(batch_size, seed=0):
    """Features (N, 512) and captions (N, 17): <START>, 8-15 random words, <END>, <NULL> padding."""
    rng = np.random.default_rng(seed)
    captions = np.zeros((batch_size, TOKENS), dtype=np.int32)
    for row, length in zip(captions, rng.integers(8, 16, batch_size)):
        row[0], row[1:length + 1], row[length + 1] = 1, rng.integers(4, VOCAB, length), 2
    return rng.standard_normal((batch_size, FEATURES)).astype(np.float32), captions


def all_reduce_alone(sizes, group, count=30):
    """Seconds of one all-reduce of gradients of ``sizes`` (element counts), in the group's ``reduce_dtype``, all
    started at once and then waited for, as the step does, with nothing else computing; the median of ``count``."""
    import torch

    buffers = [torch.ones(size, dtype=getattr(torch, group.reduce_dtype)) for size in sizes]
    seconds = []
    for _ in range(count):
        group.barrier()
        start = time.perf_counter()
        for work in [torch.distributed.all_reduce(buffer, async_op=True) for buffer in buffers]:
            work.wait()
        seconds.append(time.perf_counter() - start)
    group.barrier()  # no rank leaves the group while another still exchanges with it
    return float(np.median(seconds))


def ddp_buckets(total, bucket_bytes=25 * 2 ** 20):
    """Element counts of the float32 buckets DistributedDataParallel all-reduces ``total`` gradient elements in (its
    default bucket_cap_mb is 25)."""
    per_bucket = bucket_bytes // 4
    return [per_bucket] * (total // per_bucket) + ([total % per_bucket] if total % per_bucket else [])


def worker(args):
    """One set-up's steps, in this process (of a torchrun group or alone); rank 0 prints a JSON line."""
    import torch

    from core.model.registry import model_kind
    from core.runtime.distributed import process_group
    from core.training.recipes import recipe

    kind = model_kind(args.model)
    features, captions = synthetic_batch(args.batch_size)
    words = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(len(SPECIAL_TOKENS), VOCAB))]
    word_to_idx = {word: i for i, word in enumerate(words)}
    with process_group(reduce_dtype=args.reduce_dtype) as group:
        config = kind.make_config(SMALL[kind.framework] if args.small else {})
        model = kind.build(word_to_idx, config.for_data(features), device=torch.device("cpu"))
        updater = recipe(kind).make_updater(model, recipe(kind).optim, torch.device("cpu"), group)
        timed = TimedGroup(group)
        if group.distributed and kind.framework == "numpy":
            updater.group = timed
        mine = group.shard(np.arange(args.batch_size))
        share = updater.loss_units(captions[mine]) / updater.loss_units(captions)
        rng = np.random.default_rng(0)

        def steps(count):
            group.barrier()
            start = time.perf_counter()
            for _ in range(count):
                updater.train_step(features[mine], captions[mine], 1e-4, rng, share)
            group.barrier()
            return time.perf_counter() - start

        steps(2)  # warm-up
        timed.seconds = 0.0
        seconds = steps(args.steps)
        comm = timed.seconds / seconds if kind.framework == "numpy" else 0.0
        if group.distributed and kind.framework == "torch":
            with updater.trainer.no_sync():
                comm = max(0.0, 1 - steps(args.steps) / seconds)
        alone = 0.0
        if group.distributed:
            params = model.params.values() if kind.framework == "numpy" else model.parameters()
            sizes = [int(np.prod(p.shape)) for p in params]
            if kind.framework == "torch":  # DDP reduces buckets of gradients, not each parameter's
                sizes = ddp_buckets(sum(sizes))
            alone = all_reduce_alone(sizes, group) / (seconds / args.steps)
        if group.is_main:
            print(json.dumps({"steps_per_second": args.steps / seconds, "communication": comm,
                              "all_reduce_alone": alone}), flush=True)


def launch(model, processes, args):
    """Steps/s and communication share of one set-up: a fresh torchrun group, or one process with 2 threads."""
    flags = ["-m", "benchmarks.bench_distributed", "--worker", "--model", model, "--batch-size",
             str(args.batch_size), "--steps", str(args.steps), "--reduce-dtype", args.reduce_dtype,
             *(["--small"] if args.small else [])]
    if processes == 1:
        command, threads = [sys.executable, *flags], str(args.threads)
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        command, threads = [torchrun, "--standalone", "--nproc_per_node", str(processes), *flags], "1"
    env = dict(os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["lstm", "transformer"])
    p.add_argument("--batch-size", type=int, default=128, help="the global minibatch, N")
    p.add_argument("--steps", type=int, default=20, help="timed steps per launch")
    p.add_argument("--rounds", type=int, default=3, help="launches of each set-up, in turns")
    p.add_argument("--threads", type=int, default=2, help="threads of the single process")
    p.add_argument("--reduce-dtype", choices=REDUCE_DTYPES, default=REDUCE_DTYPES[0],
                   help=f"what the 2-process runs all-reduce gradients in, and the bound (default {REDUCE_DTYPES[0]})")
    p.add_argument("--small", action="store_true", help="tiny models: a check that the benchmark runs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    report_machine()
    report_blas()
    rng = np.random.default_rng(0)
    for model in args.models:
        results = {1: [], 2: []}
        for _ in range(args.rounds):
            for processes in rng.permutation([1, 2]):
                results[int(processes)].append(launch(model, int(processes), args))
        one = float(np.median([r["steps_per_second"] for r in results[1]]))
        two = float(np.median([r["steps_per_second"] for r in results[2]]))
        comm = float(np.median([r["communication"] for r in results[2]]))
        alone = float(np.median([r["all_reduce_alone"] for r in results[2]]))
        print_rows(f"{model}: global batch {args.batch_size}, {args.steps} steps a launch, median of {args.rounds}, "
                   f"gradients all-reduced in {args.reduce_dtype}", [
            (f"1 process x {args.threads} threads", f"{one:.2f} steps/s"),
            ("2 processes x 1 thread (gloo)", f"{two:.2f} steps/s"),
            ("speed-up (2 processes / 1)", f"{two / one:.2f}x"),
            ("communication share of a 2-process step", f"{100 * comm:.1f}%"),
            ("all-reduce of every gradient alone, over a step", f"{100 * alone:.1f}%")])


if __name__ == "__main__":
    main()
