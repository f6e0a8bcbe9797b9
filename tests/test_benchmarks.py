"""benchmarks: the FLOP count of the RNN step and the timing harness's bookkeeping (no timings asserted)."""
import numpy as np

from benchmarks.bench_rnn import BenchConfig, step_matmuls
from benchmarks.harness import interleaved_times, matmul_peak_probe


def test_step_flops_follow_the_formula():
    cfg = BenchConfig(N=4, T=3, W=5, H=6, V=7, I=8)
    sizes = np.array([4, 3, 1])
    G, P, M = 4 * cfg.H, sizes.sum(), 6
    flops = sum(2 * m * k * n for m, k, n in step_matmuls(cfg, 4, sizes, scored=M))
    expected = 2 * (2 * cfg.N * cfg.I * cfg.H + 3 * P * cfg.W * G + 3 * P * cfg.H * G + 3 * M * cfg.H * cfg.V)
    assert flops == expected


def test_interleaved_times_gives_every_function_a_timed_turn_per_round():
    calls = {"a": 0, "b": 0}

    def counter(name):
        def run():
            calls[name] += 1
        return run
    times = interleaved_times({name: counter(name) for name in calls}, repeats=4, warmup=1)
    assert {name: len(seconds) for name, seconds in times.items()} == {"a": 4, "b": 4}
    assert calls == {"a": 1 + 2 * 4, "b": 1 + 2 * 4}  # warm-up, then an untimed and a timed run per turn


def test_matmul_peak_probe_counts_its_flops():
    run, flops = matmul_peak_probe(n=8, products=3)
    run()
    assert flops == 3 * 2 * 8 ** 3
