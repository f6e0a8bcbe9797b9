"""core.layers.packing: the packed layout of a batch of sequences of different lengths."""
import numpy as np
import pytest

from core.layers.packing import Packing


def test_layout_of_a_small_batch():
    pack = Packing.of(np.array([2, 3, 0, 3]), N=4, T=4)
    assert pack.order.tolist() == [1, 3, 0, 2]  # longest first, ties in batch order
    assert pack.sizes.tolist() == [3, 3, 2, 0] and pack.steps == 3
    assert pack.offsets.tolist() == [0, 3, 6, 8, 8]
    # step 0: rows 1, 3, 0; step 1: rows 1, 3, 0; step 2: rows 1, 3; at flat position row * T + step
    assert pack.index.tolist() == [4, 12, 0, 5, 13, 1, 6, 14]
    assert pack.previous().tolist() == [0, 1, 2, 3, 4]


def test_pack_unpack_round_trip_zeroes_the_padding():
    rng = np.random.default_rng(0)
    lengths = np.array([1, 4, 0, 3, 4])
    pack = Packing.of(lengths, N=5, T=4)
    x = rng.standard_normal((5, 4, 2))
    packed = pack.pack(x)
    assert packed.shape == (lengths.sum(), 2)
    running = np.arange(4)[None, :] < lengths[:, None]
    assert np.array_equal(pack.unpack(packed), np.where(running[:, :, None], x, 0))
    # a position's previous row is the same sequence one step earlier
    flat = x.reshape(-1, 2)
    assert np.array_equal(packed[pack.previous()], flat[pack.index[pack.sizes[0]:] - 1])
    assert np.array_equal(pack.unsort_rows(pack.sort_rows(x)), x)


def test_default_runs_every_step_in_batch_order():
    pack = Packing.of(None, N=3, T=2)
    assert pack.order.tolist() == [0, 1, 2] and pack.sizes.tolist() == [3, 3]
    x = np.arange(12.0).reshape(3, 2, 2)
    assert np.array_equal(pack.pack(x), x.transpose(1, 0, 2).reshape(6, 2))


@pytest.mark.parametrize("lengths, match", [
    (np.array([1, 2]), r"shape \(3,\)"),
    (np.array([1.0, 2.0, 1.0]), "integers"),
    (np.array([1, 5, 0]), r"\[0, 4\]"),
    (np.array([1, -1, 0]), r"\[0, 4\]"),
])
def test_bad_lengths_raise(lengths, match):
    with pytest.raises(ValueError, match=match):
        Packing.of(lengths, N=3, T=4)
