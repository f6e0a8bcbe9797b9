"""Fixtures shared by the tests: a tiny dataset in the CS231n layout, written here with h5py, for the end-to-end tests;
the array backend of the layer tests."""
import json

import h5py
import numpy as np
import pytest

from tests.backends import BACKENDS, Arrays

WORDS = ["a", "red", "blue", "green", "circle", "square", "star", "left", "of", "big", "small", "two"]


def write_tiny_cs231n(base_dir, num_train=24, num_val=8, dim=32, captions_per_image=2, seed=0, grid=False):
    """A dataset directory in the CS231n coco_captioning layout whose captions depend on the features; with
    ``grid``, also grid features: each image's features cut into a 2 x 2 map of dim / 4 channels."""
    rng = np.random.default_rng(seed)
    idx_to_word = ["<NULL>", "<START>", "<END>", "<UNK>"] + WORDS
    base_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, num_images in (("train", num_train), ("val", num_val)):
        labels = rng.integers(0, 4, num_images)
        features = rng.standard_normal((num_images, dim)).astype(np.float32)
        features[:, :4] += 3.0 * np.eye(4, dtype=np.float32)[labels]  # the caption is readable from the image
        rows, image_idxs = [], []
        for image, label in enumerate(labels):
            for k in range(captions_per_image):
                words = [4 + label, 5 + (label + k) % 3, 8 + label % 3]
                rows.append([1] + words + [2] + [0] * (16 - len(words) - 1))
                image_idxs.append(image)
        arrays[f"{split}_captions"] = np.array(rows, dtype=np.int32)
        arrays[f"{split}_image_idxs"] = np.array(image_idxs, dtype=np.int32)
        for suffix, width in (("_pca", dim), ("", 2 * dim)):
            with h5py.File(base_dir / f"{split}2014_vgg16_fc7{suffix}.h5", "w") as f:
                f["features"] = np.concatenate([features] * (width // dim), axis=1)
        if grid:
            with h5py.File(base_dir / f"{split}2014_grid.h5", "w") as f:
                f["grid"] = features.reshape(num_images, 4, dim // 4).astype(np.float16)  # (M, D) -> (M, R, C)
        (base_dir / f"{split}2014_urls.txt").write_text(
            "".join(f"http://127.0.0.1:9/{split}/{i}.jpg\n" for i in range(num_images)))
    with h5py.File(base_dir / "coco2014_captions.h5", "w") as f:
        for key, value in arrays.items():
            f[key] = value
    vocab = {"idx_to_word": idx_to_word, "word_to_idx": {w: i for i, w in enumerate(idx_to_word)}}
    (base_dir / "coco2014_vocab.json").write_text(json.dumps(vocab))
    return base_dir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A tiny CS231n-layout dataset directory (24 train and 8 val images, 32-d features)."""
    return write_tiny_cs231n(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_grid_dataset(tmp_path_factory):
    """The tiny dataset with grid features too (2 x 2 cells of 8 channels)."""
    return write_tiny_cs231n(tmp_path_factory.mktemp("tiny_grid") / "data", grid=True)


@pytest.fixture(params=BACKENDS)
def arrays(request):
    """The layer tests' backend: numpy, array-api-strict or torch tensors (float64), see tests/backends.py."""
    return Arrays(request.param)
