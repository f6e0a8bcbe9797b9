"""The array backends of the hand-written models (core.runtime.arrays): the default numpy results bit-identical to
those of the code before the layers took the namespace of their inputs, the in-place kernels and scatter helpers
alike on every namespace, and the conversions to and from a backend."""
import shutil
import subprocess
import sys
from pathlib import Path

import array_api_strict
import numpy as np
import pytest
import torch

from core.data.loader import load_coco_data
from core.decoding import greedy_decode
from core.layers.rnn import lstm_backward, lstm_forward
from core.model.registry import model_kind
from core.runtime.arrays import Backend, namespace, ops, pick_backend, to_numpy
from core.runtime.checkpoint import load_training_state
from core.runtime.errors import UserError
from core.training.engine import TrainSettings, run_training
from core.training.recipes import OptimConfig, recipe
from core.training.solver import Solver, SolverConfig
from tests.backends import BACKENDS, Arrays, assert_close
from tests.test_solver import StopAt

ROOT = Path(__file__).resolve().parents[1]
# The last commit whose layers were numpy only: its results are the default backend's, bit for bit.
NUMPY_ONLY_COMMIT = "724da74"


@pytest.fixture(scope="module")
def numpy_only_tree(tmp_path_factory):
    """The ``core`` package of NUMPY_ONLY_COMMIT, unpacked into a folder of its own."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the earlier tree cannot be read")
    found = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{NUMPY_ONLY_COMMIT}^{{commit}}"],
                           capture_output=True)
    if found.returncode:
        pytest.skip(f"commit {NUMPY_ONLY_COMMIT} is not in this clone (a shallow clone?)")
    tree = tmp_path_factory.mktemp("numpy_only")
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", NUMPY_ONLY_COMMIT, "core"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _reference_results(root, out):
    """tests/numpy_reference.py's results with the ``core`` of folder ``root``, as a dict."""
    subprocess.run([sys.executable, str(ROOT / "tests" / "numpy_reference.py"), str(out)], cwd=root, check=True,
                   env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OPENBLAS_NUM_THREADS": "1",
                        "OMP_NUM_THREADS": "1"})
    with np.load(out, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_numpy_results_are_bit_identical_to_the_numpy_only_code(numpy_only_tree, tmp_path):
    """Layers, losses, update rules, models, decoding and training steps, float32 and float64: every bit as before."""
    before = _reference_results(numpy_only_tree, tmp_path / "before.npz")
    now = _reference_results(ROOT, tmp_path / "now.npz")
    assert set(now) == set(before) and len(now) > 300
    moved = [key for key in before if before[key].dtype != now[key].dtype or before[key].shape != now[key].shape
             or not np.array_equal(before[key], now[key])]
    assert moved == []


SMALL = {"rnn": {"wordvec_dim": 8, "hidden_dim": 16}, "lstm": {"wordvec_dim": 8, "hidden_dim": 16},
         "att_lstm": {"wordvec_dim": 8, "hidden_dim": 16, "att_dim": 8}}


def _train(model, data_dir, out, backend, dtype, epochs=2, resume=False):
    """run_training's summary and history for a small model of ``model`` kind on ``backend``."""
    settings = TrainSettings(model=model, data_dir=str(data_dir), out=str(out), epochs=epochs, batch_size=16,
                             backend=backend, device="cpu", resume=resume, progress=False,
                             model_config=dict(SMALL[model], dtype=dtype))
    summary = run_training(settings)
    return summary, load_training_state(summary["last"])


@pytest.mark.parametrize("model", sorted(SMALL))
def test_training_on_torch_tensors_matches_numpy(model, tiny_dataset, tiny_grid_dataset, tmp_path):
    """Every hand-written kind trains 6 steps (2 epochs of 3) on torch tensors as on numpy arrays. In float64 the
    two differ only by summation order in the kernels (about 1e-16 relative per operation): the losses agree to
    1e-9 and the weights to 1e-8, though Adam divides each gradient by its own scale, which lifts a gradient's
    rounding difference up to lr / epsilon = 2e5 times in the weights. In float32 the same run agrees to 1e-4."""
    data = tiny_grid_dataset if model == "att_lstm" else tiny_dataset
    for dtype, tol_loss, tol_weights in (("float64", 1e-9, 1e-8), ("float32", 1e-4, 1e-3)):
        runs = {backend: _train(model, data, tmp_path / f"{backend}-{dtype}", backend, dtype)
                for backend in ("numpy", "torch")}
        (_, (_, numpy_state)), (summary, (_, torch_state)) = runs["numpy"], runs["torch"]
        assert summary["steps"] == 6 and str(summary["model"].params["Wx"].dtype) == f"torch.{dtype}"
        losses = [np.array(run[1][0]["run"]["history"]["train_loss"]) for run in runs.values()]
        assert np.max(np.abs(losses[0] - losses[1]) / np.abs(losses[0])) < tol_loss, dtype
        for name, value in numpy_state["params"].items():  # the checkpoint holds numpy arrays either way
            assert isinstance(torch_state["params"][name], np.ndarray)
            assert np.max(np.abs(torch_state["params"][name] - value)) < tol_weights, (dtype, name)


def test_self_critical_training_on_torch_tensors_matches_numpy(tiny_dataset, tmp_path):
    """Sampling, rewards and the policy gradient of a float64 LSTM: the same samples (each step's log-probabilities
    agree to about 1e-16, far from changing a Gumbel argmax), the same rewards, weights to 1e-8."""
    init, _ = _train("lstm", tiny_dataset, tmp_path / "xe", "numpy", "float64", epochs=1)
    runs = {}
    for backend in ("numpy", "torch"):
        runs[backend] = run_training(TrainSettings(
            model="lstm", data_dir=str(tiny_dataset), out=str(tmp_path / backend), objective="scst",
            init_from=init["best"], epochs=2, batch_size=8, progress=False, min_steps=1, backend=backend, device="cpu"))
    states = {backend: load_training_state(summary["last"]) for backend, summary in runs.items()}
    losses = [np.array(meta["run"]["history"]["train_loss"]) for meta, _ in states.values()]
    assert len(losses[0]) > 2 and np.max(np.abs(losses[0] - losses[1])) < 1e-9
    for name, value in states["numpy"][1]["params"].items():
        assert np.max(np.abs(states["torch"][1]["params"][name] - value)) < 1e-8, name


def _solver(data, out_dir, backend):
    """A Solver of a small float64 LSTM on ``backend``: 3 epochs of 3 steps."""
    kind = model_kind("lstm")
    config = kind.make_config(dict(SMALL["lstm"], dtype="float64")).for_data(data["train_features"])
    model = kind.build(data["word_to_idx"], config, seed=0, device=torch.device("cpu"), backend=backend)
    updater = recipe(kind).make_updater(model, OptimConfig(lr=1e-2, warmup_steps=2))
    meta = {"model_type": "lstm", "model_config": model.config(), "idx_to_word": data["idx_to_word"]}
    return Solver(updater, data, SolverConfig(epochs=3, batch_size=16, seed=3, progress=False), out_dir, meta,
                  kind.checkpoint_suffix)


def _interrupted_then_resumed(data, out_dir, first, then):
    """Weights after 9 steps: 4 on backend ``first``, stopped as Ctrl-C stops, then resumed on ``then``."""
    interrupted = _solver(data, out_dir, first)
    interrupted.updater = StopAt(interrupted.updater, [interrupted], step=4)
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    resumed = _solver(data, out_dir, then)
    resumed.resume()
    resumed.train()
    assert resumed.step == 9
    return resumed.updater.snapshot()


def test_a_run_resumes_exactly_on_torch_and_across_backends(tiny_dataset, tmp_path):
    """torch to torch resumes bit for bit; numpy to torch and back continue from the same numbers, equal to an
    uninterrupted run as far as the two backends' float64 arithmetic agrees (1e-8, see above)."""
    data = load_coco_data(tiny_dataset)
    straight = _solver(data, tmp_path / "straight", "torch")
    straight.train()
    expected = straight.updater.snapshot()
    resumed = _interrupted_then_resumed(data, tmp_path / "torch", "torch", "torch")
    assert all(np.array_equal(resumed[name], value) for name, value in expected.items())
    for first, then in (("numpy", "torch"), ("torch", "numpy")):
        crossed = _interrupted_then_resumed(data, tmp_path / first, first, then)
        assert all(np.max(np.abs(crossed[name] - value)) < 1e-8 for name, value in expected.items()), first


@pytest.mark.parametrize("backend, device, message", [
    ("torch", "cpu", r"--backend torch: --model transformer is a torch model already"),
    ("numpy", "tpu", r"--device 'tpu' is not a device name"),
])
def test_backends_that_cannot_run_are_one_line_errors(backend, device, message):
    model = "transformer" if backend == "torch" else "lstm"
    with pytest.raises(UserError, match=message):
        model_kind(model).device(device, backend)


def test_cupy_needs_cuda_and_cupy():
    with pytest.raises(UserError, match="--backend cupy --device cpu: CuPy computes on CUDA only"):
        pick_backend("cupy", "cpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="--backend cupy: CuPy is not installed"):
            pick_backend("cupy")


def test_checkpoints_and_models_move_between_backends(tiny_dataset):
    """A model moved to torch computes the loss of its numpy self; decoding gives numpy captions either way."""
    data = load_coco_data(tiny_dataset)
    kind = model_kind("lstm")
    config = kind.make_config(dict(SMALL["lstm"], dtype="float64")).for_data(data["train_features"])
    on_numpy = kind.build(data["word_to_idx"], config, seed=0)
    on_torch = kind.build(data["word_to_idx"], config, seed=0, device=torch.device("cpu"), backend="torch")
    assert on_torch.backend == Backend("torch", "cpu") and isinstance(on_torch.params["Wh"], torch.Tensor)
    features, captions = data["train_features"][:5], data["train_captions"][:5]
    loss, grads = on_numpy.loss(features, captions)
    torch_loss, torch_grads = on_torch.loss(features, captions)
    assert abs(loss - torch_loss) < 1e-12
    assert_close(Arrays("torch").back(torch_grads), grads, "lstm grads")
    captions = greedy_decode(on_torch, features, 6)
    assert isinstance(captions, np.ndarray) and np.array_equal(captions, greedy_decode(on_numpy, features, 6))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops_scatter_and_column_updates(backend):
    """Ops.add_rows_at accumulates repeated rows; subtract_at_columns touches one entry per row; the in-place
    kernels write their output: the same numbers on every namespace (the one-hot fallbacks on array-api-strict),
    the scatters exactly on these few numbers."""
    arrays, rng = Arrays(backend), np.random.default_rng(0)
    out, rows, index = np.zeros((4, 3)), rng.standard_normal((5, 3)), np.array([2, 0, 2, 2, 1])
    expected = out.copy()
    np.add.at(expected, index, rows)
    kernels = ops(namespace(arrays.to(out)))
    assert np.array_equal(arrays.back(kernels.add_rows_at(*arrays.to((out, index, rows)))), expected)
    scores, columns, values = rng.standard_normal((3, 4)), np.array([3, 0, 3]), rng.standard_normal(3)
    expected = scores.copy()
    expected[np.arange(3), columns] -= values
    assert np.array_equal(arrays.back(kernels.subtract_at_columns(*arrays.to((scores, columns, values)))), expected)
    target = arrays.to(np.zeros((3, 4)))
    kernels.tanh(arrays.to(scores), out=target)
    assert_close(arrays.back(target), np.tanh(scores), "tanh")
    cells, vectors = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 4))
    product = kernels.batched_matvec(*arrays.to((cells, vectors)))
    assert_close(arrays.back(product), (cells @ vectors[:, :, None])[:, :, 0], "batched_matvec")
    product = kernels.batched_matvec(*arrays.to((cells, vectors[0])))
    assert_close(arrays.back(product), cells @ vectors[0], "batched_matvec, one vector")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_cpu_tanh_holds_over_the_whole_range(dtype):
    """On torch's CPU tensors Ops.tanh takes 2 sigmoid(2x) - 1: within a few units of the last place of torch's own
    tanh at any magnitude, exactly -1 and 1 far out, and the same when written over its own input."""
    x = torch.from_numpy(np.concatenate([np.linspace(-40, 40, 4001), [-1e-6, 1e-6, 0.0]]).astype(dtype))
    out = torch.empty_like(x)
    ops(namespace(x)).tanh(x, out=out)
    assert torch.allclose(out, torch.tanh(x), rtol=0, atol=4 * torch.finfo(x.dtype).eps)
    assert out[0] == -1 and out[4000] == 1
    ops(namespace(x)).tanh(x, out=x)
    assert torch.equal(x, out)


