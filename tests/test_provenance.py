"""Provenance: a dataset records the weights its features were made with (name and SHA-256), and new features
(``inference.py --image``, extraction into a folder that holds features) come from the same weights or are refused
in one line naming both digests and the fix, exit code 2, every earlier file byte for byte as it was."""
import hashlib
import json
import shutil

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import features_extraction
import inference
import training
from core.data.layout import ENCODER_INFO_FILE, ENCODER_WEIGHTS_FILE, MANIFEST_FILE, PCA_FILE, WEIGHTS_DIGEST_KEY
from core.features.encoders import dataset_encoder
from core.features.provenance import tensors_digest
from core.features.shapes_cnn import ShapesEncoder, ShapesEncoderConfig, save_shapes_encoder
from core.runtime.cli import run
from core.runtime.errors import UserError
from tests.test_bad_inputs import digest
from tests.test_features import random_vgg16_state_dict
from tests.test_own_data import CAPTIONS, FLAGS, write_csv

SMALL = ["--hidden-dim", "8", "--wordvec-dim", "8", "--no-progress"]


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two VGG16 weights files holding the same tensors in another order: both load, their digests differ."""
    folder = tmp_path_factory.mktemp("weights")
    state = random_vgg16_state_dict(seed=1)
    torch.save(state, folder / "vgg16-a.pth")
    torch.save(dict(reversed(state.items())), folder / "vgg16-b.pth")
    (folder / "not-weights.pth").write_bytes(b"other bytes")
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory, weights):
    """A dataset built from image files with vgg16-a.pth, and an LSTM's dry run on it."""
    root = tmp_path_factory.mktemp("world")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in CAPTIONS:
        iio.imwrite(images / name, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    assert features_extraction.main(["--captions", str(write_csv(root / "c.csv")), "--images-dir", str(images),
                                     "--out", str(root / "data"), "--vgg16-weights", str(weights / "vgg16-a.pth"),
                                     *FLAGS]) is None
    assert training.main(["--model", "lstm", "--data-dir", str(root / "data"), "--out", str(root / "run"),
                          "--dry-run", *SMALL]) == 0
    return root


def refused(main, argv, capsys):
    """The one line ``main(argv)`` exits with, code 2, through the scripts' exit path."""
    with pytest.raises(SystemExit) as exited:
        run(lambda: main(argv))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def caption(world, *flags):
    return ["--model", "lstm", "--checkpoint", str(world / "run" / "best.npz"), "--image",
            str(world / "images" / "a.png"), "--no-progress", *flags]


def test_a_vgg16_build_records_its_weights_by_name_and_digest(world, weights):
    info = json.loads((world / "data" / ENCODER_INFO_FILE).read_text())
    assert info["weights"] == "vgg16-a.pth" and info[WEIGHTS_DIGEST_KEY] == sha256(weights / "vgg16-a.pth")
    assert json.loads((world / "data" / MANIFEST_FILE).read_text())["encoder"] == info


@pytest.mark.parametrize("source", ["flag", "cache"])
def test_image_captions_with_the_recorded_weights(world, weights, tmp_path, monkeypatch, source):
    flags = ["--vgg16-weights", str(weights / "vgg16-a.pth")] if source == "flag" else []
    monkeypatch.setattr("core.features.provenance.default_weights_path", lambda: weights / "vgg16-a.pth")
    assert inference.main(caption(world, *flags, "--out", str(tmp_path))) == 0
    assert (tmp_path / "gallery_images.png").is_file()


def drop_key(data, key):
    info = json.loads((data / ENCODER_INFO_FILE).read_text())
    del info[key]
    (data / ENCODER_INFO_FILE).write_text(json.dumps(info))


# (name, flags, the hub cache file (None: the real one is not looked at), damage to a copy of the dataset, fragments)
IMAGE_REFUSALS = [
    ("other weights file", ["--vgg16-weights", "{w}/vgg16-b.pth"], None, None, ["{b}", "{a}", "--vgg16-weights"]),
    ("not weights at all", ["--vgg16-weights", "{w}/not-weights.pth"], None, None, ["{a}", "--vgg16-weights"]),
    ("missing weights file", ["--vgg16-weights", "{w}/gone.pth"], None, None, ["gone.pth", "not found", "{a}"]),
    ("cache of other weights", [], "vgg16-b.pth", None, ["torch hub cache", "{b}", "{a}", "--vgg16-weights"]),
    ("empty cache", [], "absent.pth", None, ["torch hub cache", "{a}", "--vgg16-weights"]),
    ("no digest recorded", ["--vgg16-weights", "{w}/vgg16-a.pth"], None, lambda d: drop_key(d, WEIGHTS_DIGEST_KEY),
     ["records no digest", "features_extraction.py"]),
    ("no pca", ["--vgg16-weights", "{w}/vgg16-a.pth"], None, lambda d: (d / PCA_FILE).unlink(),
     [PCA_FILE, "CS231n", "features_extraction.py --captions"]),
]


@pytest.mark.parametrize("name, flags, cache, damage, fragments", IMAGE_REFUSALS, ids=[c[0] for c in IMAGE_REFUSALS])
def test_image_refuses_other_weights_in_one_line(world, weights, tmp_path, capsys, monkeypatch, name, flags, cache,
                                                 damage, fragments):
    def never():
        raise AssertionError("the torch hub cache was looked at although --vgg16-weights was given")

    monkeypatch.setattr("core.features.provenance.default_weights_path",
                        (lambda: weights / cache) if cache else never)
    data = shutil.copytree(world / "data", tmp_path / "data")
    if damage:
        damage(data)
    before, run_before = digest(data), digest(world / "run")
    names = {"w": weights, "a": sha256(weights / "vgg16-a.pth"), "b": sha256(weights / "vgg16-b.pth")}
    argv = caption(world, *(flag.format(**names) for flag in flags), "--data-dir", str(data), "--out",
                   str(tmp_path / "out"))
    err = refused(inference.main, argv, capsys)
    for fragment in fragments:
        assert fragment.format(**names) in err, (fragment, err)
    assert digest(data) == before and digest(world / "run") == run_before and not (tmp_path / "out").exists()


def test_vgg16_weights_goes_with_image(world, weights, capsys):
    argv = ["--model", "lstm", "--checkpoint", str(world / "run" / "best.npz"), "--vgg16-weights",
            str(weights / "vgg16-a.pth")]
    with pytest.raises(SystemExit) as exited:
        inference.parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "--image" in err and len(err.strip().splitlines()) == 1


def test_re_extraction_with_other_weights_is_refused_before_any_file_changes(world, weights, tmp_path, capsys):
    images = tmp_path / "images"
    for split, folder in (("train", "train2014"), ("val", "val2014")):
        (images / folder).mkdir(parents=True)
        for name, (image_split, _) in CAPTIONS.items():
            if image_split == split:
                shutil.copy(world / "images" / name, images / folder / name)
    data = shutil.copytree(world / "data", tmp_path / "data")
    before = digest(data)
    err = refused(features_extraction.main, ["--images-dir", str(images), "--vgg16-weights",
                                             str(weights / "vgg16-b.pth"), "--out", str(data), "--pca-dim", "2",
                                             "--device", "cpu", "--no-progress"], capsys)
    assert sha256(weights / "vgg16-a.pth") in err and sha256(weights / "vgg16-b.pth") in err and "--out" in err
    assert digest(data) == before


def shapes_folder(folder, seed):
    """A shapes-like dataset folder: stored images and a tiny shapes CNN saved with its record."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    with h5py.File(folder / "shapes_images.h5", "w") as f:
        f["train_images"] = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
        f["val_images"] = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    torch.manual_seed(seed)
    config = ShapesEncoderConfig(image_size=16, widths=(4, 8), pools=(True, False), feature_dim=8)
    save_shapes_encoder(folder, ShapesEncoder(config).eval())
    return folder


def extract_shapes(folder, *flags):
    return ["--encoder", "shapes", "--data-dir", str(folder), "--pca-dim", "2", "--device", "cpu", "--no-progress",
            *flags]


def recorded(folder):
    return json.loads((folder / ENCODER_INFO_FILE).read_text())[WEIGHTS_DIGEST_KEY]


def test_the_shapes_cnn_is_recorded_and_checked(tmp_path, capsys):
    first, second = shapes_folder(tmp_path / "first", 0), shapes_folder(tmp_path / "second", 1)
    assert recorded(first) == tensors_digest(torch.load(first / ENCODER_WEIGHTS_FILE, weights_only=True))
    assert recorded(first) != recorded(second)
    assert features_extraction.main(extract_shapes(first)) is None  # the same weights: extracted again in place
    # into a folder holding another CNN's features: refused, naming both digests
    assert features_extraction.main(extract_shapes(second)) is None
    before = digest(second)
    err = refused(features_extraction.main, extract_shapes(first, "--out", str(second)), capsys)
    assert recorded(first) in err and recorded(second) in err
    assert digest(second) == before
    # an encoder.pt that is not the one its record names
    shutil.copy(second / ENCODER_WEIGHTS_FILE, first / ENCODER_WEIGHTS_FILE)
    before = digest(first)
    err = refused(features_extraction.main, extract_shapes(first), capsys)
    assert "different builds" in err and recorded(second) in err and recorded(first) in err
    assert digest(first) == before


def test_the_shapes_cnn_digest_is_of_its_tensors_not_of_the_file(tmp_path):
    folder = shapes_folder(tmp_path / "shapes", 0)
    state = torch.load(folder / ENCODER_WEIGHTS_FILE, weights_only=True)
    torch.save(state, tmp_path / "again.pt")  # the same tensors; torch.save writes a new random id into the file
    assert sha256(tmp_path / "again.pt") != sha256(folder / ENCODER_WEIGHTS_FILE)
    assert tensors_digest(torch.load(tmp_path / "again.pt", weights_only=True)) == recorded(folder)
    state[next(iter(state))].view(-1)[0] += 1
    assert tensors_digest(state) != recorded(folder)


def test_vgg16_weights_is_refused_for_a_shapes_dataset(tmp_path, weights):
    folder = shapes_folder(tmp_path / "shapes", 0)
    assert features_extraction.main(extract_shapes(folder)) is None
    with pytest.raises(UserError, match="drop --vgg16-weights"):
        dataset_encoder(folder, vgg16_weights=weights / "vgg16-a.pth", device="cpu")
    encoder, pca = dataset_encoder(folder, device="cpu")
    assert encoder.feature_dim == 8 and pca.components.shape == (2, 8)
