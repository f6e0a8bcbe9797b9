"""Grid (region) features: the lazy reader, one-pass extraction (VGG16 conv5_3, the shapes CNN's last map), the
shapes build's grid files, ``load_coco_data(..., grid=True)``, and every bad grid file as one line."""
import multiprocessing
import pickle
import tracemalloc

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import features_extraction
from core.data.grid import GRID_DTYPE, LazyGrid, as_grid_rows, open_grid, write_grid_h5
from core.data.layout import grid_file
from core.data.loader import load_coco_data
from core.datasets.own_data import OwnDataConfig
from core.datasets.shapes_build import ShapesConfig, build_shapes_dataset
from core.features.encoders import dataset_encoder, encode_image_files, load_encoder
from core.features.extract import write_feature_files
from core.features.shapes_cnn import ShapesEncoder, ShapesEncoderConfig, save_shapes_encoder
from core.features.vgg16 import CONFIG_D, vgg16_from_state_dict
from core.runtime import cli
from core.runtime.errors import UserError
from tests.conftest import write_tiny_cs231n
from tests.test_features import random_vgg16_state_dict

ROWS = {"train": 24, "val": 8}  # the tiny dataset's images


def write_grid(path, array):
    """A grid file holding ``array`` (M, R, C), stored as the extraction stores it."""
    write_grid_h5(path, array.shape, lambda dataset: dataset.write_direct(as_grid_rows(array)))


def as_stored(array):
    return array.astype(GRID_DTYPE).astype(np.float32)


def grid_dataset(tmp_path, cells=16, channels=8):
    """The tiny CS231n dataset plus grid files; returns (folder, {split: the stored grid as float32})."""
    base = write_tiny_cs231n(tmp_path / "data")
    rng = np.random.default_rng(1)
    grids = {}
    for split, rows in ROWS.items():
        grids[split] = rng.standard_normal((rows, cells, channels)).astype(np.float32)
        write_grid(base / grid_file(split), grids[split])
    return base, {split: as_stored(grid) for split, grid in grids.items()}


# ------------------------------------------------------------------------------------------------ the reader

def test_lazy_reads_equal_a_full_read(tmp_path):
    rng = np.random.default_rng(0)
    full = rng.standard_normal((300, 16, 8)).astype(np.float32) * 50
    full[0, 0] = [2.0 ** -24, 1e-5, 6.1e-5, 0.0, -0.0, 65504.0, -65504.0, 1e-9]  # subnormals, extremes, zeros
    write_grid(tmp_path / "g.h5", full)
    stored = as_stored(full)
    grid = open_grid(tmp_path / "g.h5", rows=300)
    assert grid.shape == (300, 16, 8) and grid.dtype == np.float32 and len(grid) == 300 and grid.side == 4
    for size in (1, 2, 7, 64, 128):
        index = rng.integers(-300, 300, size)                           # unsorted, repeats, negative
        np.testing.assert_array_equal(grid[index], stored[index])
    index = np.array([[5, 5, 0], [299, 3, 5]])
    np.testing.assert_array_equal(grid[index], stored[index])        # (2, 3, R, C)
    for key in (slice(None, 7), slice(10, 50, 3), slice(-5, None), slice(290, 400), 17, -1):
        np.testing.assert_array_equal(grid[key], stored[key])
    assert grid[np.array([], dtype=int)].shape == (0, 16, 8) and grid[[]].shape == (0, 16, 8)
    assert np.abs(stored - full).max() <= 2.0 ** -11 * np.abs(full).max()  # float16: 11 significant bits
    with pytest.raises(IndexError):
        grid[np.array([0, 300])]
    with pytest.raises(IndexError):
        grid[np.array([0.5])]
    with pytest.raises(IndexError, match="rows only"):
        grid[1, 2]
    with pytest.raises(TypeError, match="reads rows by index"):
        np.asarray(grid)
    grid.close()


def test_a_batch_is_one_read_of_its_distinct_rows(tmp_path, monkeypatch):
    write_grid(tmp_path / "g.h5", np.zeros((50, 4, 3), np.float32))
    grid = open_grid(tmp_path / "g.h5")
    reads = []
    read = h5py.Dataset.__getitem__

    def spy(dataset, selection, *args, **kwargs):
        reads.append(selection)
        return read(dataset, selection, *args, **kwargs)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    grid[np.array([9, 2, 9, 40, 2])]
    grid[:6]
    grid[np.array([7, 5, 6, 5])]
    assert len(reads) == 3
    np.testing.assert_array_equal(reads[0], [2, 9, 40])
    assert reads[1:] == [slice(0, 6), slice(5, 8)]                  # consecutive rows: one contiguous read


