"""benchmarks.bench_att_lstm: the FLOP count of the attention LSTM step, and one tiny run of the whole benchmark
(no timings asserted)."""
import numpy as np
import torch

from benchmarks.bench_att_lstm import BenchConfig, run_benchmark, step_matmuls


def test_step_flops_follow_the_formula():
    cfg = BenchConfig(N=4, T=3, W=5, H=6, V=7, R=9, C=8, A=10)
    sizes = np.array([4, 3, 1])
    D, P, M = cfg.C + 2, sizes.sum(), 6
    for gate, K in ((True, 4 * cfg.H + cfg.A + 1), (False, 4 * cfg.H + cfg.A)):
        flops = sum(2 * m * k * n for m, k, n in step_matmuls(cfg, sizes, scored=M, gate=gate))
        expected = 2 * (4 * cfg.N * D * cfg.H + 2 * cfg.N * cfg.R * D * cfg.A + 3 * P * cfg.W * 4 * cfg.H
                        + 3 * P * cfg.H * K + 2 * P * cfg.R * cfg.A + 2 * P * cfg.R * D
                        + 3 * P * D * 4 * cfg.H + 3 * M * cfg.H * cfg.V)
        assert flops == expected


def test_a_tiny_run_prints_every_figure(capsys):
    run_benchmark(BenchConfig(N=6, T=5, W=4, H=8, V=20, R=4, C=6, A=5), repeats=1,
                  threads=torch.get_num_threads(),  # the benchmark sets torch's thread count: keep it
                  backends=("numpy", "torch"), dense=True)
    out = capsys.readouterr().out
    for label in ("numpy backend step", "torch backend step", "torch step", "ratio torch autograd/numpy backend",
                  "ratio torch autograd/torch backend", "dense", "step FLOPs", "fraction of peak",
                  "torch backend, time by operator", "ceiling of ratio torch autograd/torch backend"):
        assert label in out
