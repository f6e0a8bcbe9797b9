"""read_image_file on every bit depth and mode: wide samples scaled to 8 bits, Pillow's modes converted, others
refused in one line. Expected values are computed by hand from the rule in decode_image's docstring."""
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from core.data.images import read_image_file
from core.runtime.errors import UserError


def grey_row(values):
    """A one-row grey image of ``values`` as the (1, W, 3) uint8 RGB it must decode to."""
    return np.repeat(np.array([values], dtype=np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_grey_png_scales_by_65535_not_clipped(tmp_path, monkeypatch, mode):
    # Older Pillow opened 16-bit grey PNGs in its 32-bit mode I; its table is patched to do the same.
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), (mode, "I;16B"))
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[0, 128, 129, 257, 32768]], dtype=np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode == mode  # Pillow's own RGB conversion clips either to white
    # v * 255 / 65535 = v / 257: 0.498 -> 0, 0.502 -> 1, 1, 127.5 -> 128 (min-max would give 0, 1, 1, 2, 255)
    np.testing.assert_array_equal(read_image_file(path), grey_row([0, 0, 1, 1, 128]))


def test_16_bit_pgm_in_mode_i_scales_by_65535(tmp_path):
    path = tmp_path / "grey16.pgm"
    path.write_bytes(b"P5 3 1 65535\n" + np.array([0, 257, 32768], dtype=">u2").tobytes())
    with Image.open(path) as image:
        assert image.mode == "I"  # 16-bit samples in Pillow's 32-bit mode, as older Pillow gives 16-bit PNGs
    np.testing.assert_array_equal(read_image_file(path), grey_row([0, 1, 128]))  # min-max would give 0, 2, 255


@pytest.mark.parametrize("values, dtype, expected", [
    ([-5, 0, 100, 1000], np.int32, [0, 1, 27, 255]),  # (v + 5) * 255 / 1005
    ([-1.0, 0.0, 0.5, 3.0], np.float32, [0, 64, 96, 255]),  # (v + 1) * 255 / 4
    ([7, 7], np.int32, [0, 0]),  # no range to scale: black
])
def test_32_bit_tiff_scales_from_its_minimum_to_its_maximum(tmp_path, values, dtype, expected):
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([values], dtype=dtype)).save(path)
    np.testing.assert_array_equal(read_image_file(path), grey_row(expected))


def test_float_tiff_with_nan_is_refused_in_one_line(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(path)
    with pytest.raises(UserError, match=r"nan.tif: unsupported image \(mode F with NaN") as err:
        read_image_file(path)
    assert "\n" not in str(err.value)


def test_8_bit_grey_rgba_la_and_palette_convert_as_pillow_does(tmp_path):
    rgb = np.array([[[10, 20, 30], [200, 100, 0]]], dtype=np.uint8)
    alpha = np.array([[[0], [255]]], dtype=np.uint8)
    grey = np.array([[5, 250]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(tmp_path / "rgba.png")
    Image.fromarray(np.stack([grey, alpha[:, :, 0]], axis=2)).save(tmp_path / "la.png")
    palette = Image.new("P", (2, 1))
    palette.putpalette([1, 2, 3, 250, 251, 252])
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image_file(tmp_path / "grey.png"), grey_row([5, 250]))
    np.testing.assert_array_equal(read_image_file(tmp_path / "rgba.png"), rgb)  # alpha dropped, colours kept
    np.testing.assert_array_equal(read_image_file(tmp_path / "la.png"), grey_row([5, 250]))
    np.testing.assert_array_equal(read_image_file(tmp_path / "palette.png"), [[[1, 2, 3], [250, 251, 252]]])


def test_mode_without_a_sound_rgb_conversion_is_refused_by_name(tmp_path):
    path = tmp_path / "lab.tif"
    Image.new("LAB", (2, 2), (50, 10, 10)).save(path)
    with pytest.raises(UserError, match=r"lab.tif: unsupported image \(mode LAB\); convert it to 8-bit RGB") as err:
        read_image_file(path)
    assert "\n" not in str(err.value)


def test_folder_given_as_an_image_file_is_one_user_error_line(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(UserError, match="photos is a folder, not an image file") as err:
        read_image_file(folder)
    assert "\n" not in str(err.value) and "plugin" not in str(err.value)
