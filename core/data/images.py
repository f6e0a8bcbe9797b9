"""Image files decoded in one place (Pillow), and finding the picture behind a caption for galleries.

``read_image_file`` is how every image file the project reads is decoded. ``ImageSource`` finds the picture of
a dataset row: shapes images, local COCO files, or URLs. ``image_from_url`` is CS231n's reader of one picture by
URL or path.

Captioning runs on precomputed features, so images are only needed to show results. They are looked
up in order: the shapes world's own image file; a local folder of COCO images; the image URL when
fetching is allowed. A picture that is not available is None rather than an error, so a gallery shows
a placeholder instead of failing after a long training run; only a broken file the user has to fix
(a corrupt image or shapes file) raises UserError.
"""
import http.client
import io
import os
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import h5py
import numpy as np
from PIL import Image

from core.data.layout import EVALUATION_SPLITS, SHAPES_IMAGES_FILE, images_key
from core.runtime.errors import UserError

MAX_DOWNLOAD_BYTES = 32 * 1024 * 1024  # far above any COCO image; guards against a runaway response
FETCH_TIMEOUT = 3.0  # seconds a fetched picture may take to answer
# Modes whose conversion to RGB Pillow gets right (alpha is dropped). The premultiplied ones (La, RGBa)
# and LAB or HSV have no conversion that keeps their colours, so they are refused rather than garbled.
PILLOW_RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
UINT16_RAWMODE = re.compile(r"I;16[LBN]?")  # unsigned 16-bit samples; the signed ones end in S


class UnsupportedImage(ValueError):
    """An image whose pixels have no sound conversion to 8-bit RGB."""


def decode_image(source):
    """Decode an image file (path or file-like) as uint8 of shape (H, W, 3).

    Grey, palette, CMYK and alpha images are converted by Pillow (alpha dropped). Pillow's own conversion
    of wider samples clips everything above 255 to white, so they are scaled here instead:
    - 16-bit samples (modes I;16*, and mode I decoded from 16-bit samples: older Pillow gives 16-bit
      PNGs that mode, and it scales a PGM's maximum to 65535) by 255 / 65535, rounded;
    - other 32-bit integer (I) and float (F) images from their minimum to their maximum onto 0..255,
      since nothing in the file says what range they mean (a constant image becomes black).
    UnsupportedImage for other modes and for float images holding NaN or infinities.
    """
    with Image.open(source) as image:
        mode = image.mode
        if mode in PILLOW_RGB_MODES:
            return np.array(image.convert("RGB"))  # writable, as torch.from_numpy wants
        if mode not in UINT16_MODES + ("I", "F"):
            raise UnsupportedImage(f"mode {mode}")
        sixteen_bit = mode in UINT16_MODES or (mode == "I" and _holds_uint16(image))
        pixels = np.asarray(image).astype(np.float64)  # float64 holds every int32 exactly
    if sixteen_bit:
        grey = pixels * (255 / 65535)
    else:
        grey = _min_max_scaled(pixels, mode)
    return np.repeat(np.rint(grey).astype(np.uint8)[:, :, None], 3, axis=2)


def _holds_uint16(image):
    """Whether a mode I image was decoded from unsigned 16-bit samples (read before its pixels are loaded)."""
    if image.format == "PPM":
        return True  # PGM allows at most 16 bits a sample, and Pillow scales its maximum to 65535
    if not image.tile:
        return False
    args = image.tile[0].args
    rawmode = args[0] if isinstance(args, tuple) else args
    return UINT16_RAWMODE.fullmatch(str(rawmode)) is not None


def _min_max_scaled(pixels, mode):
    """``pixels`` mapped linearly from their minimum..maximum onto 0..255 (all 0 when constant)."""
    if not np.isfinite(pixels).all():
        raise UnsupportedImage(f"mode {mode} with NaN or infinite pixels")
    low, high = pixels.min(), pixels.max()
    if high == low:
        return np.zeros_like(pixels)
    return (pixels - low) * (255 / (high - low))


# What reading a bad image file raises, Pillow's decompression-bomb refusal included.
IMAGE_ERRORS = (OSError, ValueError, RuntimeError, SyntaxError, Image.DecompressionBombError)


