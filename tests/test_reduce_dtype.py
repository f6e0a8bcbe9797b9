"""Gradients all-reduced in a 16-bit dtype (``--reduce-dtype``): two gloo ranks on 127.0.0.1 reduce numpy and torch
gradients through ``OverlappedGradients`` and a Transformer's through DistributedDataParallel's compression hook;
float32, the default, is the exact sum, 16-bit ones are within their rounding of it and come back in the
gradient's own type and dtype. One process accepts the option and ignores it; an unknown dtype is one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import training
from core.runtime.checkpoint import load_training_state
from core.runtime.distributed import SINGLE, process_group
from core.runtime.errors import UserError
from core.runtime.gradient_reduction import REDUCE_DTYPES
from core.training import engine
from tests.reduce_dtype_helpers import SHARES
from tests.test_distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
# Significant bits of each dtype: rounding to them moves a value by at most 2**-bits of it, and by at most its
# spacing of subnormals below its smallest normal number (float16's 2**-14; the others' are far below our values).
BITS = {"float32": 24, "bfloat16": 8, "float16": 11}
SUBNORMAL = {"float32": 0.0, "bfloat16": 0.0, "float16": 2.0 ** -24}
NAMES = ("numpy32", "numpy64", "torch32")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of 2 gloo ranks (tests/reduce_dtype_helpers.py) wrote: a dict per rank, name -> array."""
    out = tmp_path_factory.mktemp("reduce")
    port = str(free_port())
    processes = [subprocess.Popen([sys.executable, "-m", "tests.reduce_dtype_helpers", str(out)], cwd=ROOT,
                                  env=dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), WORLD_SIZE="2",
                                           MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
    return [dict(np.load(out / f"rank{rank}.npz", allow_pickle=False)) for rank in (0, 1)]


def summands(ranks, name):
    """Each rank's addend of gradient ``name`` in float64: times its share, or halved for DDP, which averages."""
    weights = (0.5, 0.5) if name.startswith("ddp/") else SHARES
    return [weight * ranks[rank][f"local/{name}"].astype(np.float64) for rank, weight in enumerate(weights)]


def assert_rounded_sum(result, a, b, dtype, name):
    """``result`` is a + b with each addend and the sum rounded to ``dtype``: within 2 * 2**-bits * (|a| + |b|)."""
    bound = 2 * 2.0 ** -BITS[dtype] * (np.abs(a) + np.abs(b)) + 2 * SUBNORMAL[dtype]
    assert np.all(np.abs(result - (a + b)) <= bound), name


def reduced_names(ranks):
    return [*NAMES, *(key.removeprefix("local/") for key in ranks[0] if key.startswith("local/ddp/"))]


def test_every_rank_ends_with_the_same_gradients(ranks):
    for key in ranks[0]:
        if not key.startswith("local/"):
            assert np.array_equal(ranks[0][key], ranks[1][key]), key


def test_float32_is_the_exact_sum_in_each_gradients_own_dtype(ranks):
    for name in NAMES:
        a, b = summands(ranks, name)
        result = ranks[0][f"float32/{name}"]
        assert result.dtype == ranks[0][f"local/{name}"].dtype
        assert np.array_equal(result, (a.astype(result.dtype) + b.astype(result.dtype))), name


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_reduction_is_the_sum_within_its_rounding_and_not_exact(ranks, dtype):
    """Within the dtype's rounding of the exact sum, and different from the float32 reduction: it was rounded."""
    for name in reduced_names(ranks):
        result = ranks[0][f"{dtype}/{name}"]
        assert_rounded_sum(result, *summands(ranks, name), dtype, name)
        assert result.dtype == ranks[0][f"float32/{name}"].dtype, name
    for name in NAMES:
        assert not np.array_equal(ranks[0][f"{dtype}/{name}"], ranks[0][f"float32/{name}"]), name
    ddp = [name for name in reduced_names(ranks) if name.startswith("ddp/")]
    assert not all(np.array_equal(ranks[0][f"{dtype}/{name}"], ranks[0][f"float32/{name}"]) for name in ddp)


@pytest.mark.parametrize("dtype", REDUCE_DTYPES)
def test_reduced_gradients_come_back_in_their_own_type_and_dtype(ranks, dtype):
    assert [str(ranks[0][f"{dtype}/{name}:type"]) for name in NAMES] == [
        "ndarray float32", "ndarray float64", "Tensor torch.float32"]


def test_ddp_in_float32_averages_the_ranks_gradients(ranks):
    for name in reduced_names(ranks):
        if name.startswith("ddp/"):
            assert_rounded_sum(ranks[0][f"float32/{name}"], *summands(ranks, name), "float32", name)


def test_a_single_process_accepts_a_reduce_dtype_and_is_unchanged():
    with process_group("cpu", env={}, reduce_dtype="bfloat16") as group:
        assert group is SINGLE


def test_one_process_training_records_the_reduce_dtype_and_is_unchanged(tiny_dataset, tmp_path, monkeypatch):
    """The run hands its reduce dtype to its group and records it in config.json; alone, a step is the same."""
    asked = []

    def spy(*args, **kwargs):
        asked.append(kwargs["reduce_dtype"])
        return process_group(*args, **kwargs)

    monkeypatch.setattr(engine, "process_group", spy)
    params = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        assert training.main(["--model", "lstm", "--data-dir", str(tiny_dataset), "--out", str(out), "--hidden-dim",
                              "8", "--wordvec-dim", "8", "--no-progress", "--dry-run", "--reduce-dtype", dtype]) == 0
        assert json.loads((out / "config.json").read_text())["settings"]["reduce_dtype"] == dtype
        params[dtype] = load_training_state(out / "last.npz")[1]["params"]
    assert asked == ["float32", "bfloat16"]
    for name, value in params["float32"].items():
        assert np.array_equal(value, params["bfloat16"][name]), name


def test_a_group_carries_its_reduce_dtype():
    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    with process_group("cpu", env=env, reduce_dtype="float16") as group:
        assert group.distributed and group.reduce_dtype == "float16"


def test_an_unknown_reduce_dtype_is_one_line():
    with pytest.raises(UserError, match=r"--reduce-dtype 'int8': use one of float32, bfloat16, float16"):
        with process_group("cpu", env={}, reduce_dtype="int8"):
            pass
    result = subprocess.run([sys.executable, "training.py", "--model", "lstm", "--reduce-dtype", "int8"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--reduce-dtype" in result.stderr and "Traceback" not in result.stderr


def test_the_flag_defaults_to_float32_and_offers_the_16_bit_dtypes():
    assert training.parse_args(["--model", "lstm"]).reduce_dtype == "float32"
    assert training.parse_args(["--model", "lstm", "--reduce-dtype", "bfloat16"]).reduce_dtype == "bfloat16"
