"""Tests of the feature pipeline: PCA, feature files, batched extraction, image reading, VGG16, encoders."""
import json
import pickle
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

from core.data.store import LazyFeatures, read_features_h5, save_features_h5, write_features_h5
from core.features import vgg16 as vgg16_module
from core.features.encoders import load_encoder, read_encoder_info
from core.features.extract import extract_features, resolve_device, write_feature_files
from core.features.pca import fit_pca, load_pca, save_pca
from core.features.preprocess import ImageFolder, center_crop, list_images, read_image_list, resize_shorter_side, to_rgb
from core.features.shapes_cnn import ShapesEncoder, ShapesEncoderConfig, save_shapes_encoder
from core.features.vgg16 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG16,
    fetch_vgg16_weights,
    load_vgg16_weights,
    vgg16_from_state_dict,
    vgg16_parameter_shapes,
)
from core.runtime.errors import UserError

# torchvision's vgg16 state_dict: 13 convolutions, then fc6, fc7, fc8 (ReLU/pool/dropout have no keys).
TORCHVISION_VGG16_SHAPES = {
    "features.0.weight": (64, 3, 3, 3), "features.0.bias": (64,),
    "features.2.weight": (64, 64, 3, 3), "features.2.bias": (64,),
    "features.5.weight": (128, 64, 3, 3), "features.5.bias": (128,),
    "features.7.weight": (128, 128, 3, 3), "features.7.bias": (128,),
    "features.10.weight": (256, 128, 3, 3), "features.10.bias": (256,),
    "features.12.weight": (256, 256, 3, 3), "features.12.bias": (256,),
    "features.14.weight": (256, 256, 3, 3), "features.14.bias": (256,),
    "features.17.weight": (512, 256, 3, 3), "features.17.bias": (512,),
    "features.19.weight": (512, 512, 3, 3), "features.19.bias": (512,),
    "features.21.weight": (512, 512, 3, 3), "features.21.bias": (512,),
    "features.24.weight": (512, 512, 3, 3), "features.24.bias": (512,),
    "features.26.weight": (512, 512, 3, 3), "features.26.bias": (512,),
    "features.28.weight": (512, 512, 3, 3), "features.28.bias": (512,),
    "classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


def random_vgg16_state_dict(seed):
    """He-scaled uniform random weights under torchvision's keys, so activations stay finite."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in TORCHVISION_VGG16_SHAPES.items():
        fan_in = int(np.prod(shape[1:])) if key.endswith("weight") else shape[0]
        bound = float(np.sqrt(6.0 / fan_in))
        state[key] = torch.empty(shape).uniform_(-bound, bound, generator=generator)
    return state


@pytest.fixture(scope="module")
def vgg16_weights(tmp_path_factory):
    """(path of a saved random VGG16 state_dict, the state_dict)."""
    state = random_vgg16_state_dict(seed=0)
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def vgg16_model(vgg16_weights):
    """A VGG16 holding the random weights, loaded through the saved file."""
    return vgg16_from_state_dict(load_vgg16_weights(vgg16_weights[0]))


class ToyEncoder(nn.Module):
    """A tiny encoder with the interface: mean-pooled pixels -> Linear -> ReLU, with dropout."""

    feature_dim = 5

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, self.feature_dim)
        self.dropout = nn.Dropout(p=0.5)
        with torch.no_grad():
            self.linear.weight.copy_(torch.arange(15.0).view(5, 3) / 10 - 0.7)
            self.linear.bias.fill_(0.1)
        self.grad_enabled_in_forward = []

    def preprocess(self, images):
        return torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)

    def forward(self, x):
        self.grad_enabled_in_forward.append(torch.is_grad_enabled())
        return torch.relu(self.dropout(self.linear(x.mean(dim=(2, 3)))))  # (B, 3) -> (B, F)


class SliceLog:
    """An image sequence recording the size of every slice read from it."""

    def __init__(self, images):
        self.images, self.reads = images, []

    def __len__(self):
        return len(self.images)

    def __getitem__(self, key):
        batch = self.images[key]
        self.reads.append(len(batch))
        return batch


def correlated_data(rng, n=400, f=12, offset=0.0):
    """Rows of shape (n, f) with distinct variances along random directions."""
    basis = np.linalg.qr(rng.standard_normal((f, f)))[0]
    scales = np.linspace(3.0, 0.2, f)
    return (rng.standard_normal((n, f)) * scales) @ basis.T + offset + rng.standard_normal(f)


# ----------------------------------------------------------------------------------------------- PCA

def svd_reference(x, dim):
    """Components and variances by SVD of the centred data, with the largest entry of each made positive."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:dim]
    vt = vt * np.sign(vt[np.arange(dim), np.argmax(np.abs(vt), axis=1)])[:, None]
    return vt, s[:dim] ** 2 / (x.shape[0] - 1)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_fit_pca_equals_svd(offset):
    x = correlated_data(np.random.default_rng(0), offset=offset)
    pca = fit_pca(x, dim=6)
    components, variance = svd_reference(x, 6)
    assert pca.components.shape == (6, 12) and pca.components.dtype == np.float32
    np.testing.assert_allclose(pca.components, components, atol=2e-5)
    np.testing.assert_allclose(pca.explained_variance, variance, rtol=1e-5)
    np.testing.assert_allclose(pca.mean, x.mean(axis=0), rtol=1e-6, atol=1e-4)
    assert np.all(np.abs(pca.components).argmax(axis=1) == np.argmax(pca.components, axis=1))


def test_fit_pca_with_fewer_rows_than_features_equals_svd():
    x = np.random.default_rng(12).standard_normal((9, 30)) * np.linspace(4, 1, 30) + 2.0
    pca = fit_pca(x, dim=5, chunk=4)
    components, variance = svd_reference(x, 5)
    np.testing.assert_allclose(pca.components, components, atol=2e-5)
    np.testing.assert_allclose(pca.explained_variance, variance, rtol=1e-5)
    np.testing.assert_allclose(pca.project(x).var(axis=0, ddof=1), variance, rtol=1e-4)


def test_projection_of_training_data_is_centred_with_decreasing_variance():
    x = correlated_data(np.random.default_rng(1), offset=5.0)
    pca = fit_pca(x, dim=8)
    projected = pca.project(x)
    assert projected.shape == (400, 8) and projected.dtype == np.float32
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-4)
    variances = projected.var(axis=0, ddof=1)
    assert np.all(np.diff(variances) < 0)
    np.testing.assert_allclose(variances, pca.explained_variance, rtol=1e-4)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(pca.project(x[3]), projected[3], rtol=1e-6)


