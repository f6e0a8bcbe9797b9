"""Image encoders by name (ImageNet VGG16 fc7, the shapes world's CNN), and encoding new image files with one.

Both follow the encoder interface of ``core.features.extract`` (``feature_dim``, ``preprocess``,
``forward``). A dataset folder records which encoder made its features in ``encoder.json``
(``{"name": "vgg16" | "shapes", "weights": ..., "weights_sha256": ..., ...}``), so new images can later be encoded
the same way, with the same weights (``core.features.provenance``).
"""
from pathlib import Path

import numpy as np

from core.data.grid import GRID_DTYPE
from core.data.layout import ENCODER_INFO_FILE, ENCODER_WEIGHTS_FILE, PCA_FILE
from core.features.extract import extract_features, resolve_device
from core.features.pca import load_pca
from core.features.preprocess import ImageFolder
from core.features.provenance import (
    ENCODER_NAMES,
    check_loaded_weights,
    read_encoder_info,
    recorded_vgg16_weights,
    weights_record,
)
from core.features.shapes_cnn import load_shapes_encoder
from core.features.vgg16 import fetch_vgg16_weights, load_vgg16_weights, vgg16_from_state_dict
from core.runtime.errors import UserError


def load_encoder(name, base_dir=None, weights=None, device=None):
    """An encoder in eval mode on ``device``.

    Inputs:
    - name: "vgg16" or "shapes".
    - base_dir: dataset folder; the shapes encoder is read from its ``encoder.pt`` and
      ``encoder.json`` (and refused when the weights are not those the record names). Not used by vgg16.
    - weights: vgg16 only: path of a torchvision ``vgg16-397923af.pth`` state_dict; None uses the
      torch hub cache, downloading (and verifying) the file there when missing.
    - device: torch device or name; None picks CUDA when available, else CPU.
    """
    if name == "vgg16":
        path = Path(weights) if weights is not None else fetch_vgg16_weights()
        encoder = vgg16_from_state_dict(load_vgg16_weights(path))
    elif name == "shapes":
        if weights is not None:
            raise UserError("a weights file is only used by the vgg16 encoder; the shapes encoder is read "
                            "from its dataset folder")
        if base_dir is None:
            raise UserError(f"the shapes encoder needs its dataset folder (holding {ENCODER_WEIGHTS_FILE} and "
                            f"{ENCODER_INFO_FILE})")
        encoder = load_shapes_encoder(base_dir)
        check_loaded_weights(encoder, read_encoder_info(base_dir), base_dir)
    else:
        raise UserError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    return encoder.to(resolve_device(device)).eval()


def vgg16_encoder(weights=None, device=None):
    """The VGG16 encoder (``load_encoder``'s ``weights`` and ``device``) and its ``encoder.json`` record, which names
    the weights file and its SHA-256."""
    path = Path(weights) if weights is not None else fetch_vgg16_weights()
    encoder = load_encoder("vgg16", weights=path, device=device)
    return encoder, {"name": "vgg16", **weights_record(path), "layer": "fc7 (after ReLU)",
                     "feature_dim": encoder.feature_dim,
                     "preprocess": "resize shorter side 256, centre crop 224, ImageNet mean/std"}


def dataset_encoder(data_dir, vgg16_weights=None, device=None):
    """(encoder, PCA) that put new images where the features of the dataset at ``data_dir`` lie: the encoder its
    record names, with the weights its features were made with, and the PCA saved beside them.

    ``vgg16_weights``: the VGG16 weights file (``--vgg16-weights``); None: the torch hub cache file, used only when
    its digest is the recorded one. UserError in one line, before any image is read, when the dataset has no PCA
    (features made elsewhere, as the CS231n archive's), or the weights are not the recorded ones.
    """
    data_dir = Path(data_dir)
    info_path, pca_path = data_dir / ENCODER_INFO_FILE, data_dir / PCA_FILE
    if not (info_path.is_file() and pca_path.is_file()):
        raise UserError(f"{data_dir} has no {PCA_FILE} or {ENCODER_INFO_FILE}: its features were made elsewhere (the "
                        "CS231n archive ships them projected, without the PCA), so new images cannot be put in their "
                        "space; to caption your own images, train on a dataset this project extracted "
                        "(features_extraction.py --captions, or the shapes world)")
    info = read_encoder_info(data_dir)
    if info["name"] == "vgg16":
        encoder = load_encoder("vgg16", weights=recorded_vgg16_weights(data_dir, info, vgg16_weights), device=device)
    elif vgg16_weights is not None:
        raise UserError(f"--vgg16-weights is for datasets built with VGG16; {info_path} names the {info['name']} "
                        "encoder, read from the dataset folder: drop --vgg16-weights")
    else:
        encoder = load_encoder(info["name"], base_dir=data_dir, device=device)
    pca = load_pca(pca_path)
    if pca.components.shape[1] != encoder.feature_dim:
        raise UserError(f"{pca_path} projects {pca.components.shape[1]}-d features but the encoder of {info_path} "
                        f"gives {encoder.feature_dim}-d ones: the two files come from different extractions; "
                        "extract the features again")
    return encoder, pca


def encode_image_files(paths, encoder, pca, device=None, progress=True, grid=False):
    """Features of shape (M, K) for image files, in the space of a dataset's (``dataset_encoder``'s encoder and PCA).

    With ``grid``, returns (features (M, K), grid (M, R, C) float32): the grid features from the same pass, rounded
    to float16 as the dataset's grid files store them.
    """
    size = getattr(encoder, "image_size", None)
    # A handful of files: read them all first, so an unreadable one fails before any progress bar starts.
    images = ImageFolder([Path(p) for p in paths], **({"size": size} if size else {}))[:]  # (M, S, S, 3) uint8
    if not grid:
        raw = extract_features(encoder, images, device=device, desc="encode images", progress=progress)  # (M, F)
        return pca.project(raw)  # (M, K)
    maps = np.empty((len(images), *encoder.grid_shape), GRID_DTYPE)  # (M, R, C)
    raw = extract_features(encoder, images, device=device, desc="encode images", progress=progress, grid_out=maps)
    return pca.project(raw), maps.astype(np.float32)