def test_memory_is_bounded_by_the_batch_not_the_file(tmp_path):
    rows, cells, channels = 2000, 64, 128                            # a 33 MB file

    def fill(dataset):
        for start in range(0, rows, 100):
            dataset[start:start + 100] = np.full((100, cells, channels), start, GRID_DTYPE)
    write_grid_h5(tmp_path / "big.h5", (rows, cells, channels), fill)
    grid = open_grid(tmp_path / "big.h5", rows=rows)
    index = np.random.default_rng(0).integers(0, rows, 16)
    grid[index[:1]]                                                   # the file's open costs are not the batch's
    tracemalloc.start()
    batch = grid[index]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(batch[:, 0, 0], index // 100 * 100)
    batch_bytes = batch.nbytes                                        # 16 rows as float32: 0.5 MB
    assert (tmp_path / "big.h5").stat().st_size > 60 * batch_bytes
    assert peak < 3 * batch_bytes


def _read_in_child(grid, index, queue):
    queue.put(grid[index])


def test_pickles_by_path_and_reopens_after_fork(tmp_path):
    full = np.random.default_rng(2).standard_normal((40, 9, 5)).astype(np.float32)
    write_grid(tmp_path / "g.h5", full)
    grid = open_grid(tmp_path / "g.h5")
    index = np.array([3, 1, 3])
    np.testing.assert_array_equal(grid[index], as_stored(full)[index])  # opened in this process
    restored = pickle.loads(pickle.dumps(grid))
    assert isinstance(restored, LazyGrid) and restored.shape == grid.shape
    np.testing.assert_array_equal(restored[index], as_stored(full)[index])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(grid, np.array([39, 0]), queue))
    child.start()
    from_child = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(from_child, as_stored(full)[[39, 0]])
    np.testing.assert_array_equal(grid[index], as_stored(full)[index])  # the parent's file still reads
    grid.close()
    restored.close()


# ------------------------------------------------------------------------------------------------ the loader

def test_load_coco_data_gives_each_split_its_grid(tmp_path):
    base, grids = grid_dataset(tmp_path)
    assert "train_grid" not in load_coco_data(base)
    data = load_coco_data(base, grid=True)
    for split in ROWS:
        assert isinstance(data[f"{split}_grid"], LazyGrid) and data[f"{split}_grid"].shape == (ROWS[split], 16, 8)
        idxs = data[f"{split}_image_idxs"][:10]
        np.testing.assert_array_equal(data[f"{split}_grid"][idxs], grids[split][idxs])
    sub = load_coco_data(base, grid=True, max_train=7, seed=3)       # captions subsampled, images whole
    np.testing.assert_array_equal(sub["train_grid"][sub["train_image_idxs"]], grids["train"][sub["train_image_idxs"]])
    val_only = load_coco_data(base, grid=True, splits=("val",))
    assert "val_grid" in val_only and "train_grid" not in val_only


def rewrite_grid(split, array):
    return lambda base: write_grid(base / grid_file(split), array)


def drop_grids(base):
    for split in ROWS:
        (base / grid_file(split)).unlink()


def raw_h5(split, **datasets):
    """A grid file written past ``write_grid_h5``'s checks."""
    def damage(base):
        with h5py.File(base / grid_file(split), "w") as f:
            for key, value in datasets.items():
                f[key] = value
    return damage


GRID_FAULTS = [
    ("no grid files", drop_grids, "train2014_grid.h5 not found: this model needs grid features"),
    ("grid rows disagree with the features", rewrite_grid("val", np.zeros((9, 16, 8), np.float32)),
     "val2014_grid.h5 has 9 rows but the pooled features have 8"),
    ("cells disagree between splits", rewrite_grid("val", np.zeros((8, 9, 8), np.float32)), "differ"),
    ("channels disagree between splits", rewrite_grid("val", np.zeros((8, 16, 4), np.float32)), "differ"),
    ("grid file not HDF5", lambda base: (base / grid_file("train")).write_bytes(b"garbage"),
     "cannot read grid file"),
    ("no grid dataset", raw_h5("train", features=np.zeros((24, 16, 8), np.float16)), "no dataset 'grid'"),
    ("a grid of two dimensions", raw_h5("train", grid=np.zeros((24, 16), np.float16)), "must be (M, R, C)"),
    ("integer grid", raw_h5("train", grid=np.zeros((24, 16, 8), np.int16)), "must be (M, R, C) floats"),
    ("cells that are no square", raw_h5("train", grid=np.zeros((24, 15, 8), np.float16)), "not a square map"),
]


