"""Checkpoint files: round trips, atomic writes, and refusal of corrupt or pickled files."""
import pickle

import numpy as np
import pytest
import torch

from core.runtime.checkpoint import (
    FORMAT_VERSION,
    load_numpy_checkpoint,
    load_torch_checkpoint,
    save_numpy_checkpoint,
    save_torch_checkpoint,
)
from core.runtime.errors import UserError
from core.runtime.fileio import atomic_write

META = {"format_version": FORMAT_VERSION, "model_type": "lstm", "idx_to_word": ["<NULL>", "<START>", "<END>"],
        "rng": {"state": 2 ** 100 + 7}}


def test_numpy_round_trip(tmp_path):
    params = {"W_embed": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4)}
    optim_state = {"W_embed": {"m": np.zeros((2, 3)), "t": 5, "learning_rate": 1e-3}, "b": {"t": 5}}
    save_numpy_checkpoint(tmp_path / "c.npz", META, params, optim_state)
    meta, params2, optim2 = load_numpy_checkpoint(tmp_path / "c.npz")
    assert meta == META
    np.testing.assert_array_equal(params2["W_embed"], params["W_embed"])
    assert params2["W_embed"].dtype == np.float32
    assert optim2["W_embed"]["t"] == 5 and optim2["W_embed"]["learning_rate"] == 1e-3
    assert list(tmp_path.iterdir()) == [tmp_path / "c.npz"]  # no temp file left behind


def test_torch_round_trip_is_weights_only(tmp_path):
    tensors = {"params": {"w": torch.randn(3, 2)}, "rng": torch.get_rng_state()}
    save_torch_checkpoint(tmp_path / "c.pt", META, tensors)
    meta, loaded = load_torch_checkpoint(tmp_path / "c.pt")
    assert meta == META
    assert torch.equal(loaded["params"]["w"], tensors["params"]["w"])


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"meta": "{}", "obj": Evil()}, path)
    with pytest.raises(UserError, match="weights-only"):
        load_torch_checkpoint(path)
    npz = tmp_path / "evil.npz"
    np.savez(npz, meta=np.array([pickle.dumps(Evil())], dtype=object))
    with pytest.raises(UserError, match="corrupt"):
        load_numpy_checkpoint(npz)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_corrupt_missing_and_foreign_files_are_refused(tmp_path, suffix):
    loader = load_numpy_checkpoint if suffix == ".npz" else load_torch_checkpoint
    with pytest.raises(UserError, match="not found"):
        loader(tmp_path / f"missing{suffix}")
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match=str(corrupt)):
        loader(corrupt)


def test_unknown_format_version_is_refused(tmp_path):
    save_numpy_checkpoint(tmp_path / "old.npz", dict(META, format_version=0), {}, {})
    with pytest.raises(UserError, match="format_version"):
        load_numpy_checkpoint(tmp_path / "old.npz")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")

    def failing(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]
