"""Your own data end to end: COCO, Karpathy and CSV caption files plus a few images -> a dataset folder that the
loader reads, training trains on and inference captions; bad input is one line and writes nothing."""
import csv
import json
import shutil

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import features_extraction
import inference
import training
from core.data.loader import load_coco_data
from core.data.vocab import decode_captions
from core.runtime.cli import run
from tests.test_features import random_vgg16_state_dict

CAPTIONS = {  # image -> (split, captions); words seen once become <UNK> with --min-word-count 2
    "a.png": ("train", ["A red circle.", "a RED circle, left of a star", "red circle"]),
    "b.png": ("train", ["Two blue squares!", "two blue boxes"]),
    "c.png": ("train", ["a green star", "green star above a circle"]),
    "d.png": ("train", ["a red star", "one red star " + "very " * 20 + "big"]),  # cut to 15 words
    "e.png": ("val", ["a blue circle", "blue circle"]),
    "f.png": ("val", ["!!!", "a green square"]),  # the first is empty once cleaned
}
FLAGS = ["--pca-dim", "2", "--min-word-count", "2", "--device", "cpu", "--no-progress", "--batch-size", "4"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save(random_vgg16_state_dict(seed=1), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in CAPTIONS:
        iio.imwrite(folder / name, rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    return folder


def write_csv(path, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["image", "caption", "split"])
        for image, (split, texts) in CAPTIONS.items():
            writer.writerows([image, text, split] for text in texts)
    return path


def write_coco(folder):
    """One COCO annotation file per split, as captions_train2014.json / captions_val2014.json are."""
    paths = []
    for split in ("train", "val"):
        entries = [(image, texts) for image, (s, texts) in CAPTIONS.items() if s == split]
        coco = {"images": [{"id": 10 + i, "file_name": image} for i, (image, _) in enumerate(entries)],
                "annotations": [{"id": 100 * i + k, "image_id": 10 + i, "caption": text}
                                for i, (_, texts) in enumerate(entries) for k, text in enumerate(texts)]}
        (folder / f"coco_{split}.json").write_text(json.dumps(coco))
        paths.append(f"{split}={folder / f'coco_{split}.json'}")
    return paths


def write_karpathy(path):
    from core.datasets.caption_sources import tokenize_caption

    entries = [{"filepath": "", "filename": image, "split": split,
                "sentences": [{"raw": text, "tokens": tokenize_caption(text)} for text in texts]}
               for image, (split, texts) in CAPTIONS.items()]
    path.write_text(json.dumps({"images": entries, "dataset": "flickr8k"}))
    return path


def build(tmp_path, weights, images, captions_args, name="out"):
    out = tmp_path / name
    argv = [arg for source in captions_args for arg in ("--captions", str(source))]
    assert features_extraction.main(argv + ["--images-dir", str(images), "--out", str(out),
                                            "--vgg16-weights", str(weights), *FLAGS]) is None
    return out


def test_the_three_formats_give_the_same_captions_file(tmp_path, weights, images):
    folders = [build(tmp_path, weights, images, [write_csv(tmp_path / "c.csv")], "csv"),
               build(tmp_path, weights, images, write_coco(tmp_path), "coco"),
               build(tmp_path, weights, images, [write_karpathy(tmp_path / "k.json")], "karpathy")]
    files = []
    for folder in folders:
        with h5py.File(folder / "coco2014_captions.h5", "r") as f:
            files.append({key: f[key][()] for key in f})
    for other in files[1:]:
        assert files[0].keys() == other.keys() and all(np.array_equal(files[0][k], other[k]) for k in other)
    data = load_coco_data(folders[0])
    assert data["train_features"].shape == (4, 2) and data["val_features"].shape == (2, 2)
    texts = decode_captions(data["train_captions"], data["idx_to_word"])
    assert texts[0] == "a red circle" and "<UNK>" in texts[1]  # "left", "of" are seen once in train
    assert len(texts[-1].split()) == 15
    assert "green" in data["word_to_idx"] and "above" not in data["word_to_idx"]
    manifest = json.loads((folders[0] / "manifest.json").read_text())
    assert manifest["truncated"] == 1 and manifest["empty_after_cleaning"] == 1
    assert manifest["sizes"] == {"train": {"images": 4, "captions": 9}, "val": {"images": 2, "captions": 3}}


def test_vocabulary_comes_from_the_training_split_only(tmp_path, weights, images):
    data = load_coco_data(build(tmp_path, weights, images, [write_csv(tmp_path / "c.tsv", "\t")]))
    assert "square" not in data["word_to_idx"]  # "a green square" is a val caption; train has "squares"
    assert "squares" in data["word_to_idx"] or "<UNK>" in data["word_to_idx"]


SOURCES = {"csv": lambda tmp: [write_csv(tmp / "c.csv")], "coco": write_coco,
           "karpathy": lambda tmp: [write_karpathy(tmp / "k.json")]}


@pytest.mark.parametrize("source", SOURCES)
def test_the_folder_trains_and_captions_through_the_scripts(tmp_path, weights, images, source):
    out = build(tmp_path, weights, images, SOURCES[source](tmp_path))
    run_dir = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(out), "--out", str(run_dir), "--dry-run",
                          "--hidden-dim", "8", "--wordvec-dim", "8", "--no-progress"]) == 0
    record = inference.main(["--model", "lstm", "--checkpoint", str(run_dir / "best.npz"), "--data-dir", str(out),
                             "--image", str(images / "a.png"), "--vgg16-weights", str(weights), "--no-progress"])
    assert record == 0 and (run_dir / "gallery_images.png").stat().st_size > 1000


def test_seeded_split_when_the_file_names_none(tmp_path, weights, images):
    path = tmp_path / "plain.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows([image, text] for image, (_, texts) in CAPTIONS.items() for text in texts)
    out = build(tmp_path, weights, images, [path])
    again = build(tmp_path, weights, images, [path], "again")
    sizes = json.loads((out / "manifest.json").read_text())["sizes"]
    assert sizes == json.loads((again / "manifest.json").read_text())["sizes"]
    assert sizes["train"]["images"] + sizes["val"]["images"] == len(CAPTIONS)


def run_bad(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        run(lambda: features_extraction.main(argv))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, '
                            '"caption": "x"}]}'), "2"),
    (lambda p: p.write_text('{"images": [1, 2'), "c.csv"),
    (lambda p: p.write_text("just some words\nno columns here\n"), "none of the three formats"),
    (lambda p: p.write_text("image,caption,split\na.png,a red circle,train\nb.png,two boxes,val\n"),
     "--pca-dim"),
    (lambda p: p.write_text("image,caption,split\na.png,a red circle,train\nzzz.png,two boxes,train\n"
                            "e.png,a circle,val\n"), "zzz.png"),
    (lambda p: p.write_text("image,caption,split\na.png,a red circle,train\n"), "val split"),
])
def test_bad_caption_files_are_one_line_and_write_nothing(tmp_path, weights, images, capsys, damage, fragment):
    path = tmp_path / "c.csv"
    damage(path)
    err = run_bad(["--captions", str(path), "--images-dir", str(images), "--out", str(tmp_path / "out"),
                   "--vgg16-weights", str(weights), *FLAGS], capsys)
    assert fragment in err and not (tmp_path / "out").exists()