@pytest.mark.parametrize("name, damage, fragment", GRID_FAULTS, ids=[case[0] for case in GRID_FAULTS])
def test_a_bad_grid_file_is_one_line(tmp_path, capsys, name, damage, fragment):
    base, _ = grid_dataset(tmp_path)
    damage(base)
    assert_one_line_exit(lambda: load_coco_data(base, grid=True), capsys, fragment)


def test_a_non_finite_grid_value_is_one_line_when_read(tmp_path, capsys):
    base, grids = grid_dataset(tmp_path)
    poisoned = grids["train"].astype(GRID_DTYPE)
    poisoned[3, 5, 1] = np.inf
    raw_h5("train", grid=poisoned)(base)
    grid = load_coco_data(base, grid=True)["train_grid"]
    np.testing.assert_array_equal(grid[np.array([0, 4])], grids["train"][[0, 4]])  # other rows read as ever
    assert_one_line_exit(lambda: grid[np.array([4, 3])], capsys, "train2014_grid.h5: grid rows hold NaN or infinite")


def test_a_grid_file_cut_short_after_the_load_is_one_line_when_read(tmp_path, capsys):
    base, _ = grid_dataset(tmp_path)
    grid = load_coco_data(base, grid=True)["train_grid"]
    path = base / grid_file("train")
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    assert_one_line_exit(lambda: grid[np.array([23, 1])], capsys, "cannot read grid file")


def test_grid_values_beyond_float16_are_refused_on_write():
    with pytest.raises(UserError, match="float16's range"):
        as_grid_rows(np.array([[[1e5]]], np.float32))


def assert_one_line_exit(action, capsys, fragment):
    """``action`` run the way the scripts run ``main``: exit code 2 and one line on stderr holding ``fragment``."""
    with pytest.raises(SystemExit) as exit_info:
        cli.run(action)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and fragment in err, err


# -------------------------------------------------------------------------------------------- VGG16 conv5_3

def conv5_3_reference(state, x):
    """conv5_3 after its ReLU, computed from the state_dict by hand: 13 convs with ReLU, pools between blocks."""
    convs = iter(sorted({int(key.split(".")[1]) for key in state if key.startswith("features.")}))
    for item in CONFIG_D[:-1]:                                         # the last max-pool comes after conv5_3
        if item == "M":
            x = F.max_pool2d(x, 2)
        else:
            index = next(convs)
            x = torch.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
    return x                                                           # (B, 512, 14, 14)


