"""A random minibatch of caption rows with their images' features and URLs, as CS231n's notebooks draw one."""
import numpy as np

from core.data.layout import HELD_OUT_SPLIT, SPLITS


def sample_coco_minibatch(data, batch_size=100, split="train", rng=None):
    """``batch_size`` caption rows of ``split`` drawn uniformly with replacement, and their images.

    Inputs:
    - data: the dict of ``load_coco_data``, holding ``split``.
    - batch_size: B, the rows drawn.
    - split: "train", "val" or "test".
    - rng: the np.random.Generator to draw from; None draws from numpy's global generator, as CS231n does (so that
      ``np.random.seed`` fixes the draw).

    Returns a tuple of:
    - captions: int array of shape (B, T), the drawn rows.
    - image_features: of shape (B, D), the features of each row's image (read per row from a ``LazyFeatures``).
    - urls: str array of shape (B,), each row's image URL.
    """
    if split not in (*SPLITS, HELD_OUT_SPLIT):
        raise ValueError(f"split must be one of {(*SPLITS, HELD_OUT_SPLIT)}, got {split!r}")
    if f"{split}_captions" not in data:
        raise ValueError(f"the data holds no {split} split: load it with load_coco_data(..., splits=(..., {split!r}))")
    num_captions = data[f"{split}_captions"].shape[0]
    rows = (np.random if rng is None else rng).choice(num_captions, batch_size)  # (B,), with replacement
    images = data[f"{split}_image_idxs"][rows]  # (B,)
    return data[f"{split}_captions"][rows], data[f"{split}_features"][images], data[f"{split}_urls"][images]
