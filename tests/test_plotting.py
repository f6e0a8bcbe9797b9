"""Tests for core.runtime.plotting: loss curves, caption galleries, atomic PNG writes."""
import imageio.v3 as iio
import numpy as np
import pytest
from matplotlib.figure import Figure

from core.runtime.plotting import plot_loss, save_figure, save_gallery, smooth, use_log_scale


def history(train, epoch_train, epoch_val, per_epoch):
    return {"train_loss": list(train), "epoch_train_loss": list(epoch_train), "epoch_val_loss": list(epoch_val),
            "iterations_per_epoch": per_epoch, "epoch_seconds": [1.0] * len(epoch_train)}


def read_png(path):
    image = iio.imread(path)
    assert image.ndim == 3 and image.dtype == np.uint8
    return image[:, :, :3]


def count_colour(image, rgb):
    return int(np.all(image == np.array(rgb, dtype=np.uint8), axis=2).sum())


def test_smooth():
    centres, means = smooth([1.0, 3.0, 5.0, 7.0], window=2)
    np.testing.assert_allclose(means, [2.0, 4.0, 6.0])
    np.testing.assert_allclose(centres, [0.5, 1.5, 2.5])
    _, means = smooth([1.0, np.nan, 3.0], window=2)  # a bad point is left out, not propagated
    np.testing.assert_allclose(means, [1.0, 3.0])
    _, means = smooth([2.0, 4.0], window=10)  # window clipped to the data
    np.testing.assert_allclose(means, [3.0])


def test_log_scale_only_when_loss_spans_two_decades():
    assert use_log_scale([5.0, 1.0, 0.01])
    assert not use_log_scale([3.0, 2.0, 1.5], [2.5])
    assert use_log_scale([3.0], [0.02])  # per-epoch series count too
    assert not use_log_scale([0.0, np.nan, 2.0, 1.0])  # zeros and NaN ignored
    assert not use_log_scale([])


def test_plot_loss_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    train = 4.0 * np.exp(-np.arange(300) / 40.0) + 0.01 * rng.random(300)
    path = plot_loss(history(train, [2.0, 0.3, 0.05], [2.2, 0.9, None], 100), tmp_path / "run" / "loss.png",
                     title="overfit")
    image = read_png(path)
    assert image.shape[0] > 300 and image.shape[1] > 500
    assert count_colour(image, (255, 255, 255)) < image.shape[0] * image.shape[1]  # something drawn
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]  # no temporary file left


def test_plot_loss_partial_history(tmp_path):
    # A run stopped after 1.5 epochs of 10 iterations and one epoch point; or no epoch at all yet.
    plot_loss(history(np.linspace(3, 2, 15), [2.5], [2.6], 10), tmp_path / "a.png")
    plot_loss({"train_loss": [3.0], "iterations_per_epoch": 10}, tmp_path / "b.png")
    plot_loss({"train_loss": [], "iterations_per_epoch": 10}, tmp_path / "c.png")
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("a.png", "b.png", "c.png"))
    with pytest.raises(ValueError, match="iterations_per_epoch"):
        plot_loss({"train_loss": [1.0]}, tmp_path / "d.png")


def test_save_figure_failure_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "keep.png").write_bytes(b"old")
    fig = Figure()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        save_figure(fig, tmp_path / "keep.png")
    assert (tmp_path / "keep.png").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def checkerboard():
    """A 4x4 red/blue checkerboard: small, so it must be upscaled with hard pixel edges."""
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    red = (np.add.outer(np.arange(4), np.arange(4)) % 2).astype(bool)
    image[red] = (255, 0, 0)
    image[~red] = (0, 0, 255)
    return image


def gallery_items(n):
    return [{"image": checkerboard(), "generated": "two red squares left of a blue square",
             "references": ["a red box", "two red squares and a blue one to the right of them", "a third"],
             "label": f"val #{i}"} for i in range(n)]


def test_gallery_layout_and_pixels(tmp_path):
    items = gallery_items(5) + [{"image": None, "generated": "a dog", "references": [], "label": "missing"}]
    image = read_png(save_gallery(tmp_path / "g.png", items, columns=4, title="shapes val"))
    one_row = read_png(save_gallery(tmp_path / "g1.png", items[:2], columns=4))
    assert image.shape[1] == 2 * one_row.shape[1]  # 4 columns vs 2 (columns capped by the items)
    assert image.shape[0] > 1.5 * one_row.shape[0]  # a second row of tiles
    # Nearest-neighbour upscaling keeps exact colours in large blocks (smoothing would blend them).
    tile_area = 250 * 250
    assert count_colour(image, (255, 0, 0)) > 5 * 0.4 * tile_area
    assert count_colour(image, (0, 0, 255)) > 5 * 0.4 * tile_area
    assert count_colour(image, (200, 200, 200)) > 0.3 * tile_area  # the 'no image' placeholder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "g1.png"]


def test_gallery_large_image_and_long_text(tmp_path):
    big = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    long_caption = " ".join(["word"] * 60)
    path = save_gallery(tmp_path / "g.png", [{"image": big, "generated": long_caption,
                                              "references": [long_caption]}], columns=3)
    assert read_png(path).shape[1] < 400  # one tile wide


@pytest.mark.parametrize("items, match", [
    ([], "at least one"),
    ([{"generated": "x", "refs": []}], "unknown keys"),
    ([{"generated": "x", "image": np.zeros((4, 4, 3), dtype=np.float32)}], "uint8"),
    ([{"generated": "x", "image": np.zeros((4, 4), dtype=np.uint8)}], "uint8"),
])
def test_gallery_rejects_bad_items(tmp_path, items, match):
    with pytest.raises(ValueError, match=match):
        save_gallery(tmp_path / "g.png", items)
    assert not (tmp_path / "g.png").exists()


def test_gallery_rejects_bad_columns(tmp_path):
    with pytest.raises(ValueError, match="columns"):
        save_gallery(tmp_path / "g.png", gallery_items(1), columns=0)


def test_gallery_rejects_string_references(tmp_path):
    with pytest.raises(ValueError, match="references"):
        save_gallery(tmp_path / "g.png", [{"generated": "x", "references": "a red circle"}])


def test_plot_loss_accepts_numpy_history(tmp_path):
    h = {"train_loss": np.linspace(2, 1, 20), "epoch_train_loss": np.array([1.5, 1.1]),
         "epoch_val_loss": np.array([1.6, 1.2]), "iterations_per_epoch": 10}
    assert plot_loss(h, tmp_path / "loss.png").stat().st_size > 1000
