"""Image encoders by name (ImageNet VGG16 fc7, the shapes world's CNN), and encoding new image files with one.

Both follow the encoder interface of ``core.features.extract`` (``feature_dim``, ``preprocess``,
``forward``). A dataset folder records which encoder made its features in ``encoder.json``
(``{"name": "vgg16" | "shapes", ...}``), so new images can later be encoded the same way.
"""
import json
from pathlib import Path

import numpy as np

from core.data.grid import GRID_DTYPE
from core.data.layout import ENCODER_INFO_FILE, ENCODER_WEIGHTS_FILE, PCA_FILE
from core.features.extract import extract_features, resolve_device
from core.features.pca import load_pca
from core.features.preprocess import ImageFolder
from core.features.shapes_cnn import load_shapes_encoder
from core.features.vgg16 import VGG16_FILE, fetch_vgg16_weights, load_vgg16_weights, vgg16_from_state_dict
from core.runtime.errors import UserError

ENCODER_NAMES = ("vgg16", "shapes")


def load_encoder(name, base_dir=None, weights=None, device=None):
    """An encoder in eval mode on ``device``.

    Inputs:
    - name: "vgg16" or "shapes".
    - base_dir: dataset folder; the shapes encoder is read from its ``encoder.pt`` and
      ``encoder.json``. Not used by vgg16.
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
    else:
        raise UserError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    return encoder.to(resolve_device(device)).eval()


def vgg16_encoder(weights=None, device=None):
    """The VGG16 encoder (``load_encoder``'s ``weights`` and ``device``) and its ``encoder.json`` record."""
    encoder = load_encoder("vgg16", weights=weights, device=device)
    return encoder, {"name": "vgg16", "weights": Path(weights).name if weights else VGG16_FILE,
                     "layer": "fc7 (after ReLU)", "feature_dim": encoder.feature_dim,
                     "preprocess": "resize shorter side 256, centre crop 224, ImageNet mean/std"}


def read_encoder_info(base_dir):
    """The dict in ``base_dir/encoder.json``; UserError naming the file when missing or malformed."""
    path = Path(base_dir) / ENCODER_INFO_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; this dataset does not record its encoder, rebuild its features")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); rebuild the dataset's features") from None
    if not isinstance(info, dict) or info.get("name") not in ENCODER_NAMES:
        raise UserError(f"{path}: needs a \"name\" among {', '.join(ENCODER_NAMES)}; rebuild the dataset's features")
    return info


def encode_image_files(paths, data_dir, device=None, progress=True, grid=False):
    """Features of shape (M, D) for image files, in the space of the dataset at ``data_dir``.

    Uses the encoder recorded in ``data_dir``'s encoder record and the PCA saved beside it, so new images land
    where the model's training features lie. With ``grid``, returns (features (M, D), grid (M, R, C) float32):
    the grid features from the same pass, rounded to float16 as the dataset's grid files store them.
    """
    data_dir = Path(data_dir)
    info_path, pca_path = data_dir / ENCODER_INFO_FILE, data_dir / PCA_FILE
    if not (info_path.is_file() and pca_path.is_file()):
        raise UserError(f"{data_dir} has no saved {ENCODER_INFO_FILE}/{PCA_FILE} (features made elsewhere, e.g. "
                        "the CS231n files), so new images cannot be put in its feature space: rebuild its features "
                        "with features_extraction.py")
    encoder = load_encoder(read_encoder_info(data_dir)["name"], base_dir=data_dir, device=device)
    size = getattr(encoder, "image_size", None)
    # A handful of files: read them all first, so an unreadable one fails before any progress bar starts.
    images = ImageFolder([Path(p) for p in paths], **({"size": size} if size else {}))[:]  # (M, S, S, 3) uint8
    pca = load_pca(pca_path)
    if pca.components.shape[1] != encoder.feature_dim:
        raise UserError(f"{pca_path} projects {pca.components.shape[1]}-d features but the encoder of {info_path} "
                        f"gives {encoder.feature_dim}-d ones: the two files come from different extractions; "
                        "extract the features again")
    if not grid:
        raw = extract_features(encoder, images, device=device, desc="encode images", progress=progress)  # (M, F)
        return pca.project(raw)  # (M, K)
    maps = np.empty((len(images), *encoder.grid_shape), GRID_DTYPE)  # (M, R, C)
    raw = extract_features(encoder, images, device=device, desc="encode images", progress=progress, grid_out=maps)
    return pca.project(raw), maps.astype(np.float32)
