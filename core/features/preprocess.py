"""Reading image files as equal-size uint8 batches, and the resize/crop shared with the encoders.

Photos differ in size, but a batch is one (B, H, W, 3) array, so ``ImageFolder`` brings every image
to a fixed working size: shorter side resized to ``size`` (bilinear, antialiased), then a centre
crop of ``size`` x ``size``. With the default 256 this is exactly the first half of the ImageNet
pipeline (resize 256, crop 224): cropping 256 then 224 keeps the same centre pixels as cropping
224 directly, so VGG16's own preprocessing then gives the standard result.

Dimension legend: B batch size, C channels, H/W height/width, S working size.
"""
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.data.images import read_image_file
from core.runtime.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def resize_shorter_side(x, size):
    """Resize so the shorter side is ``size``, keeping the aspect ratio (bilinear, antialiased).

    Inputs:
    - x: float tensor of shape (B, C, H, W).

    Returns:
    - float tensor of shape (B, C, H', W') with min(H', W') == size.
    """
    H, W = x.shape[-2:]
    if min(H, W) == size:
        return x
    # The longer side is truncated, not rounded, as torchvision's Resize does.
    new_size = (size, int(size * W / H)) if H <= W else (int(size * H / W), size)
    return F.interpolate(x, size=new_size, mode="bilinear", align_corners=False, antialias=True)


def center_crop(x, size):
    """Crop the central ``size`` x ``size`` window of x of shape (B, C, H, W) (H, W >= size).

    Offsets are rounded half to even, as torchvision's CenterCrop does (Python's ``round``).
    """
    H, W = x.shape[-2:]
    top, left = round((H - size) / 2), round((W - size) / 2)
    return x[..., top:top + size, left:left + size]


def to_rgb(images):
    """Bring uint8 images of shape (B, H, W), (B, H, W, 1), (B, H, W, 3) or (B, H, W, 4) to (B, H, W, 3).

    Grayscale is repeated over the three channels; an alpha channel is dropped.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images of shape (B, H, W[, 1|3|4]) expected, got {images.shape}")
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3]


def read_image(path, size):
    """Read one image file as uint8 RGB of shape (size, size, 3); UserError naming an unreadable file."""
    x = _as_batch(read_image_file(path))  # (1, 3, H, W)
    return _as_image(center_crop(resize_shorter_side(x, size), size))  # (S, S, 3)


def load_image(filename, size=None):
    """Read one image file as uint8 RGB of shape (H, W, 3), its shorter side resized to ``size`` when given (the
    aspect ratio kept), as CS231n's ``load_image``; UserError naming an unreadable file."""
    image = read_image_file(filename)  # (H, W, 3) uint8
    return image if size is None else _as_image(resize_shorter_side(_as_batch(image), size))


def _as_batch(image):
    """uint8 (H, W, 3) -> float (1, 3, H, W)."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float()  # (H, W, 3) -> (1, 3, H, W)


def _as_image(x):
    """float (1, 3, H, W) -> uint8 (H, W, 3), rounded to the nearest level."""
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()  # (1, 3, H, W) -> (H, W, 3)


class ImageFolder:
    """A sequence of image files read on demand as uint8 arrays of a fixed working size.

    ``folder[i]`` is of shape (S, S, 3); ``folder[i:j]`` of shape (B, S, S, 3), decoded on
    ``workers`` threads (JPEG decoding and resizing release the GIL).
    """

    def __init__(self, paths, size=256, workers=None):
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.workers = workers or min(8, os.cpu_count() or 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        if isinstance(key, slice):
            paths = self.paths[key]
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                images = list(pool.map(lambda p: read_image(p, self.size), paths))
            return np.stack(images) if images else np.empty((0, self.size, self.size, 3), np.uint8)
        return read_image(self.paths[key], self.size)


def list_images(folder):
    """The .jpg/.jpeg/.png files directly in ``folder``, sorted by name; UserError when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: image folder not found; check the path")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"{folder}: no .jpg/.jpeg/.png images in this folder")
    return paths


def read_image_list(list_file):
    """Image paths from a text file, one per line (blank lines skipped); relative paths are taken
    relative to the list file's folder. UserError when the file is missing or lists nothing."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise UserError(f"{list_file}: image list not found; check the path")
    lines = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines()]
    paths = [list_file.parent / line for line in lines if line]
    if not paths:
        raise UserError(f"{list_file}: the image list is empty; put one image path per line")
    return paths
