"""Images as a pretrained network reads them and back, and a gentle blur: CS231n's ``image_utils`` helpers on
numpy arrays. ``SQUEEZENET_MEAN``/``SQUEEZENET_STD`` (CS231n's names) are the ImageNet channel statistics VGG16
normalises by too (``core.features.vgg16``).

Dimension legend: N images, C channels, H/W height/width.
"""
import numpy as np

from core.features.vgg16 import IMAGENET_MEAN, IMAGENET_STD

SQUEEZENET_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
SQUEEZENET_STD = np.array(IMAGENET_STD, dtype=np.float32)
# Weights summing to 1, almost all on the centre pixel: a blur that regularises generated images without smearing.
BLUR_KERNEL = np.array([[1, 2, 1], [2, 188, 2], [1, 2, 1]]) / 200.0


def preprocess_image(image):
    """uint8 RGB of shape (H, W, 3) -> float32 of shape (H, W, 3): scaled to [0, 1], then each channel less its
    ImageNet mean, over its ImageNet std."""
    return (np.asarray(image, dtype=np.float32) / 255.0 - SQUEEZENET_MEAN) / SQUEEZENET_STD


def deprocess_image(image, rescale=False):
    """Undo ``preprocess_image``: float of shape (H, W, 3) -> uint8 of shape (H, W, 3), rounded and clipped to
    0..255. ``rescale`` first stretches the values' minimum..maximum onto 0..1 (for images a network generated)."""
    image = np.asarray(image, dtype=np.float32) * SQUEEZENET_STD + SQUEEZENET_MEAN
    if rescale:
        low, high = image.min(), image.max()
        image = (image - low) / (high - low)
    return np.clip(np.rint(255 * image), 0, 255).astype(np.uint8)


def blur_image(images):
    """Blur each channel of float images of shape (N, C, H, W) with ``BLUR_KERNEL`` (zero beyond the borders);
    returns the same shape and dtype (float32 for integer input)."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {images.shape}")
    H, W = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (1, 1), (1, 1)))  # (N, C, H + 2, W + 2)
    kernel = BLUR_KERNEL.astype(images.dtype)
    # Each output pixel is the kernel-weighted sum of its 3 x 3 neighbourhood: nine shifted copies, each (N, C, H, W).
    return sum(kernel[i, j] * padded[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3))