def test_chunked_fit_equals_unchunked_and_reads_h5_lazily(tmp_path):
    x = correlated_data(np.random.default_rng(2)).astype(np.float32)
    whole = fit_pca(x, dim=5, chunk=len(x))
    save_features_h5(tmp_path / "x.h5", x)
    with read_features_h5(tmp_path / "x.h5") as lazy:
        chunked = fit_pca(lazy, dim=5, chunk=7)
        projected = chunked.project(lazy, chunk=11)
    np.testing.assert_allclose(chunked.components, whole.components, atol=1e-5)
    np.testing.assert_allclose(chunked.explained_variance, whole.explained_variance, rtol=1e-5)
    np.testing.assert_allclose(projected, whole.project(x), atol=1e-4)


def test_fit_pca_is_independent_of_row_order():
    x = correlated_data(np.random.default_rng(3))
    permuted = x[np.random.default_rng(4).permutation(len(x))]
    np.testing.assert_allclose(fit_pca(x, 4, chunk=50).components, fit_pca(permuted, 4, chunk=50).components,
                               atol=1e-5)


def test_fit_pca_rejects_too_few_rows_or_too_many_dims():
    x = np.random.default_rng(5).standard_normal((4, 6))
    with pytest.raises(UserError, match="more than 4"):
        fit_pca(x, dim=4)
    with pytest.raises(ValueError, match="1..6"):
        fit_pca(x, dim=7)


