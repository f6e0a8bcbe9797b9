"""Tests for core.inference.attention_maps: bilinear upsampling of the cell grid and the per-word attention figure."""
import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.figure import Figure

from core.inference.attention_maps import DIM_FLOOR, PANEL_INCHES, plot_attention, upsample_attention

WHITE = np.full((64, 64, 3), 255, dtype=np.uint8)
ORANGE = (200, 120, 40)  # a colour that neither the figure's frame nor its text use
CAPTION = "a red circle left of a blue star".split()
PIXELS_PER_PANEL = round(PANEL_INCHES * 100)  # PNGs are saved at 100 dpi


def read_png(path):
    image = iio.imread(path)
    assert image.ndim == 3 and image.dtype == np.uint8
    return image[:, :, :3]


def count_colour(image, rgb):
    return int(np.all(image == np.asarray(rgb, dtype=np.uint8), axis=2).sum())


def one_hot(num_rows, cell, cells=64):
    return np.eye(cells)[[cell] * num_rows]


def test_upsampling_is_bilinear_between_cell_centres():
    up = upsample_attention([[0.0, 1.0], [0.0, 1.0]], 2, 8)
    np.testing.assert_allclose(up, [[0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1]] * 2)
    np.testing.assert_allclose(upsample_attention(np.full((8, 8), 0.3), 64, 48), 0.3)


def test_upsampling_keeps_rows_and_columns_apart():
    cell_map = np.zeros(14 * 14)
    cell_map[3 * 14 + 10] = 1.0  # cell r = y * side + x: the 4th row from the top, 11th column
    up = upsample_attention(cell_map.reshape(14, 14), 140, 280)  # cells of 10 x 20 pixels
    y, x = np.unravel_index(np.argmax(up), up.shape)
    assert 30 <= y < 40 and 200 <= x < 220


def test_png_written_with_one_panel_per_word(tmp_path):
    alphas = one_hot(len(CAPTION) + 1, 9)  # a row for <END> too
    path = plot_attention(WHITE, CAPTION, alphas, tmp_path / "maps" / "val_0.png", title="val #0",
                          note="last decoder layer's cross-attention, mean over heads")
    image = read_png(path)
    assert image.shape[1] == 6 * PIXELS_PER_PANEL  # the image and 8 words wrap at 6 panels a row
    assert image.shape[0] > 2 * PIXELS_PER_PANEL  # two rows of panels
    assert count_colour(image, (255, 255, 255)) < image.shape[0] * image.shape[1]  # something drawn
    assert [p.name for p in path.parent.iterdir()] == ["val_0.png"]  # no temporary file left


def test_long_captions_wrap_into_rows(tmp_path):
    short = read_png(plot_attention(WHITE, CAPTION[:3], one_hot(3, 0), tmp_path / "short.png"))
    long_words = CAPTION * 2 + CAPTION[:3]  # 19 words and the image: 4 rows of 6
    long = read_png(plot_attention(WHITE, long_words, one_hot(19, 0), tmp_path / "long.png"))
    assert short.shape[1] == 4 * PIXELS_PER_PANEL
    assert long.shape[1] == 6 * PIXELS_PER_PANEL
    assert long.shape[0] > 3.5 * short.shape[0]


def test_attention_lights_the_image_on_one_scale_for_all_words(tmp_path):
    """A plain image: its colour where a word attends at the caption's peak, dimmed to DIM_FLOOR where none does."""
    image = np.broadcast_to(np.asarray(ORANGE, dtype=np.uint8), (64, 64, 3))
    dim = np.rint(np.asarray(ORANGE) * DIM_FLOOR)
    even_dim = np.rint(np.asarray(ORANGE) * (DIM_FLOOR + (1 - DIM_FLOOR) / 64))
    panel_area = 150 * 150  # well inside the shown size of a 1.9-inch panel
    peaked = read_png(plot_attention(image, ["a"], one_hot(1, 0), tmp_path / "peaked.png"))
    assert count_colour(peaked, dim) > 0.7 * panel_area
    even = read_png(plot_attention(image, ["a"], np.full((1, 64), 1 / 64), tmp_path / "even.png"))
    assert count_colour(even, dim) == 0 and count_colour(even, ORANGE) > 1.9 * panel_area
    both = read_png(plot_attention(image, ["a", "b"], np.stack([one_hot(1, 0)[0], np.full(64, 1 / 64)]),
                                   tmp_path / "both.png"))
    assert count_colour(both, even_dim) > 0.9 * panel_area  # even attention is dim beside a peak


def test_cells_are_read_row_major_from_the_top_left(tmp_path):
    """Cell 7 of an 8 x 8 grid is the top right one: the word's panel is lit at its top right corner."""
    image = np.broadcast_to(np.asarray(ORANGE, dtype=np.uint8), (64, 64, 3))
    png = read_png(plot_attention(image, ["a"], one_hot(1, 7), tmp_path / "corner.png"))
    ys, xs = np.nonzero(np.all(png == np.rint(np.asarray(ORANGE) * DIM_FLOOR), axis=2))  # the word's panel
    panel = png[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    lit_y, lit_x = np.nonzero(np.all(panel == np.asarray(ORANGE, dtype=np.uint8), axis=2))
    assert lit_y.size and lit_y.max() < 0.2 * panel.shape[0] and lit_x.min() > 0.8 * panel.shape[1]


def test_rows_past_the_words_are_ignored(tmp_path):
    alphas = np.random.default_rng(0).dirichlet(np.ones(64), size=len(CAPTION))
    exact = read_png(plot_attention(WHITE, CAPTION, alphas, tmp_path / "a.png"))
    with_end = read_png(plot_attention(WHITE, CAPTION, np.vstack([alphas, one_hot(1, 5)]), tmp_path / "b.png"))
    np.testing.assert_array_equal(exact, with_end)


@pytest.mark.parametrize("image, words, alphas, match", [
    (WHITE.astype(np.float32), ["a"], one_hot(1, 0), "uint8"),
    (WHITE[:, :, 0], ["a"], one_hot(1, 0), "uint8"),
    (WHITE, "a red circle", one_hot(3, 0), "list of str"),
    (WHITE, ["a", 7], one_hot(2, 0), "list of str"),
    (WHITE, ["a"], np.full(64, 1 / 64), "shape"),
    (WHITE, ["a", "red"], one_hot(1, 0), "L >= 2"),
    (WHITE, ["a"], one_hot(1, 0, cells=50), "square grid"),
    (WHITE, ["a"], -one_hot(1, 0), "non-negative"),
    (WHITE, ["a"], np.full((1, 64), np.nan), "finite"),
])
def test_bad_inputs_raise(tmp_path, image, words, alphas, match):
    with pytest.raises(ValueError, match=match):
        plot_attention(image, words, alphas, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_bad_columns_raise(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        plot_attention(WHITE, ["a"], one_hot(1, 0), tmp_path / "x.png", columns=0)


def test_failed_write_keeps_the_previous_png(tmp_path, monkeypatch):
    (tmp_path / "keep.png").write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError):
        plot_attention(WHITE, ["a"], one_hot(1, 0), tmp_path / "keep.png")
    assert (tmp_path / "keep.png").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]