def test_min_word_count_must_be_positive_and_missing_images_can_be_skipped(tmp_path, weights, images, capsys):
    path = write_csv(tmp_path / "c.csv")
    assert "--min-word-count" in run_bad(["--captions", str(path), "--min-word-count", "0"], capsys)
    with open(path, "a", newline="") as f:
        csv.writer(f).writerow(["gone.png", "a red circle", "train"])
    argv = ["--captions", str(path), "--images-dir", str(images), "--vgg16-weights", str(weights), *FLAGS]
    assert "gone.png" in run_bad(argv + ["--out", str(tmp_path / "refused")], capsys)
    assert not (tmp_path / "refused").exists()
    assert features_extraction.main(argv + ["--out", str(tmp_path / "skipped"), "--skip-missing"]) is None
    assert json.loads((tmp_path / "skipped" / "manifest.json").read_text())["skipped_images"] == ["gone.png"]


def test_a_karpathy_test_split_is_held_out_and_evaluated(tmp_path, weights, images):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    iio.imwrite(folder / "g.png", np.full((40, 48, 3), 200, dtype=np.uint8))
    path = write_karpathy(tmp_path / "k.json")
    entries = json.loads(path.read_text())
    entries["images"].append({"filepath": "", "filename": "g.png", "split": "test",
                              "sentences": [{"raw": "a red circle", "tokens": ["a", "red", "circle"]}]})
    path.write_text(json.dumps(entries))
    out = build(tmp_path, weights, folder, [path])
    assert json.loads((out / "manifest.json").read_text())["sizes"]["test"] == {"images": 1, "captions": 1}
    assert load_coco_data(out)["train_features"].shape[0] == 4  # the test image is not trained on
    test = load_coco_data(out, splits=("test",))
    assert test["test_features"].shape == (1, 2) and decode_captions(test["test_captions"],
                                                                     test["idx_to_word"]) == ["a red circle"]
    run_dir = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(out), "--out", str(run_dir), "--dry-run",
                          "--hidden-dim", "8", "--wordvec-dim", "8", "--no-progress"]) == 0
    output = tmp_path / "test.json"
    assert inference.main(["--model", "lstm", "--checkpoint", str(run_dir / "best.npz"), "--evaluate", "--split",
                           "test", "--output", str(output), "--no-progress"]) == 0
    assert json.loads(output.read_text())["split"] == "test"


