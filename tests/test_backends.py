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

from core.runtime.arrays import Backend, namespace, ops, pick_backend, to_numpy
from core.runtime.errors import UserError
from tests.backends import BACKENDS, Arrays

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
