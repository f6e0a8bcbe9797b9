"""benchmarks: the FLOP count of the RNN step, a tiny run of it on two backends, the timing harness's bookkeeping
(no timings asserted) and its machine and BLAS reports."""
import numpy as np
import pytest
import torch

from benchmarks.bench_rnn import BenchConfig, run_benchmark, step_matmuls
from benchmarks.harness import interleaved_times, make_captions, matmul_peak_probe, report_blas, report_machine
from core.runtime import machine


def test_step_flops_follow_the_formula():
    cfg = BenchConfig(N=4, T=3, W=5, H=6, V=7, I=8)
    sizes = np.array([4, 3, 1])
    G, P, M = 4 * cfg.H, sizes.sum(), 6
    flops = sum(2 * m * k * n for m, k, n in step_matmuls(cfg, 4, sizes, scored=M))
    expected = 2 * (2 * cfg.N * cfg.I * cfg.H + 3 * P * cfg.W * G + 3 * P * cfg.H * G + 3 * M * cfg.H * cfg.V)
    assert flops == expected


def test_a_tiny_rnn_run_prints_every_backend(capsys):
    run_benchmark("lstm", repeats=1, threads=torch.get_num_threads(), backends=("numpy", "torch"), dense=True,
                  cfg=BenchConfig(N=6, T=5, W=4, H=8, V=20, I=6))
    out = capsys.readouterr().out
    for label in ("numpy backend step", "torch backend step", "ratio torch autograd padded/torch backend",
                  "non-matmul share", "torch matmul floor", "ceiling of ratio torch padded/numpy",
                  "ceiling of ratio torch padded/torch backend"):
        assert label in out
    assert any(line.split()[:2] == ["positions", "computed"] and "30 of 30" in line for line in out.splitlines())


def test_dense_captions_run_every_step():
    rng = np.random.default_rng(0)
    dense, realistic = make_captions(5, 12, 30, rng, dense=True), make_captions(50, 12, 30, rng)
    assert np.all(dense[:, 1:12] >= 4) and np.all(dense[:, 12] == 2)
    words = (realistic[:, 1:] >= 4).sum(axis=1)
    assert words.min() >= 8 and words.max() <= 11 and np.all(realistic[np.arange(50), words + 1] == 2)


def test_report_machine_names_the_cpu_and_kernel(capsys):
    line = report_machine()
    assert line.startswith("CPU: ") and "logical cores; kernel " in line and capsys.readouterr().out == line + "\n"


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


def blas_info(filepath, internal_api, architecture=None):
    """One entry as threadpoolctl.threadpool_info gives it."""
    return {"user_api": "blas", "internal_api": internal_api, "filepath": filepath, "version": "0.3.27",
            "num_threads": 2, "architecture": architecture}


def test_report_blas_names_numpys_library_kernel_and_threads(monkeypatch, capsys):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    loaded = [blas_info("/venv/torch/lib/libmkl.so", "mkl"),
              blas_info("/venv/numpy.libs/libscipy_openblas64_.so", "openblas", "Haswell")]
    monkeypatch.setattr(machine.threadpoolctl, "threadpool_info", lambda: loaded)
    expected = ["numpy BLAS: openblas 0.3.27, kernel Haswell, 2 threads"]
    assert report_blas() == expected
    assert capsys.readouterr().out.splitlines() == expected


def test_report_blas_falls_back_on_numpys_build_config(monkeypatch):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(machine.threadpoolctl, "threadpool_info", lambda: [])
    built = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    (line,) = report_blas()
    assert line.startswith(f"numpy BLAS: {built['name']} ") and "install threadpoolctl" in line


def test_report_blas_warns_only_when_openblas_coretype_is_set(monkeypatch, capsys):
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    (line,) = report_blas()
    assert line.startswith("numpy BLAS: ")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    lines = report_blas()
    assert lines[0] == line and len(lines) == 2
    assert lines[1].startswith("warning: OPENBLAS_CORETYPE=Haswell is set: numpy uses older kernels")
    assert capsys.readouterr().out.splitlines() == [line, *lines]


def test_scst_benchmark_runs_and_reports_the_rewards_share(capsys):
    from benchmarks import bench_scst

    assert bench_scst.main(["--images", "4", "--samples", "2", "--vocab", "30", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "rewards' share of the step" in out and "whole step" in out


def test_gpu_check_compares_every_kind_with_numpy(capsys):
    """The GPU check's own logic, run on the CPU through the torch backend: every kind agrees with numpy."""
    from benchmarks import gpu_check

    assert gpu_check.main(["--device", "cpu", "--small", "--steps", "2"]) == 0
    differences = [float(line.split()[-1]) for line in capsys.readouterr().out.splitlines() if "float64" in line
                   and "difference" in line]
    assert len(differences) == 2 * len(gpu_check.KINDS) and max(differences) < 1e-10


def test_gpu_check_without_cuda_says_so_and_succeeds(capsys):
    from benchmarks import gpu_check

    if torch.cuda.is_available():
        pytest.skip("CUDA is here: the check itself runs (benchmarks.gpu_check), not its refusal")
    assert gpu_check.main([]) == 0
    assert "a GPU check needs CUDA" in capsys.readouterr().out


def test_op_breakdown_puts_matmuls_copies_and_elementwise_apart():
    from benchmarks.op_breakdown import CATEGORIES, category, op_breakdown

    assert [category(name) for name in ("aten::mm", "aten::index_select", "aten::tanh")] == list(CATEGORIES)
    a = torch.randn(64, 64)
    only_matmul = op_breakdown(lambda: torch.mm(a, a), rounds=2)
    assert only_matmul[CATEGORIES[0]] > only_matmul[CATEGORIES[2]]  # the rest: allocating the output
    assert op_breakdown(lambda: torch.tanh(a), rounds=2)[CATEGORIES[0]] == 0
    assert set(op_breakdown(lambda: np.tanh(np.ones(3)), rounds=1).values()) == {0.0}


def test_distributed_benchmark_reports_the_bound_on_communication(capsys):
    from benchmarks import bench_distributed

    bench_distributed.main(["--models", "lstm", "--small", "--steps", "2", "--rounds", "1", "--reduce-dtype",
                            "bfloat16"])
    out = capsys.readouterr().out
    for label in ("2 processes x 1 thread (gloo)", "communication share of a 2-process step",
                  "all-reduce of every gradient alone, over a step", "gradients all-reduced in bfloat16"):
        assert label in out
    share = float(out.split("all-reduce of every gradient alone, over a step")[1].split("%")[0])
    assert 0 < share < 1000


def test_ddp_buckets_cover_the_gradient_in_25_mb_pieces():
    from benchmarks.bench_distributed import ddp_buckets

    per_bucket = 25 * 2 ** 20 // 4
    assert ddp_buckets(10) == [10]
    assert ddp_buckets(2 * per_bucket + 3) == [per_bucket, per_bucket, 3]
    assert ddp_buckets(per_bucket) == [per_bucket]
