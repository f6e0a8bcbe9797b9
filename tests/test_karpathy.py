"""Karpathy's splits over the CS231n layout: every row in its split with its captions, features and URL; the lazy
row view; subsampling; the scripts end to end with --protocol karpathy; every bad input one line and exit code 2."""
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import inference
import training
from core.data.grid import write_grid_h5
from core.data.loader import load_coco_data
from core.data.row_view import RowView
from core.runtime.errors import UserError
from tests.karpathy_helpers import (
    EXPECTED,
    LEFT_OUT,
    NUM_TRAIN,
    NUM_VAL,
    PLAN,
    coco_name,
    karpathy_content,
    write_coco_style,
    write_karpathy_json,
)
from tests.test_bad_inputs import assert_one_line_exit

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--hidden-dim", "8", "--wordvec-dim", "8", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def coco_style(tmp_path_factory):
    return write_coco_style(tmp_path_factory.mktemp("karpathy") / "data")


def rows_of(data, split, image):
    """The caption rows of image ``image`` of ``split``."""
    return data[f"{split}_captions"][data[f"{split}_image_idxs"] == image]


@pytest.mark.parametrize("pca", [True, False])
def test_every_row_lands_in_its_split_with_its_captions_features_and_url(coco_style, pca):
    source = load_coco_data(coco_style, pca_features=pca)
    data = load_coco_data(coco_style, pca_features=pca, splits=("train", "val", "test"), protocol="karpathy")
    assert data["protocol"] == "karpathy" and source["protocol"] == "cs231n"
    assert data["protocol_notes"]["images_left_out"] == LEFT_OUT == 3
    assert data["protocol_notes"]["images"] == {"train": 24, "val": 2, "test": 3}
    for target, rows in EXPECTED.items():
        assert list(data[f"{target}_urls"]) == [source[f"{split}_urls"][row] for split, row in rows]
        features = np.asarray(data[f"{target}_features"])
        assert features.shape == (len(rows), source["train_features"].shape[1])
        for image, (split, row) in enumerate(rows):
            assert np.array_equal(features[image], source[f"{split}_features"][row])
            theirs = rows_of(source, split, row)
            assert len(theirs) == 2 and np.array_equal(rows_of(data, target, image), theirs)
        assert len(data[f"{target}_captions"]) == 2 * len(rows)  # no caption of another image came along
        assert data[f"{target}_image_idxs"].dtype == np.int32


def test_train_includes_restval_and_the_left_out_rows_are_nowhere(coco_style):
    data = load_coco_data(coco_style, splits=("train", "val", "test"), protocol="karpathy")
    names = {split: {url.rsplit("/", 1)[1] for url in data[f"{split}_urls"]} for split in ("train", "val", "test")}
    restval = {coco_name(split, row) for (split, row), which in PLAN.items() if which == "restval"}
    assert restval and restval <= names["train"]
    left_out = {coco_name("train", 22), coco_name("train", 23), coco_name("val", 7)}
    assert not left_out & (names["train"] | names["val"] | names["test"])
    assert not names["train"] & names["val"] and not names["val"] & names["test"]


def test_only_the_files_a_split_takes_are_read(coco_style, tmp_path):
    data_dir = shutil.copytree(coco_style, tmp_path / "data")
    (data_dir / "train2014_vgg16_fc7_pca.h5").unlink()  # Karpathy's test images are all val2014 rows
    data = load_coco_data(data_dir, splits=("test",), protocol="karpathy")
    assert {key for key in data if key.startswith(("train", "val"))} == set()
    assert len(data["test_urls"]) == 3


def test_subsampling_keeps_image_rows_aligned(coco_style):
    full = load_coco_data(coco_style, protocol="karpathy")
    pairs = {(tuple(c), i) for c, i in zip(full["train_captions"].tolist(), full["train_image_idxs"].tolist())}
    first, again, other = (load_coco_data(coco_style, max_train=10, seed=seed, protocol="karpathy")
                           for seed in (3, 3, 4))
    assert first["train_captions"].shape == (10, 17) and len(first["train_urls"]) == 24
    kept = zip(first["train_captions"].tolist(), first["train_image_idxs"].tolist())
    assert {(tuple(c), i) for c, i in kept} <= pairs
    assert np.array_equal(first["train_captions"], again["train_captions"])
    assert not np.array_equal(first["train_image_idxs"], other["train_image_idxs"])
    assert np.array_equal(first["val_captions"], full["val_captions"])