def read_image_file(path):
    """Decode the image file ``path`` as uint8 of shape (H, W, 3); UserError naming a file that cannot be read."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not an image file; give the path of an image file")
    try:
        return decode_image(path)
    except UnsupportedImage as exc:
        raise UserError(f"{path}: unsupported image ({exc}); convert it to 8-bit RGB") from None
    except IMAGE_ERRORS as exc:
        raise UserError(f"{path}: cannot read image ({exc}); remove or replace the file") from None


class ImageSource:
    """Looks up the image of a dataset row for display.

    Shapes datasets (``base_dir`` holds ``shapes_images.h5``) read one image at a time from that file,
    which stays open until ``close()`` (or the end of a ``with`` block). Otherwise the URL's file name
    is looked for in ``images_dir`` and ``images_dir/<split>2014``; failing that, the URL itself is
    fetched when ``fetch_urls`` is set (any failure, offline included, gives None).
    """

    def __init__(self, base_dir, images_dir=None, fetch_urls=False, timeout=FETCH_TIMEOUT):
        self.base_dir = Path(base_dir)
        self.images_dir = None if images_dir is None else Path(images_dir)
        self.fetch_urls = bool(fetch_urls)
        self.timeout = float(timeout)
        self._shapes_path = self.base_dir / SHAPES_IMAGES_FILE
        self._shapes_file, self._shapes_datasets = None, {}
        if self.images_dir is not None and not self.images_dir.is_dir():
            raise UserError(f"images folder {self.images_dir} does not exist; give the folder holding the "
                            "COCO images (the unzipped val2014, or its parent)")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Close the shapes image file if it was opened."""
        if self._shapes_file is not None:
            self._shapes_file.close()
            self._shapes_file, self._shapes_datasets = None, {}

    def get(self, split, image_idx, url):
        """The image of row ``image_idx`` of ``split`` as uint8 of shape (H, W, 3), or None if not found.

        Inputs:
        - split: one of ``EVALUATION_SPLITS``.
        - image_idx: int, the row in the split's feature file and URL list.
        - url: str, the row's URL (used for COCO; ignored for the shapes world).
        """
        if split not in EVALUATION_SPLITS:
            raise ValueError(f"split must be one of {EVALUATION_SPLITS}, got {split!r}")
        if self._shapes_path.is_file():
            return self._shapes_image(split, int(image_idx))
        local = self._local_path(split, url)
        if local is not None:
            return read_image_file(local)
        if self.fetch_urls:
            return fetch_image(url, self.timeout)
        return None

    def _shapes_image(self, split, image_idx):
        """One image of the shapes world's image file, read lazily."""
        images = self._shapes_datasets.get(split) or self._shapes_dataset(split)
        if not 0 <= image_idx < images.shape[0]:
            raise ValueError(f"image index {image_idx} out of range for {images.name} of {images.shape[0]} images")
        return images[image_idx]

    def _shapes_dataset(self, split):
        """The shapes file's dataset of ``split``'s images, checked, kept open: its rows are stored compressed in
        chunks of many images, which the dataset's chunk cache decompresses once rather than once a row."""
        if self._shapes_file is None:
            try:
                self._shapes_file = h5py.File(self._shapes_path, "r")
            except OSError as err:
                raise UserError(f"{self._shapes_path} is not a readable HDF5 file ({err}); delete it and "
                                "rebuild the shapes dataset") from err
        name = images_key(split)
        if name not in self._shapes_file:
            raise UserError(f"{self._shapes_path} has no dataset '{name}'; delete it and rebuild the shapes "
                            "dataset")
        images = self._shapes_file[name]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise UserError(f"{self._shapes_path}: {name} is {images.dtype} {images.shape}, not uint8 "
                            "(M, S, S, 3); delete it and rebuild the shapes dataset")
        self._shapes_datasets[split] = images
        return images

    def _local_path(self, split, url):
        """The local file holding the URL's image, or None."""
        if self.images_dir is None or not url:
            return None
        name = os.path.basename(urlparse(url).path)
        if not name:
            return None
        for candidate in (self.images_dir / name, self.images_dir / f"{split}2014" / name):
            if candidate.is_file():
                return candidate
        return None


def read_url_image(url, timeout=FETCH_TIMEOUT):
    """Download and decode the image at an http(s) or file URL as uint8 of shape (H, W, 3).

    Raises what ``IMAGE_ERRORS`` and ``http.client.HTTPException`` hold: OSError when the address does not answer
    or says no (urllib's URLError and HTTPError are OSErrors), ValueError for a response over
    ``MAX_DOWNLOAD_BYTES`` or pixels with no RGB conversion, Pillow's errors for what is no image.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ValueError(f"more than {MAX_DOWNLOAD_BYTES} bytes")
    return decode_image(io.BytesIO(data))


def fetch_image(url, timeout=FETCH_TIMEOUT):
    """Download and decode an http(s) image; None on any failure (offline, 404, not an image)."""
    if urlparse(url).scheme not in ("http", "https"):
        return None
    try:
        return read_url_image(url, timeout)
    except Exception:  # any network or decoding failure only costs the gallery one picture
        return None


def image_from_url(url, timeout=FETCH_TIMEOUT):
    """The image at ``url`` as uint8 of shape (H, W, 3), as CS231n's ``image_from_url`` reads one: ``url`` is an
    http(s) or file URL, or a file path. On failure (offline, an HTTP error, no such file, not an image) it prints
    one line saying why and returns None, so that a notebook cell showing many images goes on."""
    try:
        if urlparse(str(url)).scheme in ("http", "https", "file"):
            return read_url_image(url, timeout)
        return decode_image(url)
    except (*IMAGE_ERRORS, http.client.HTTPException) as exc:
        print(f"cannot read the image at {url}: {exc}")
        return None
