"""Captions for a split's images or the user's own image files, from a trained model.

Dimension legend: M images, D feature width, L max caption length.
"""
import json
from pathlib import Path

import numpy as np

from core.coco_utils import decode_captions
from core.decoding import decode
from core.errors import UserError


def caption_features(model, features, max_length, decode_config=None, batch_size=500, rng=None):
    """Captions (strings) for image features of shape (M, D), decoded ``batch_size`` images at a time.

    ``decode_config`` is a ``core.decoding.DecodeConfig`` (default greedy); ``max_length`` counts <END>.
    """
    captions = []
    for start in range(0, len(features), batch_size):
        batch = np.asarray(features[start:start + batch_size], dtype=np.float32)  # (B, D)
        ids = decode(model, batch, max_length, config=decode_config, rng=rng)  # (B, max_length)
        captions.extend(decode_captions(ids, model.idx_to_word))
    return captions


def split_images(data, split):
    """The image rows of ``split`` that have captions, and their reference captions (lists of strings)."""
    image_idxs = np.asarray(data[f"{split}_image_idxs"])
    texts = decode_captions(data[f"{split}_captions"], data["idx_to_word"])
    references = {}
    for idx, text in zip(image_idxs.tolist(), texts):
        references.setdefault(idx, []).append(text)
    images = np.array(sorted(references), dtype=np.int64)
    return images, references


def check_compatible(meta, data, checkpoint):
    """The checkpoint's vocabulary and feature width must be the dataset's."""
    if list(meta["idx_to_word"]) != list(data["idx_to_word"]):
        raise UserError(f"checkpoint {checkpoint} was trained with another vocabulary ({len(meta['idx_to_word'])} "
                        f"words) than {data['base_dir']} ({len(data['idx_to_word'])} words): pass the --data-dir "
                        "it was trained on")
    width = data["train_features"].shape[1]
    if meta["model_config"]["input_dim"] != width:
        raise UserError(f"checkpoint {checkpoint} expects {meta['model_config']['input_dim']}-d features but "
                        f"{data['base_dir']} has {width}-d ones: pass the --data-dir it was trained on")


def encode_image_files(paths, data_dir, device=None):
    """Features of shape (M, D) for image files, in the space of the dataset at ``data_dir``.

    Uses the encoder recorded in ``data_dir/encoder.json`` and the PCA saved beside it, so new images land
    where the model's training features lie.
    """
    from core.features.encoders import load_encoder
    from core.features.extract import extract_features
    from core.features.preprocess import ImageFolder
    from core.features.pca import load_pca

    data_dir = Path(data_dir)
    info_path, pca_path = data_dir / "encoder.json", data_dir / "pca.npz"
    if not (info_path.is_file() and pca_path.is_file()):
        raise UserError(f"{data_dir} has no saved encoder.json/pca.npz (features made elsewhere, e.g. the CS231n "
                        "files), so new images cannot be put in its feature space: rebuild its features with "
                        "features_extraction.py")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {info_path} ({err}); rebuild it with features_extraction.py") from None
    encoder = load_encoder(info["name"], base_dir=data_dir, device=device)
    # A handful of files: read them all first, so an unreadable one fails before any progress bar starts.
    images = ImageFolder([Path(p) for p in paths], **_image_size(encoder))[:]  # (M, S, S, 3) uint8
    raw = extract_features(encoder, images, device=device, desc="encode images")  # (M, F)
    return load_pca(pca_path).project(raw)  # (M, 512)


def _image_size(encoder):
    size = getattr(encoder, "image_size", None)
    return {"size": size} if size else {}