def test_grid_rows_follow_their_images(coco_style, tmp_path):
    data_dir = shutil.copytree(coco_style, tmp_path / "data")
    maps = {}
    for split, count in (("train", 24), ("val", 8)):
        maps[split] = np.random.default_rng(len(split)).standard_normal((count, 4, 3)).astype(np.float16)
        write_grid_h5(data_dir / f"{split}2014_grid.h5", maps[split].shape,
                      lambda dataset, block=maps[split]: dataset.write_direct(block))
    data = load_coco_data(data_dir, splits=("train", "test"), grid=True, protocol="karpathy")
    assert isinstance(data["train_grid"], RowView) and data["train_grid"].shape == (24, 4, 3)
    picked = [23, 0, 22, 23]  # the restval rows (val2014) and a train2014 row, out of order, repeated
    expected = [maps[split][row] for split, row in (EXPECTED["train"][i] for i in picked)]
    assert np.array_equal(data["train_grid"][np.array(picked)], np.array(expected, dtype=np.float32))
    assert np.array_equal(data["test_grid"][1], maps["val"][5].astype(np.float32))


def test_row_view_indexes_like_an_array():
    a, b = np.arange(12.0).reshape(6, 2), 100 + np.arange(8.0).reshape(4, 2)
    view = RowView([(a, [5, 1]), (b, [0, 3, 2])])
    whole = np.concatenate([a[[5, 1]], b[[0, 3, 2]]])
    assert view.shape == (5, 2) and len(view) == 5 and view.ndim == 2
    assert np.array_equal(np.asarray(view), whole)
    for index in (3, -1, slice(1, 4), np.array([[4, 0], [0, 2]]), np.array([True, False, True, False, True])):
        assert np.array_equal(view[index], whole[index])
    for bad in (5, np.array([0, -6]), (0, 1)):
        with pytest.raises(IndexError):
            view[bad]
    assert np.array_equal(pickle.loads(pickle.dumps(view))[:], whole)
    with pytest.raises(ValueError):
        RowView([(a, [0]), (np.zeros((2, 3)), [0])])