def test_cupy_arrays_run_the_layers():
    """Where CuPy and a GPU exist, the LSTM's forward and backward on CuPy arrays equal numpy's (float64)."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (it needs CUDA)")
    rng = np.random.default_rng(0)
    inputs = (rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 6)), rng.standard_normal((5, 24)),
              rng.standard_normal((6, 24)), rng.standard_normal(24))
    h, cache = lstm_forward(*inputs, lengths=np.array([4, 1, 3]))
    h_gpu, cache_gpu = lstm_forward(*(cupy.asarray(a) for a in inputs), lengths=np.array([4, 1, 3]))
    assert_close(to_numpy(h_gpu), h, "h")
    dh = rng.standard_normal(h.shape)
    assert_close([to_numpy(g) for g in lstm_backward(cupy.asarray(dh), cache_gpu)], lstm_backward(dh, cache), "grads")


def test_to_numpy_and_backend_asarray_round_trip():
    value = np.arange(6.0).reshape(2, 3)
    for backend in (Backend(), Backend("torch", "cpu")):
        moved = backend.asarray(value, dtype="float32", copy=True)
        assert to_numpy(moved).dtype == np.float32 and np.array_equal(to_numpy(moved), value)
    assert np.array_equal(to_numpy(array_api_strict.asarray(value)), value)
