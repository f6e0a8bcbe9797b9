"""Tests for core.images: shapes image file, local COCO folders, URL fetching, RGB conversion."""
import functools
import http.server
import threading

import h5py
import imageio.v3 as iio
import numpy as np
import pytest

from core.data.images import ImageSource, fetch_image, image_from_url
from core.runtime.errors import UserError

URL = "http://images.cocodataset.org/val2014/COCO_val2014_000000000042.jpg"


def random_images(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture
def shapes_dir(tmp_path):
    with h5py.File(tmp_path / "shapes_images.h5", "w") as f:
        f.create_dataset("train_images", data=random_images(0, (5, 16, 16, 3)), compression="gzip")
        f.create_dataset("val_images", data=random_images(1, (3, 16, 16, 3)), compression="gzip")
    return tmp_path


def test_shapes_images_read_by_split_and_index(shapes_dir):
    train, val = random_images(0, (5, 16, 16, 3)), random_images(1, (3, 16, 16, 3))
    with ImageSource(shapes_dir) as source:
        np.testing.assert_array_equal(source.get("train", 4, "shapes://train/4"), train[4])
        np.testing.assert_array_equal(source.get("val", 0, "shapes://val/0"), val[0])
        assert source.get("val", 2, "").dtype == np.uint8
        with pytest.raises(ValueError, match="out of range"):
            source.get("val", 3, "shapes://val/3")
        with pytest.raises(ValueError, match="split"):
            source.get("train2", 0, "")  # "test" is the held-out split now


def test_shapes_file_corrupt_or_incomplete(tmp_path):
    (tmp_path / "shapes_images.h5").write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="shapes_images.h5"):
        ImageSource(tmp_path).get("train", 0, "")
    (tmp_path / "shapes_images.h5").unlink()
    with h5py.File(tmp_path / "shapes_images.h5", "w") as f:
        f.create_dataset("train_images", data=random_images(0, (1, 4, 4, 3)))
    with ImageSource(tmp_path) as source, pytest.raises(UserError, match="val_images"):
        source.get("val", 0, "")


def test_coco_image_found_in_folder_or_split_subfolder(tmp_path):
    rgb = random_images(2, (12, 10, 3))
    (tmp_path / "imgs" / "val2014").mkdir(parents=True)
    iio.imwrite(tmp_path / "imgs" / "val2014" / "COCO_val2014_000000000042.png", rgb)
    iio.imwrite(tmp_path / "imgs" / "COCO_train2014_000000000007.png", rgb[:, :, 0])
    source = ImageSource(tmp_path, images_dir=tmp_path / "imgs")
    np.testing.assert_array_equal(source.get("val", 0, URL.replace(".jpg", ".png")), rgb)
    grey = source.get("train", 3, "http://x.org/train2014/COCO_train2014_000000000007.png")
    assert grey.shape == (12, 10, 3) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[:, :, 2], rgb[:, :, 0])
    assert source.get("val", 1, URL) is None  # not on disk, fetching off


def test_corrupt_local_image_is_a_user_error(tmp_path):
    (tmp_path / "COCO_val2014_000000000042.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="COCO_val2014_000000000042.jpg"):
        ImageSource(tmp_path, images_dir=tmp_path).get("val", 0, URL)


def test_missing_images_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nowhere"):
        ImageSource(tmp_path, images_dir=tmp_path / "nowhere")


def test_grey_and_rgba_files_become_rgb(tmp_path):
    rgba = random_images(4, (5, 7, 4))
    iio.imwrite(tmp_path / "COCO_val2014_000000000001.png", rgba)
    out = ImageSource(tmp_path, images_dir=tmp_path).get("val", 0, "http://x/COCO_val2014_000000000001.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_shapes_images_of_wrong_shape_are_a_user_error(tmp_path):
    with h5py.File(tmp_path / "shapes_images.h5", "w") as f:
        f.create_dataset("val_images", data=np.zeros((2, 4, 4), dtype=np.uint8))
    with ImageSource(tmp_path) as source, pytest.raises(UserError, match="rebuild"):
        source.get("val", 0, "")


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on localhost serving ``tmp_path/www``; yields its base URL."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path / "www"
    server.shutdown()
    server.server_close()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_from_url_when_allowed(tmp_path, local_server):
    base_url, www = local_server
    rgb = random_images(3, (8, 6, 3))
    iio.imwrite(www / "COCO_val2014_000000000042.png", rgb)
    url = f"{base_url}/COCO_val2014_000000000042.png"
    assert ImageSource(tmp_path, fetch_urls=False).get("val", 0, url) is None
    np.testing.assert_array_equal(ImageSource(tmp_path, fetch_urls=True, timeout=5).get("val", 0, url), rgb)
    (www / "not_an_image.png").write_bytes(b"<html>")
    assert fetch_image(f"{base_url}/not_an_image.png", timeout=5) is None
    assert fetch_image(f"{base_url}/missing.png", timeout=5) is None


def test_fetch_failures_give_none(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    assert fetch_image((tmp_path / "a.png").as_uri()) is None  # file:// is refused
    assert fetch_image("shapes://val/3") is None
    closed_port = "http://127.0.0.1:9/COCO_val2014_000000000042.jpg"  # nothing listens: refused at once
    assert ImageSource(tmp_path, fetch_urls=True, timeout=1).get("val", 0, closed_port) is None


def test_image_from_url_reads_http_and_file_urls_and_paths(local_server, capsys):
    base_url, www = local_server
    rgb = random_images(4, (7, 5, 3))
    iio.imwrite(www / "a.png", rgb)
    for source in (f"{base_url}/a.png", (www / "a.png").as_uri(), str(www / "a.png"), www / "a.png"):
        np.testing.assert_array_equal(image_from_url(source), rgb)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name, why", [
    ("missing.png", "404"), ("not_an_image.png", "cannot identify image file"), ("nothing there", "No such file")])
def test_image_from_url_failure_prints_one_line_and_gives_none(local_server, capsys, name, why):
    base_url, www = local_server
    (www / "not_an_image.png").write_bytes(b"<html>")
    source = str(www / name) if name == "nothing there" else f"{base_url}/{name}"
    assert image_from_url(source) is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cannot read the image at {source}: ") and why in lines[0]


def test_image_from_url_when_nothing_listens(capsys):
    assert image_from_url("http://127.0.0.1:9/a.jpg", timeout=1) is None  # refused at once
    assert capsys.readouterr().out.startswith("cannot read the image at http://127.0.0.1:9/a.jpg: ")