def test_training_and_evaluating_on_karpathy_test(coco_style, tmp_path, monkeypatch):
    monkeypatch.setattr("core.evaluation.metrics.java_available", lambda: False)  # no METEOR JVM: seconds saved
    out = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(coco_style), "--out", str(out), "--dry-run",
                          "--protocol", "karpathy", *SMALL]) == 0
    record = json.loads((out / "config.json").read_text())
    assert record["data"]["protocol"] == "karpathy" and record["settings"]["protocol"] == "karpathy"
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 1
    checkpoint = ["--model", "lstm", "--checkpoint", str(out / "best.npz"), "--evaluate", "--split", "test"]
    for flags in (["--protocol", "karpathy"], []):  # the checkpoint's protocol is the default
        output = tmp_path / f"test{len(flags)}.json"
        assert inference.main([*checkpoint, *flags, "--output", str(output)]) == 0
        result = json.loads(output.read_text())
        assert result["protocol"] == "karpathy" and len(result["predictions"]) == 3 == result["num_images"]
    # The layout itself has no test split: --protocol cs231n overrides the checkpoint's protocol, and says so.
    assert subprocess.run([sys.executable, "inference.py", *checkpoint, "--protocol", "cs231n"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120).returncode == 2


# --- bad input: one line, exit code 2, the dataset folder byte for byte as it was ---

def rewrite(content):
    return lambda base: write_karpathy_json(base, content)


def edit_images(change):
    def edit(base):
        content = karpathy_content()
        change(content["images"])
        write_karpathy_json(base, content)
    return edit


def set_field(index, key, value):
    return edit_images(lambda images: images[index].__setitem__(key, value))


def flickr_names(images):
    for image in images:
        image["filename"] = f"{image['cocoid']}_3f2a_z.jpg"


def few_names(images):
    del images[10:]  # 10 of the 32 CS231n rows


def duplicate_url(base):
    path = base / "val2014_urls.txt"
    lines = path.read_text().splitlines()
    lines[3] = lines[2]
    path.write_text("\n".join(lines) + "\n")


BAD_JSON = [
    ("missing", lambda base: (base / "dataset_coco.json").unlink(), "get_datasets.sh --karpathy"),
    ("not JSON", lambda base: (base / "dataset_coco.json").write_bytes(b"\x00garbage{"), "cannot read"),
    ("truncated", lambda base: (base / "dataset_coco.json").write_text('{"images": [{"filepath"'), "cannot read"),
    ("no images list", rewrite({"images": {}}), "no list of 'images'"),
    ("a Flickr8k file", edit_images(lambda images: [image.pop("filepath") for image in images]), "lacks filepath"),
    ("unknown split", set_field(3, "split", "holdout"), "unknown split 'holdout'"),
    ("image not an object", edit_images(lambda images: images.__setitem__(0, "COCO_x.jpg")), "not an object"),
    ("filepath of another dataset", set_field(0, "filepath", "flickr30k"), "filepath 'flickr30k'"),
    ("non-integer cocoid", set_field(0, "cocoid", "7"), "cocoid '7'"),
    ("a file name twice", edit_images(lambda images: images.append(dict(images[0]))), "twice"),
    ("no file name of the URL lists", edit_images(flickr_names), "only 0 of the 32 images"),
    ("too few file names of the URL lists", edit_images(few_names), "only 10 of the 32 images"),
    ("no val split", edit_images(lambda images: [i.update(split="test") for i in images if i["split"] == "val"]),
     "Karpathy's val split"),
    ("a URL line twice", duplicate_url, "name the same image"),
]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("name, damage, fragment", BAD_JSON, ids=[case[0] for case in BAD_JSON])
def test_a_bad_karpathy_file_is_one_line(coco_style, tmp_path, capsys, name, damage, fragment):
    data_dir = shutil.copytree(coco_style, tmp_path / "data")
    damage(data_dir)
    before = digest(data_dir)
    argv = ["--model", "lstm", "--data-dir", str(data_dir), "--out", str(tmp_path / "run"), "--dry-run",
            "--protocol", "karpathy", *SMALL]
    assert_one_line_exit(training.main, argv, capsys, fragment)
    assert digest(data_dir) == before


def test_karpathy_splits_of_the_shapes_world_are_refused(coco_style, tmp_path, capsys, monkeypatch):
    def never_build(**_):
        raise AssertionError("the shapes world was built before --protocol karpathy was refused")

    monkeypatch.setattr("core.datasets.shapes_build.ensure_shapes_dataset", never_build)
    argv = ["--model", "lstm", "--dataset", "shapes", "--out", str(tmp_path / "run"), "--protocol", "karpathy", *SMALL]
    assert_one_line_exit(training.main, argv, capsys, "own held-out test split")
    shapes_like = shutil.copytree(coco_style, tmp_path / "shapes")
    with h5py.File(shapes_like / "shapes_images.h5", "w") as f:
        f["train_images"] = np.zeros((1, 2, 2, 3), np.uint8)
    argv = ["--model", "lstm", "--data-dir", str(shapes_like), "--out", str(tmp_path / "run"), "--protocol",
            "karpathy", *SMALL]
    assert_one_line_exit(training.main, argv, capsys, "is the shapes world")


def flickr_style(base):
    """The COCO-style dataset with Flickr URLs (as the CS231n archive's lists are said to hold) and, beside them,
    the archive's lists of COCO file names, one a row."""
    shutil.copytree(write_coco_style(base / "source"), base / "data")
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        (base / "data" / f"{split}2014_urls.txt").write_text(
            "".join(f"http://farm1.staticflickr.com/{split}/{row}_{split}_z.jpg\n" for row in range(count)))
    return base / "data"


def test_image_names_come_from_the_archives_name_lists_when_the_urls_are_flickrs(tmp_path, capsys):
    data_dir = flickr_style(tmp_path)
    with pytest.raises(UserError, match="only 0 of the"):  # Flickr URLs name no COCO file
        load_coco_data(data_dir, splits=("test",), protocol="karpathy")
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        (data_dir / f"{split}2014_images.txt").write_text("".join(f"{coco_name(split, row)}\n" for row in range(count)))
    data = load_coco_data(data_dir, splits=("train", "val", "test"), protocol="karpathy")
    assert list(data["test_urls"]) == [f"http://farm1.staticflickr.com/val/{row}_val_z.jpg" for row in (4, 5, 6)]
    (data_dir / "val2014_images.txt").write_text(coco_name("val", 0) + "\n")
    with pytest.raises(UserError, match="val2014_images.txt has 1 lines"):
        load_coco_data(data_dir, splits=("test",), protocol="karpathy")
