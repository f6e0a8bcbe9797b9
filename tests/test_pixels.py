"""CS231n's image helpers (``core.image_utils``): loading with a resize, ImageNet normalisation and back, the blur."""
import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.features.preprocess import read_image
from core.image_utils import SQUEEZENET_MEAN, SQUEEZENET_STD, blur_image, deprocess_image, load_image, preprocess_image
from core.runtime.errors import UserError


def random_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_load_image_resizes_the_shorter_side_keeping_the_aspect_ratio(tmp_path):
    image = random_image((30, 45, 3))
    iio.imwrite(tmp_path / "a.png", image)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), image)
    assert load_image(tmp_path / "a.png", size=20).shape == (20, 30, 3)
    assert load_image(tmp_path / "a.png", size=60).shape == (60, 90, 3)
    # read_image is the same resize, then the centre crop
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", 20), load_image(tmp_path / "a.png", 20)[:, 5:25])
    (tmp_path / "bad.png").write_bytes(b"x")
    with pytest.raises(UserError, match="bad.png"):
        load_image(tmp_path / "bad.png")


def test_preprocess_normalises_by_imagenet_statistics_and_deprocess_undoes_it():
    image = random_image((6, 5, 3))
    x = preprocess_image(image)
    assert x.dtype == np.float32 and x.shape == (6, 5, 3)
    np.testing.assert_allclose(x[2, 3], (image[2, 3] / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                               rtol=1e-5)
    np.testing.assert_array_equal(deprocess_image(x), image)
    assert SQUEEZENET_MEAN.dtype == SQUEEZENET_STD.dtype == np.float32


def test_deprocess_rescale_stretches_to_the_full_range():
    x = preprocess_image(random_image((4, 4, 3))) * 0.1  # a washed-out image
    out = deprocess_image(x, rescale=True)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


def test_blur_is_a_per_channel_convolution_that_keeps_the_mean_inside():
    images = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    kernel = torch.tensor([[1., 2., 1.], [2., 188., 2.], [1., 2., 1.]], dtype=torch.float64) / 200
    weight = kernel.expand(3, 1, 3, 3)  # (3, 3) -> (C, 1, 3, 3): one filter per channel
    expected = F.conv2d(torch.from_numpy(images), weight, padding=1, groups=3).numpy()
    blurred = blur_image(images)
    assert blurred.shape == images.shape and blurred.dtype == np.float64
    np.testing.assert_allclose(blurred, expected, rtol=1e-12, atol=1e-12)
    flat = np.full((1, 3, 5, 5), 2.0, dtype=np.float32)
    assert blur_image(flat).dtype == np.float32
    np.testing.assert_allclose(blur_image(flat)[0, :, 1:-1, 1:-1], 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="N, C, H, W"):
        blur_image(np.zeros((3, 5, 5)))