def test_pca_save_load_round_trip(tmp_path):
    pca = fit_pca(correlated_data(np.random.default_rng(6)), dim=3)
    save_pca(tmp_path / "pca.npz", pca)
    loaded = load_pca(tmp_path / "pca.npz")
    for name in ("mean", "components", "explained_variance"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(pca, name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pca.npz"]


def test_load_pca_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_pca(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip archive")
    with pytest.raises(UserError, match="garbage.npz"):
        load_pca(tmp_path / "garbage.npz")
    np.savez(tmp_path / "shapes.npz", mean=np.zeros(4), components=np.zeros((2, 5)), explained_variance=np.ones(2))
    with pytest.raises(UserError, match="inconsistent shapes"):
        load_pca(tmp_path / "shapes.npz")
    np.savez(tmp_path / "pickled.npz", mean=np.array([{"a": 1}], dtype=object), components=np.zeros((1, 1)),
             explained_variance=np.ones(1))
    with pytest.raises(UserError, match="pickled.npz"):
        load_pca(tmp_path / "pickled.npz")


# ----------------------------------------------------------------------------------------- feature files

def test_features_h5_round_trip_and_lazy_indexing(tmp_path):
    x = np.arange(40, dtype=np.float64).reshape(8, 5)
    save_features_h5(tmp_path / "f.h5", x)
    with read_features_h5(tmp_path / "f.h5", expected_dim=5) as view:
        assert isinstance(view, LazyFeatures) and view.shape == (8, 5) and view.dtype == np.float32
        assert len(view) == 8 and view.ndim == 2
        np.testing.assert_array_equal(np.asarray(view), x)
        np.testing.assert_array_equal(view[[5, 1, 5, -1]], x[[5, 1, 5, -1]])
        np.testing.assert_array_equal(view[np.array([[0, 7], [3, 3]])], x[np.array([[0, 7], [3, 3]])])
        np.testing.assert_array_equal(view[x[:, 0] > 20], x[x[:, 0] > 20])
        np.testing.assert_array_equal(view[[6, 2], 1:3], x[[6, 2], 1:3])
        np.testing.assert_array_equal(view[2:5], x[2:5])
        np.testing.assert_array_equal(view[3], x[3])
        assert view[[]].shape == (0, 5)
        with pytest.raises(IndexError):
            view[[8]]
        clone = pickle.loads(pickle.dumps(view))
        np.testing.assert_array_equal(clone[[4]], x[[4]])
        clone.close()


def test_write_features_h5_is_atomic(tmp_path):
    def fail(dataset):
        dataset[0] = 1.0
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_features_h5(tmp_path / "f.h5", (4, 3), fail)
    assert list(tmp_path.iterdir()) == []


def test_read_features_h5_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_features_h5(tmp_path / "missing.h5")
    (tmp_path / "garbage.h5").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match="garbage.h5: not a readable HDF5"):
        read_features_h5(tmp_path / "garbage.h5")
    cases = {"nokey": ("other", np.zeros((2, 3), np.float32), "no dataset 'features'"),
             "ndim": ("features", np.zeros(3, np.float32), "shape"),
             "dtype": ("features", np.zeros((2, 3), np.float64), "dtype float64")}
    for name, (key, data, message) in cases.items():
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f[key] = data
        with pytest.raises(UserError, match=f"{name}.h5: .*{message}"):
            read_features_h5(tmp_path / f"{name}.h5")
    save_features_h5(tmp_path / "narrow.h5", np.zeros((2, 3)))
    with pytest.raises(UserError, match="width 3, expected 4"):
        read_features_h5(tmp_path / "narrow.h5", expected_dim=4)


# -------------------------------------------------------------------------------------------- extraction

@pytest.fixture
def toy_images():
    return np.random.default_rng(7).integers(0, 256, size=(10, 6, 6, 3), dtype=np.uint8)


def test_extract_features_matches_direct_forward_for_any_batch_size(toy_images):
    encoder = ToyEncoder().eval()
    with torch.no_grad():
        expected = encoder(encoder.preprocess(toy_images)).numpy()
    encoder.train()  # extraction must switch dropout off itself
    for batch_size in (1, 3, 10, 64):
        images = SliceLog(toy_images)
        features = extract_features(encoder, images, batch_size=batch_size, device="cpu")
        assert features.shape == (10, 5) and features.dtype == np.float32
        np.testing.assert_allclose(features, expected, rtol=1e-6)
        assert max(images.reads) <= batch_size and sum(images.reads) == 10
    assert not encoder.training and not any(encoder.grad_enabled_in_forward)


def test_extract_features_fills_an_h5_dataset_from_h5_images(tmp_path, toy_images):
    encoder = ToyEncoder()
    expected = extract_features(encoder, toy_images, batch_size=4, device="cpu")
    with h5py.File(tmp_path / "images.h5", "w") as f:
        f["images"] = toy_images
    with h5py.File(tmp_path / "images.h5", "r") as f:
        write_features_h5(tmp_path / "out.h5", (10, 5), lambda dataset: extract_features(
            encoder, f["images"], batch_size=4, device="cpu", out=dataset))
    with read_features_h5(tmp_path / "out.h5") as view:
        np.testing.assert_allclose(np.asarray(view), expected, rtol=1e-6)


def test_extract_features_rejects_bad_input(toy_images):
    with pytest.raises(ValueError, match="uint8"):
        extract_features(ToyEncoder(), toy_images.astype(np.float32), device="cpu")
    with pytest.raises(ValueError, match="out must have shape"):
        extract_features(ToyEncoder(), toy_images, device="cpu", out=np.zeros((9, 5), np.float32))
    assert extract_features(ToyEncoder(), toy_images[:0], device="cpu").shape == (0, 5)
    with pytest.raises(UserError, match="not a device name"):
        resolve_device("gpu7")
    assert resolve_device("cpu") == torch.device("cpu")


def test_write_feature_files_writes_the_layout(tmp_path, toy_images):
    splits = {"train": (toy_images, [f"t{i}" for i in range(10)]), "val": (toy_images[:4], ["a", "b", "c", "d"])}
    write_feature_files(tmp_path, ToyEncoder(), splits, {"name": "toy"}, pca_dim=3, batch_size=4, device="cpu")
    pca = load_pca(tmp_path / "pca.npz")
    for split, count in (("train", 10), ("val", 4)):
        with read_features_h5(tmp_path / f"{split}2014_vgg16_fc7.h5", expected_dim=5) as raw, \
                read_features_h5(tmp_path / f"{split}2014_vgg16_fc7_pca.h5", expected_dim=3) as reduced:
            assert raw.shape == (count, 5)
            np.testing.assert_allclose(np.asarray(reduced), pca.project(np.asarray(raw)), rtol=1e-6)
        urls = (tmp_path / f"{split}2014_urls.txt").read_text().splitlines()
        assert urls == splits[split][1]
    with read_features_h5(tmp_path / "train2014_vgg16_fc7.h5") as raw:
        np.testing.assert_allclose(pca.mean, np.asarray(raw).mean(axis=0), atol=1e-6)
    assert json.loads((tmp_path / "encoder.json").read_text()) == {"name": "toy"}


# ------------------------------------------------------------------------------------------------ images

def write_image_files(folder):
    """Three small images of different sizes and modes; returns their paths in name order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(8)
    iio.imwrite(folder / "a.png", rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    iio.imwrite(folder / "b.jpg", rng.integers(0, 256, (44, 36, 3), dtype=np.uint8))
    iio.imwrite(folder / "c.png", rng.integers(0, 256, (40, 40), dtype=np.uint8))  # grayscale
    (folder / "notes.txt").write_text("not an image")
    return [folder / "a.png", folder / "b.jpg", folder / "c.png"]


def test_image_folder_reads_mixed_images_at_a_fixed_size(tmp_path):
    paths = write_image_files(tmp_path / "imgs")
    assert list_images(tmp_path / "imgs") == paths
    folder = ImageFolder(paths, size=24, workers=2)
    batch = folder[0:3]
    assert len(folder) == 3 and batch.shape == (3, 24, 24, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(folder[2], batch[2])
    assert np.all(batch[2, ..., 0] == batch[2, ..., 2])  # grayscale repeated over channels
    assert folder[3:].shape == (0, 24, 24, 3)


def test_image_folder_resizes_shorter_side_then_centre_crops(tmp_path):
    # 40 x 80: left half red, right half blue; shorter side -> 20, width -> 40, centre crop 20 x 20
    # keeps columns 10..29 of the resized image: 10 red ones, then 10 blue ones.
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, :40, 0] = 255
    image[:, 40:, 2] = 255
    iio.imwrite(tmp_path / "halves.png", image)
    out = ImageFolder([tmp_path / "halves.png"], size=20)[0]
    assert out.shape == (20, 20, 3)
    np.testing.assert_array_equal(out[:, :9], np.broadcast_to([255, 0, 0], (20, 9, 3)))
    np.testing.assert_array_equal(out[:, 11:], np.broadcast_to([0, 0, 255], (20, 9, 3)))


def test_image_reading_errors_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(UserError, match="broken.jpg: cannot read image"):
        ImageFolder([tmp_path / "broken.jpg"])[0:1]
    with pytest.raises(UserError, match="not found"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no .jpg"):
        list_images(tmp_path / "empty")


def test_read_image_list_resolves_relative_to_the_list(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.txt").write_text("x/a.jpg\n\n/abs/b.png\n")
    paths = read_image_list(tmp_path / "lists" / "train.txt")
    assert paths == [tmp_path / "lists" / "x" / "a.jpg", Path("/abs/b.png")]
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(UserError, match="empty"):
        read_image_list(tmp_path / "blank.txt")


def test_resize_and_crop_follow_torchvision_conventions():
    x = torch.arange(200 * 301, dtype=torch.float32).view(1, 1, 200, 301)
    assert resize_shorter_side(x, 256).shape == (1, 1, 256, 385)  # 256 * 301 / 200 = 385.28, truncated
    assert resize_shorter_side(x.transpose(2, 3), 100).shape == (1, 1, 150, 100)
    grid = torch.arange(5 * 8, dtype=torch.float32).view(1, 1, 5, 8)
    # Offsets (5 - 2) / 2 = 1.5 -> 2 and (8 - 2) / 2 = 3, rounded half to even like CenterCrop.
    torch.testing.assert_close(center_crop(grid, 2), grid[..., 2:4, 3:5])


def test_to_rgb_handles_gray_and_alpha():
    rgba = np.random.default_rng(9).integers(0, 256, (2, 4, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_rgb(rgba), rgba[..., :3])
    gray = rgba[..., 0]
    assert to_rgb(gray).shape == (2, 4, 4, 3) and np.all(to_rgb(gray[..., None])[..., 1] == gray)
    with pytest.raises(ValueError):
        to_rgb(np.zeros((2, 4, 4, 2), np.uint8))


# ------------------------------------------------------------------------------------------------- VGG16

def test_vgg16_keys_and_shapes_are_torchvisions():
    assert vgg16_parameter_shapes() == TORCHVISION_VGG16_SHAPES
    assert list(vgg16_parameter_shapes()) == list(TORCHVISION_VGG16_SHAPES)


def test_vgg16_weights_round_trip_and_fc7(vgg16_weights, vgg16_model):
    state, model = vgg16_weights[1], vgg16_model
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    images = np.random.default_rng(10).integers(0, 256, (1, 230, 260, 3), dtype=np.uint8)
    with torch.no_grad():
        x = model.preprocess(images)
        pool5 = model.fc6_input(x)
        fc7 = model(x)
        again = model(x)
    assert x.shape == (1, 3, 224, 224) and fc7.shape == (1, 4096) and pool5.shape == (1, 25088)
    assert torch.all(fc7 >= 0) and (fc7 > 0).any() and torch.equal(fc7, again)
    # fc7 is the ReLU after the second Linear (classifier.3), not fc6 or the class scores.
    fc6 = torch.relu(pool5 @ state["classifier.0.weight"].T + state["classifier.0.bias"])
    expected = torch.relu(fc6 @ state["classifier.3.weight"].T + state["classifier.3.bias"])
    torch.testing.assert_close(fc7, expected, rtol=1e-4, atol=1e-4)


def test_vgg16_preprocess_is_imagenet_standard(vgg16_model):
    model = vgg16_model
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    constant = np.full((1, 100, 150, 3), (10, 128, 250), dtype=np.uint8)
    x = model.preprocess(constant)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, :, 5, 7].numpy(), (np.array([10, 128, 250]) / 255 - mean) / std, rtol=1e-5)
    # Shorter side already 256: only the centre crop applies (rows 16..239, columns 144..367).
    wide = np.random.default_rng(11).integers(0, 256, (1, 256, 512, 3), dtype=np.uint8)
    crop = wide[0, 16:240, 144:368].astype(np.float64) / 255
    np.testing.assert_allclose(model.preprocess(wide)[0].permute(1, 2, 0).numpy(), (crop - mean) / std, atol=1e-5)
    gray = constant[..., 0]
    assert model.preprocess(gray).shape == (1, 3, 224, 224)
    rgba = np.concatenate([constant, np.zeros_like(constant[..., :1])], axis=-1)
    torch.testing.assert_close(model.preprocess(rgba), x)


def test_image_folder_then_preprocess_matches_preprocess_of_the_original(tmp_path, vgg16_model):
    yy, xx = np.mgrid[0:300, 0:420]
    image = np.stack([xx * 255 // 419, yy * 255 // 299, (xx + yy) * 255 // 718], axis=-1).astype(np.uint8)
    iio.imwrite(tmp_path / "gradient.png", image)
    model = vgg16_model
    direct = model.preprocess(image[None])
    via_folder = model.preprocess(ImageFolder([tmp_path / "gradient.png"])[0:1])
    # Only the uint8 rounding of the 256-px working copy differs: at most 1/255 / std.
    assert (via_folder - direct).abs().max().item() < 1.0 / 255 / min(IMAGENET_STD) + 1e-5


def test_load_vgg16_weights_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_vgg16_weights(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"certainly not a torch file")
    with pytest.raises(UserError, match="garbage.pth: not a readable"):
        load_vgg16_weights(tmp_path / "garbage.pth")
    # Tiny tensors under the right keys: every check before the shapes passes.
    tiny = {key: torch.zeros(1) for key in TORCHVISION_VGG16_SHAPES}
    bad_files = {
        "partial": ({key: tiny[key] for key in list(tiny)[:5]}, "key 'features.5.bias' missing"),
        "shape": (tiny, r"key 'features.0.weight' has shape \(1,\), expected \(64, 3, 3, 3\)"),
        "extra": (dict(tiny, extra=torch.zeros(1)), "unexpected key 'extra'"),
        "tensor": (torch.zeros(3), "holds a Tensor"),
    }
    for name, (content, message) in bad_files.items():
        torch.save(content, tmp_path / f"{name}.pth")
        with pytest.raises(UserError, match=f"{name}.pth: .*{message}"):
            load_vgg16_weights(tmp_path / f"{name}.pth")


def test_fetch_vgg16_weights_downloads_once_with_the_checksum_prefix(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dest, **kwargs):
        calls.append((url, kwargs["sha256_prefix"]))
        dest.parent.mkdir(parents=True)
        dest.write_bytes(b"weights")
        return dest

    monkeypatch.setattr(vgg16_module, "download", fake_download)
    cache = tmp_path / "hub" / "vgg16-397923af.pth"
    assert fetch_vgg16_weights(cache) == cache and fetch_vgg16_weights(cache) == cache
    assert calls == [("https://download.pytorch.org/models/vgg16-397923af.pth", "397923af")]


# ---------------------------------------------------------------------------------------------- encoders

def test_load_encoder_vgg16_and_errors(tmp_path, vgg16_weights):
    path, state = vgg16_weights
    encoder = load_encoder("vgg16", weights=path, device="cpu")
    assert isinstance(encoder, VGG16) and encoder.feature_dim == 4096 and not encoder.training
    assert torch.equal(encoder.classifier[3].weight, state["classifier.3.weight"])
    with pytest.raises(UserError, match="unknown encoder 'resnet'"):
        load_encoder("resnet")
    with pytest.raises(UserError, match="missing.pth: weights file not found"):
        load_encoder("vgg16", weights=tmp_path / "missing.pth")
    with pytest.raises(UserError, match="needs its dataset folder"):
        load_encoder("shapes")


def test_load_encoder_shapes_reads_its_dataset_folder(tmp_path):
    torch.manual_seed(0)  # the random init that is saved and must come back
    encoder = ShapesEncoder(ShapesEncoderConfig(image_size=8, widths=(4, 4), pools=(True, False), feature_dim=6))
    save_shapes_encoder(tmp_path, encoder)
    loaded = load_encoder("shapes", base_dir=tmp_path, device="cpu")
    assert loaded.feature_dim == 6 and not loaded.training
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(UserError, match="only used by the vgg16 encoder"):
        load_encoder("shapes", base_dir=tmp_path, weights=tmp_path / "encoder.pt")


def test_read_encoder_info_checks_the_file(tmp_path):
    with pytest.raises(UserError, match="encoder.json: not found"):
        read_encoder_info(tmp_path)
    (tmp_path / "encoder.json").write_text("{broken")
    with pytest.raises(UserError, match="unreadable"):
        read_encoder_info(tmp_path)
    (tmp_path / "encoder.json").write_text('{"name": "alexnet"}')
    with pytest.raises(UserError, match="needs a \"name\""):
        read_encoder_info(tmp_path)
    (tmp_path / "encoder.json").write_text('{"name": "vgg16", "layer": "fc7"}')
    assert read_encoder_info(tmp_path) == {"name": "vgg16", "layer": "fc7"}