def coco_as_it_ships(root, images):
    """COCO's own layout: images in train2014/ and val2014/ under one root, annotation files naming them by file
    name alone (COCO_<split>2014_<id>.jpg), and Karpathy's file naming them by filepath and filename."""
    names = {}
    for i, (image, (split, _)) in enumerate(CAPTIONS.items()):
        names[image] = f"COCO_{split}2014_{i:012d}.jpg"
        (root / f"{split}2014").mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / f"{split}2014" / names[image], iio.imread(images / image))
    captions = []
    for split in ("train", "val"):
        entries = [(names[image], texts) for image, (s, texts) in CAPTIONS.items() if s == split]
        coco = {"images": [{"id": 10 + i, "file_name": name} for i, (name, _) in enumerate(entries)],
                "annotations": [{"id": 100 * i + k, "image_id": 10 + i, "caption": text}
                                for i, (_, texts) in enumerate(entries) for k, text in enumerate(texts)]}
        (root / f"captions_{split}2014.json").write_text(json.dumps(coco))
        captions.append(f"{split}={root / f'captions_{split}2014.json'}")
    karpathy = [{"filepath": f"{split}2014", "filename": names[image], "split": split,
                 "sentences": [{"raw": text, "tokens": text.lower().split()} for text in texts]}
                for image, (split, texts) in CAPTIONS.items()]
    (root / "dataset_coco.json").write_text(json.dumps({"images": karpathy, "dataset": "coco"}))
    return captions, root / "dataset_coco.json"


def test_coco_as_it_ships_is_found_in_its_split_folders(tmp_path, weights, images, capsys):
    captions, karpathy = coco_as_it_ships(tmp_path / "coco", images)
    for name, sources in (("annotations", captions), ("karpathy", [karpathy])):
        out = build(tmp_path, weights, tmp_path / "coco", sources, name)
        sizes = json.loads((out / "manifest.json").read_text())["sizes"]
        assert sizes["train"]["images"] == 4 and sizes["val"]["images"] == 2, name
        urls = (out / "val2014_urls.txt").read_text().split()
        assert len(urls) == 2 and all("val2014_" in url for url in urls)
    argv = [arg for source in captions for arg in ("--captions", source)]
    argv += ["--images-dir", str(tmp_path / "coco"), "--out", str(tmp_path / "refused"), "--vgg16-weights",
             str(weights), *FLAGS]
    twin = next((tmp_path / "coco" / "train2014").iterdir())
    shutil.copy(twin, tmp_path / "coco" / "val2014" / twin.name)  # one name in two folders: which is meant?
    assert twin.name in run_bad(argv, capsys) and not (tmp_path / "refused").exists()
    (tmp_path / "coco" / "val2014" / twin.name).unlink()
    gone = next((tmp_path / "coco" / "val2014").iterdir())
    gone.unlink()
    err = run_bad(argv, capsys)
    assert gone.name in err and "its folders" in err and not (tmp_path / "refused").exists()