def test_vgg16_writes_grid_rows_from_the_same_pass_as_fc7(tmp_path):
    state = random_vgg16_state_dict(seed=3)
    model = vgg16_from_state_dict(state)
    rng = np.random.default_rng(4)
    images = {"train": rng.integers(0, 256, (3, 60, 80, 3), dtype=np.uint8),
              "val": rng.integers(0, 256, (2, 60, 80, 3), dtype=np.uint8)}
    passes = []
    model.features[0].register_forward_hook(lambda module, inputs, output: passes.append(len(output)))
    splits = {split: (batch, [f"{split}/{i}" for i in range(len(batch))]) for split, batch in images.items()}
    write_feature_files(tmp_path, model, splits, {"name": "vgg16"}, pca_dim=1, batch_size=2, device="cpu",
                        progress=False, grid=True)
    assert sum(passes) == 5                                            # every image through the convs once
    for split, batch in images.items():
        with torch.no_grad():
            x = model.preprocess(batch)
            conv5 = conv5_3_reference(state, x)                        # (B, 512, 14, 14)
            fc7 = model(x).numpy()
        expected = conv5.permute(0, 2, 3, 1).reshape(len(batch), 196, 512).numpy()  # cell y * 14 + x
        with h5py.File(tmp_path / grid_file(split), "r") as f:
            assert f["grid"].shape == (len(batch), 196, 512) and f["grid"].dtype == np.float16
        stored = open_grid(tmp_path / grid_file(split), rows=len(batch))[:]
        scale = np.abs(expected).max()
        assert scale > 0 and (stored >= 0).all()
        assert np.abs(stored - expected).max() <= 2.0 ** -10 * scale   # float16 rounding, one ulp of slack
        with h5py.File(tmp_path / f"{split}2014_vgg16_fc7.h5", "r") as f:
            np.testing.assert_allclose(f["features"][()], fc7, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------- the shapes world

TINY = ShapesConfig(num_train=64, num_val=16, num_test=8, num_novel=8, encoder_epochs=1, pca_dim=16, probe_epochs=2)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return build_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data", TINY, progress=False)


def test_the_shapes_build_writes_the_encoders_map_for_every_split(shapes):
    encoder = load_encoder("shapes", base_dir=shapes, device="cpu")
    data = load_coco_data(shapes, grid=True, splits=("train", "val", "test"))
    with h5py.File(shapes / "shapes_images.h5", "r") as f:
        for split, rows in (("train", 64), ("val", 16), ("test", 8)):
            grid = data[f"{split}_grid"]
            assert grid.shape == (rows, 64, 64) and grid.side == 8
            images = f[f"{split}_images"][()]
            with torch.no_grad():
                cells = encoder.trunk(encoder._inputs(encoder.preprocess(images)))  # (M, 64, 8, 8)
            expected = cells.permute(0, 2, 3, 1).reshape(rows, 64, 64).numpy()
            stored = grid[:]
            assert np.abs(stored - expected).max() <= 2.0 ** -10 * np.abs(expected).max()


def test_encode_image_files_gives_the_grid_as_stored(shapes, tmp_path):
    with h5py.File(shapes / "shapes_images.h5", "r") as f:
        images = f["val_images"][:3]
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path, image in zip(paths, images):
        iio.imwrite(path, image)
    encoder, pca = dataset_encoder(shapes, device="cpu")
    pooled, grid = encode_image_files(paths, encoder, pca, device="cpu", progress=False, grid=True)
    stored = load_coco_data(shapes, splits=("val",), grid=True)
    assert grid.dtype == np.float32 and grid.shape == (3, 64, 64)
    np.testing.assert_allclose(pooled, stored["val_features"][:3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grid, stored["val_grid"][:3], rtol=2.0 ** -10, atol=1e-6)
    np.testing.assert_array_equal(encode_image_files(paths, encoder, pca, device="cpu", progress=False), pooled)


# --------------------------------------------------------------------------------------- the extraction script

def test_no_grid_defaults_to_the_settings_and_skips_and_removes_grid_files(tmp_path):
    assert features_extraction.build_parser().parse_args([]).grid == OwnDataConfig().grid is True
    data_dir = tmp_path / "shapes"
    data_dir.mkdir()
    rng = np.random.default_rng(5)
    with h5py.File(data_dir / "shapes_images.h5", "w") as f:
        f["train_images"] = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
        f["val_images"] = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    torch.manual_seed(0)
    encoder = ShapesEncoder(ShapesEncoderConfig(image_size=16, widths=(4, 8), pools=(True, False), feature_dim=8))
    save_shapes_encoder(data_dir, encoder.eval())
    argv = ["--encoder", "shapes", "--data-dir", str(data_dir), "--pca-dim", "3", "--device", "cpu", "--no-progress"]
    features_extraction.main(argv)
    with h5py.File(data_dir / grid_file("train"), "r") as f:
        assert f["grid"].shape == (6, 16, 8)                           # 4 x 4 cells of 8 channels
    features_extraction.main(argv + ["--no-grid"])
    assert not (data_dir / grid_file("train")).exists() and not (data_dir / grid_file("val")).exists()
    assert (data_dir / "train2014_vgg16_fc7.h5").is_file()


def test_own_data_writes_grid_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(6)
    lines = ["image,caption,split"]
    for i, split in enumerate(["train"] * 3 + ["val"]):
        iio.imwrite(images / f"{i}.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        lines += [f"{i}.png,a red circle,{split}", f"{i}.png,a blue star,{split}"]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    weights = tmp_path / "vgg16-random.pth"
    torch.save(random_vgg16_state_dict(seed=7), weights)
    features_extraction.main(["--captions", str(tmp_path / "captions.csv"), "--images-dir", str(images),
                              "--out", str(tmp_path / "out"), "--vgg16-weights", str(weights), "--pca-dim", "1",
                              "--min-word-count", "1", "--device", "cpu", "--no-progress", "--batch-size", "4"])
    data = load_coco_data(tmp_path / "out", grid=True)
    assert data["train_grid"].shape == (3, 196, 512) and data["val_grid"].shape == (1, 196, 512)
    assert (data["train_grid"][np.array([2, 0])] >= 0).all()
