"""Training, evaluation and feature extraction on torch.distributed: torchrun groups of 2 CPU processes (gloo, on
127.0.0.1) against one plain process, two simulated machines, a rank killed under --max-restarts, ranks launched
with different settings, the bad inputs of a group, and the gradients reduced while the backward pass runs.

Runs are on the tiny CS231n-layout dataset: 47 training captions in global minibatches of 10, so 5 steps an epoch
and a last minibatch of 7 that the two ranks share 3 + 4. Launches are shared between tests (``runs``).
"""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from core.data.grid import model_inputs
from core.data.loader import load_coco_data
from core.features.shapes_cnn import ShapesEncoder, ShapesEncoderConfig, save_shapes_encoder
from core.model.registry import model_kind
from core.runtime.checkpoint import load_training_state
from core.runtime.distributed import Group
from core.runtime.errors import UserError
from core.runtime.fileio import FolderLock
from tests.test_faults import FAST, assert_same_params
from tests.test_scripts import assert_clean_error

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
ENV = dict(os.environ, OMP_NUM_THREADS="1")  # two processes on 2 cores; one thread each computes the same
SUFFIX = {"lstm": ".npz", "transformer": ".pt"}
# float32 parameters after 10 Adam steps: the sum of two half-batch gradients differs from the whole batch's in
# the last bits, and Adam's normalisation carries that into the update (measured: at most 6e-8 absolute).
RTOL, ATOL = 1e-5, 1e-6


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, timeout=120, env=ENV):
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def torchrun(*args, launcher=(), timeout=120):
    """``torchrun`` with 2 local processes on its own free port, then ``args``."""
    return launch([TORCHRUN, "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                   f"127.0.0.1:{free_port()}", *launcher, *args], timeout=timeout)


def train_flags(model, data_dir, out, *extra):
    dropout = ["--dropout", "0"] if model == "transformer" else []
    return ["--model", model, "--data-dir", str(data_dir), "--out", str(out), "--num-samples", "47",
            "--batch-size", "10", "--epochs", "2", "--save-every", "2", "--no-progress", *FAST[model], *dropout,
            *extra]


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def params(path):
    state = load_training_state(path)[1]["params"]
    return {name: np.asarray(value, dtype=np.float64) for name, value in state.items()}


def assert_close_params(path_a, path_b):
    a, b = params(path_a), params(path_b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=ATOL, err_msg=name)


def history(out):
    return json.loads((out / "history.json").read_text())


def error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory):
    """Training runs by (model, how), each launched once: "one" plain python, "two" torchrun with 2 processes."""
    done, root = {}, tmp_path_factory.mktemp("dist")

    def run(model, how):
        if (model, how) not in done:
            out = root / f"{model}-{how}"
            flags = train_flags(model, tiny_dataset, out)
            ok(launch([sys.executable, "training.py", *flags]) if how == "one" else torchrun("training.py", *flags))
            done[model, how] = out
        return done[model, how]

    return run


# ------------------------------------------------------------------------------------------ training

@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_two_processes_train_as_one(model, runs):
    one, two = runs(model, "one"), runs(model, "two")
    suffix = SUFFIX[model]
    for name in ("last", "best"):
        assert_close_params(one / f"{name}{suffix}", two / f"{name}{suffix}")
    a, b = history(one), history(two)
    assert len(b["train_loss"]) == 10 and b["best_epoch"] == a["best_epoch"]
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["epoch_val_loss"], a["epoch_val_loss"], rtol=1e-5)
    record = json.loads((two / "config.json").read_text())
    assert (record["world_size"], record["backend"]) == (2, "gloo")
    assert load_training_state(two / f"last{suffix}")[0]["world_size"] == 2
    assert json.loads((one / "config.json").read_text())["world_size"] == 1
    # rank 0 alone writes: the same files as one process, nothing left half-written
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_two_machines_train_as_one(runs, tiny_dataset, tmp_path):
    """Two torchrun launches of one process each, meeting at a c10d rendezvous as two machines would (the
    Transformer: DDP across them; the numpy all-reduce crosses them in the killed-rank test's group alike)."""
    model, out, port = "transformer", tmp_path / "out", free_port()
    machines = [subprocess.Popen(
        [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
         f"127.0.0.1:{port}", "--rdzv-id", "two-machines", "training.py", *train_flags(model, tiny_dataset, out)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for machine in machines:
        _, stderr = machine.communicate(timeout=120)
        assert machine.returncode == 0, stderr[-3000:]
    assert_close_params(runs(model, "one") / f"last{SUFFIX[model]}", out / f"last{SUFFIX[model]}")


def test_killed_rank_restarts_the_group_and_ends_as_uninterrupted(runs, tiny_dataset, tmp_path):
    out = tmp_path / "out"
    # rank 1 SIGKILLs itself as its 7th step begins (mid second epoch; last was written at step 6)
    result = ok(torchrun("-m", "tests.distributed_helpers", "kill", "1", "7", *train_flags("lstm", tiny_dataset, out),
                         launcher=("--max-restarts", "1")))
    assert "exitcode: -9" in result.stderr, result.stderr[-3000:]  # rank 1 was killed, and the group restarted
    straight = runs("lstm", "two")
    for name in ("last", "best"):
        assert_same_params(straight / f"{name}.npz", out / f"{name}.npz")
    assert history(straight)["train_loss"] == history(out)["train_loss"]


def test_scst_on_two_processes(runs, tiny_dataset, tmp_path):
    out = tmp_path / "scst"
    start = runs("lstm", "one") / "best.npz"
    flags = ["--model", "lstm", "--data-dir", str(tiny_dataset), "--out", str(out), "--batch-size", "10", "--epochs",
             "1", "--no-progress", "--objective", "scst", "--init-from", str(start), "--scst-samples", "2"]
    ok(torchrun("training.py", *flags))
    rewards = history(out)["train_loss"]
    assert len(rewards) == 3 and np.all(np.isfinite(rewards))  # 24 images, minibatches of 10
    assert json.loads((out / "config.json").read_text())["world_size"] == 2


# ------------------------------------------------------------------------------- evaluation, extraction

def test_evaluation_on_two_processes_equals_one(runs, tmp_path):
    checkpoint = runs("lstm", "one") / "best.npz"
    records = {}
    for how in ("one", "two"):
        flags = ["inference.py", "--model", "lstm", "--checkpoint", str(checkpoint), "--evaluate", "--beam-size", "2",
                 "--num-samples", "7", "--no-progress", "--output", str(tmp_path / f"{how}.json")]
        ok(launch([sys.executable, *flags]) if how == "one" else torchrun(*flags))
        records[how] = json.loads((tmp_path / f"{how}.json").read_text())
        records[how].pop("decode_seconds")
    assert len(records["one"]["predictions"]) == 7
    assert records["two"] == records["one"]


def tiny_shapes(folder):
    """Shapes images (6 train, 3 val, 16 px) and a small random shapes encoder: what features_extraction reads."""
    rng = np.random.default_rng(3)
    folder.mkdir()
    with h5py.File(folder / "shapes_images.h5", "w") as f:
        f["train_images"] = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
        f["val_images"] = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    torch.manual_seed(0)
    encoder = ShapesEncoder(ShapesEncoderConfig(image_size=16, widths=(4, 8), pools=(True, False), feature_dim=8))
    save_shapes_encoder(folder, encoder.eval())
    return folder


def test_extraction_on_two_processes_equals_one(tmp_path):
    data_dir = tiny_shapes(tmp_path / "shapes")
    outs = {how: tmp_path / how for how in ("one", "two")}
    for how, out in outs.items():
        flags = ["features_extraction.py", "--encoder", "shapes", "--data-dir", str(data_dir), "--out", str(out),
                 "--pca-dim", "3", "--batch-size", "2", "--device", "cpu", "--no-progress"]
        ok(launch([sys.executable, *flags]) if how == "one" else torchrun(*flags))
    names = sorted(p.name for p in outs["one"].iterdir())
    assert "train2014_grid.h5" in names and sorted(p.name for p in outs["two"].iterdir()) == names
    for name in names:
        a, b = outs["one"] / name, outs["two"] / name
        if name.endswith(".h5"):
            with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
                assert fa.keys() == fb.keys()
                for key in fa:
                    assert np.array_equal(fa[key][()], fb[key][()]), (name, key)
        elif name.endswith(".npz"):
            with np.load(a) as za, np.load(b) as zb:
                assert all(np.array_equal(za[key], zb[key]) for key in za.files), name
        elif name.endswith((".txt", ".json")):
            assert a.read_bytes() == b.read_bytes(), name


# ----------------------------------------------------------------------------------------- bad input

def test_ranks_launched_with_different_settings_are_refused(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    result = torchrun("-m", "tests.distributed_helpers", "seed", "1", *train_flags("lstm", tiny_dataset, out))
    assert result.returncode != 0
    expected = ("error: rank 1 was launched with another data, settings.seed than rank 0: start every process with "
                "the same flags and the same data")
    assert error_lines(result) == [expected], result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written


def test_batch_not_divisible_by_the_group_is_refused(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    result = torchrun("training.py", *train_flags("lstm", tiny_dataset, out, "--batch-size", "9"))
    assert result.returncode != 0
    assert error_lines(result) == ["error: --batch-size 9 (the global minibatch) does not divide among 2 processes: "
                                   "pass a multiple of 2"], result.stderr[-3000:]
    assert not out.exists()


def test_a_second_group_on_the_same_out_is_refused_without_deadlock(tiny_dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with FolderLock(out, "--out"):  # the first run, still going
        start = time.monotonic()
        result = torchrun("training.py", *train_flags("lstm", tiny_dataset, out), timeout=60)
    assert result.returncode != 0 and time.monotonic() - start < 60
    lines = error_lines(result)
    assert len(lines) == 1 and f"is in use by another run (PID {os.getpid()})" in lines[0], result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_unreachable_rendezvous_is_one_line_within_the_timeout(tiny_dataset, tmp_path):
    port = free_port()  # nothing listens there
    env = dict(ENV, WORLD_SIZE="2", RANK="1", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               CAPTION_RENDEZVOUS_TIMEOUT="1")
    start = time.monotonic()
    result = launch([sys.executable, "training.py", *train_flags("lstm", tiny_dataset, tmp_path / "out")], env=env)
    assert time.monotonic() - start < 30
    assert_clean_error(result, f"cannot reach the rendezvous 127.0.0.1:{port} within 1 s", "--rdzv-endpoint")


def test_more_processes_than_gpus_is_refused():
    cuda = torch.device("cuda")
    rank1 = Group(rank=1, world_size=4, local_rank=1, local_world_size=4, backend="nccl")
    assert rank1.place(cuda, gpu_count=4) == torch.device("cuda", 1)
    assert rank1.place(torch.device("cpu"), gpu_count=0) == torch.device("cpu")
    with pytest.raises(SystemExit):  # every rank stops; rank 0 says why
        rank1.place(cuda, gpu_count=2)
    with pytest.raises(UserError, match=r"--nproc_per_node 4 is more than the 2 GPUs of this machine with --device "
                                        r"cuda: launch at most 2 processes per machine, or use --device cpu"):
        Group(world_size=4, local_world_size=4, backend="nccl").place(cuda, gpu_count=2)


def test_group_shards_cover_every_index_once():
    indices = np.arange(7) * 10
    shards = [Group(rank=r, world_size=3, backend="gloo").shard(indices) for r in range(3)]
    assert [len(s) for s in shards] == [2, 2, 3]
    assert np.array_equal(np.concatenate(shards), indices)


@pytest.fixture
def one_process_group():
    """A gloo process group of this process alone (the collectives run, and sum one rank)."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield Group(backend="gloo")
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("model_type", ["lstm", "att_lstm"])
def test_gradients_reduced_during_the_backward_are_the_models_gradients_times_the_share(
        model_type, one_process_group, tiny_dataset, tiny_grid_dataset):
    """Each gradient the model sets (att_lstm also through ``update``, with views into a shared buffer) is reduced
    into a buffer of its own; ``finish`` returns the loss times the share. One rank: the sum is the rank's own."""
    kind = model_kind(model_type)
    grid = kind.make_config({}).reads_grid
    data = model_inputs(load_coco_data(tiny_grid_dataset if grid else tiny_dataset, grid=grid), grid)
    config = kind.make_config({"hidden_dim": 8, "wordvec_dim": 8}).for_data(data["train_features"])
    model = kind.build(data["word_to_idx"], config)
    features, captions = np.asarray(data["train_features"][:6]), data["train_captions"][:6]
    loss, grads = model.loss(features, captions)
    reducer = one_process_group.gradient_reducer(0.25)
    assert model.loss(features, captions, grads=reducer)[1] is reducer
    assert reducer.finish(loss) == pytest.approx(0.25 * loss, rel=1e-12)
    assert set(reducer) == set(grads)
    for name, grad in grads.items():
        assert reducer[name].flags.c_contiguous and np.array_equal(reducer[name], grad * 0.25), name
