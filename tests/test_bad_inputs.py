"""Bad input, table-driven: every case exits with code 2 and one line on stderr naming the flag or file, and
leaves every earlier output (a trained run, its dataset) byte for byte as it was.

The cases run in-process through ``core.runtime.cli.run``, the exit path the scripts use; an exception that is not a
clean error escapes to pytest and fails the case. ``test_scripts.py`` runs a few of them as real processes.
"""
import hashlib
import json
import shutil

import h5py
import numpy as np
import pytest

import features_extraction
import inference
import results
import training
from core.datasets import coco, shapes_build
from core.runtime import cli
from core.runtime.fileio import LOCK_FILE, FolderLock
from tests.conftest import write_tiny_cs231n

SMALL = {"lstm": ["--hidden-dim", "8", "--wordvec-dim", "8"],
         "transformer": ["--num-layers", "1", "--num-heads", "2", "--wordvec-dim", "16"]}
MAINS = {"train": training.main, "infer": inference.main, "extract": features_extraction.main, "results": results.main,
         "shapes": shapes_build.main, "coco": coco.main}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset, an LSTM trained on it and a Transformer's dry run: the outputs no bad input may touch."""
    root = tmp_path_factory.mktemp("world")
    data = write_tiny_cs231n(root / "data")
    for model, epochs in (("lstm", ["--epochs", "1"]), ("transformer", ["--dry-run"])):
        assert training.main(["--model", model, "--data-dir", str(data), "--out", str(root / model), "--no-progress",
                              "--batch-size", "16", *epochs, *SMALL[model]]) == 0
    (root / "a_file").write_text("not a folder")
    return root


def digest(root):
    """Every file under ``root`` (but run locks) -> its SHA-256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


# --- datasets broken in one way each (a fresh copy of the tiny dataset, then one change) ---

def rewrite_h5(path, **arrays):
    with h5py.File(path, "a") as f:
        for key, value in arrays.items():
            del f[key]
            f[key] = value


def captions_of(base, split):
    with h5py.File(base / "coco2014_captions.h5", "r") as f:
        return f[f"{split}_captions"][()], f[f"{split}_image_idxs"][()]


def drop_file(name):
    return lambda base: (base / name).unlink()


def garbage(name):
    return lambda base: (base / name).write_bytes(b"garbage")


def wide_ids(base):
    captions, _ = captions_of(base, "train")
    captions = captions.astype(np.int64)
    captions[0, 1] = 2 ** 32 + 5  # wraps to 5, a valid id, when cast to int32 first
    rewrite_h5(base / "coco2014_captions.h5", train_captions=captions)


def empty_split(split):
    return lambda base: rewrite_h5(base / "coco2014_captions.h5", **{f"{split}_captions": np.zeros((0, 17), np.int32),
                                                                     f"{split}_image_idxs": np.zeros(0, np.int32)})


def one_id_rows(base):
    captions, _ = captions_of(base, "train")
    rewrite_h5(base / "coco2014_captions.h5", train_captions=captions[:, :1])


def null_rows(base):
    captions, _ = captions_of(base, "val")
    rewrite_h5(base / "coco2014_captions.h5", val_captions=np.zeros_like(captions))


def features_edit(split, change):
    def edit(base):
        path = base / f"{split}2014_vgg16_fc7_pca.h5"
        with h5py.File(path, "r") as f:
            features = f["features"][()]
        rewrite_h5(path, features=change(features))
    return edit


def nan_first(features):
    features[0, 0] = np.nan
    return features


def idxs_edit(change):
    def edit(base):
        _, idxs = captions_of(base, "train")
        rewrite_h5(base / "coco2014_captions.h5", train_image_idxs=change(idxs.copy()))
    return edit


def vocab_edit(base):
    path = base / "coco2014_vocab.json"
    vocab = json.loads(path.read_text())
    vocab["idx_to_word"][0], vocab["idx_to_word"][1] = vocab["idx_to_word"][1], vocab["idx_to_word"][0]
    vocab["word_to_idx"] = {w: i for i, w in enumerate(vocab["idx_to_word"])}
    path.write_text(json.dumps(vocab))


def short_urls(base):
    path = base / "val2014_urls.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


DATASET_FAULTS = [
    ("missing captions file", drop_file("coco2014_captions.h5"), "coco2014_captions.h5"),
    ("missing vocabulary", drop_file("coco2014_vocab.json"), "coco2014_vocab.json"),
    ("malformed vocabulary", garbage("coco2014_vocab.json"), "coco2014_vocab.json"),
    ("vocabulary with moved special tokens", vocab_edit, "coco2014_vocab.json"),
    ("captions file not HDF5", garbage("coco2014_captions.h5"), "coco2014_captions.h5"),
    ("features file not HDF5", garbage("train2014_vgg16_fc7_pca.h5"), "train2014_vgg16_fc7_pca.h5"),
    ("train and val of different widths", features_edit("val", lambda f: f[:, :16]), "different widths"),
    ("ids of 2**32 and more", wide_ids, "outside the 16-word vocabulary"),
    ("no training captions", empty_split("train"), "train captions: the split has none"),
    ("no validation captions", empty_split("val"), "val captions: the split has none"),
    ("captions of one id", one_id_rows, "id(s) per row"),
    ("all-<NULL> captions", null_rows, "does not start with <START>"),
    ("NaN features", features_edit("train", nan_first), "NaN"),
    ("URL list shorter than the features", short_urls, "val2014_urls.txt"),
    ("image index beyond the features", idxs_edit(lambda i: i + 1000), "train2014_vgg16_fc7_pca.h5"),
    ("negative image index", idxs_edit(lambda i: i - 1), "image_idxs"),
]


@pytest.mark.parametrize("name, damage, fragment", DATASET_FAULTS, ids=[case[0] for case in DATASET_FAULTS])
def test_a_broken_dataset_is_one_line(world, tmp_path, capsys, name, damage, fragment):
    bad = write_tiny_cs231n(tmp_path / "bad")
    damage(bad)
    before = digest(world)
    argv = ["--model", "lstm", "--data-dir", str(bad), "--out", str(tmp_path / "run"), "--no-progress", *SMALL["lstm"]]
    assert_one_line_exit(MAINS["train"], argv, capsys, fragment)
    assert digest(world) == before


# --- flags, paths and files given to the scripts ---

def checkpoint_edit(change):
    """A copy of the trained LSTM's best checkpoint with ``change(arrays)`` applied to its arrays."""
    def make(world, tmp_path):
        with np.load(world / "lstm" / "best.npz", allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        change(arrays)
        path = tmp_path / "edited.npz"
        np.savez(path, **arrays)
        return str(path)
    return make


def config_edit(**values):
    def change(arrays):
        meta = json.loads(str(arrays["meta"]))
        for key, value in values.items():
            if value is None:
                meta["model_config"].pop(key)
            else:
                meta["model_config"][key] = value
        arrays["meta"] = np.array(json.dumps(meta))
    return change


def truncated(world, tmp_path):
    data = (world / "lstm" / "best.npz").read_bytes()
    (tmp_path / "half.npz").write_bytes(data[:len(data) // 2])
    return str(tmp_path / "half.npz")


def other_width(world, tmp_path):
    return str(write_tiny_cs231n(tmp_path / "other", dim=48))


def other_vocab(world, tmp_path):
    """The tiny dataset with two words of its vocabulary swapped."""
    other = shutil.copytree(world / "data", tmp_path / "other_vocab")
    vocab = json.loads((other / "coco2014_vocab.json").read_text())
    vocab["idx_to_word"][4:6] = vocab["idx_to_word"][5:3:-1]
    vocab["word_to_idx"] = {w: i for i, w in enumerate(vocab["idx_to_word"])}
    (other / "coco2014_vocab.json").write_text(json.dumps(vocab))
    return str(other)


def missing_param(arrays):
    del arrays["param/W_embed"]


def nan_param(arrays):
    arrays["param/Wx"] = arrays["param/Wx"].copy()
    arrays["param/Wx"][0, 0] = np.nan


def run_with_edited_last(change):
    """A copy of the trained LSTM's run folder whose ``last.npz`` had ``change(arrays)`` applied."""
    def make(world, tmp_path):
        run = tmp_path / "run"
        shutil.copytree(world / "lstm", run)
        with np.load(run / "last.npz", allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        change(arrays)
        with open(run / "last.npz", "wb") as f:
            np.savez(f, **arrays)
        return str(run)
    return make


def no_images(world, tmp_path):
    (tmp_path / "images" / "train2014").mkdir(parents=True)
    (tmp_path / "images" / "val2014").mkdir()
    return str(tmp_path / "images")


# (script, argv with {data}, {lstm}, {transformer}, {file}, {tmp} placeholders or callables, fragment)
FLAG_CASES = [
    ("train", ["--model", "gru"], "--model"),
    ("train", ["--model", "lstm", "--num_samples", "0"], "--num_samples"),
    ("train", ["--model", "transformer", "--backend", "torch"], "--backend torch: --model transformer is a torch"),
    ("train", ["--model", "lstm", "--backend", "jax"], "--backend"),
    ("train", ["--model", "lstm", "--backend", "cupy", "--device", "cpu"], "CuPy computes on CUDA only"),
    ("train", ["--model", "lstm", "--num_samples", "ten"], "--num_samples"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--num_samples", "1000"], "1000"),
    ("train", ["--model", "lstm", "--data-dir", "{tmp}/nope"], "--data-dir"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", "/proc/forbidden"], "--out"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", "{file}"], "--out"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", "{tmp}/fresh", "--resume"], "--resume"),
    ("train", ["--model", "lstm", "--seed", "-1"], "--seed"),
    ("train", ["--model", "lstm", "--seed", str(2 ** 32)], "--seed"),
    ("train", ["--model", "lstm", "--seed", "abc"], "--seed"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", "{tmp}/big", "--hidden-dim", "200000"], "GiB"),
    ("train", ["--model", "transformer", "--data-dir", "{data}", "--wordvec-dim", "32", "--num-heads", "3"],
     "divisible"),
    ("train", ["--model", "transformer", "--hidden-dim", "8"], "--hidden-dim"),
    ("train", ["--model", "lstm", "--num-heads", "2"], "--num-heads"),
    ("train", ["--model", "lstm", "--lr", "1e300"], "--lr"),
    ("train", ["--model", "lstm", "--lr", "0"], "--lr"),
    ("train", ["--model", "lstm", "--lr", "nan"], "--lr"),
    ("train", ["--model", "lstm", "--epochs", "0"], "--epochs"),
    ("train", ["--model", "lstm", "--batch-size", "0"], "--batch-size"),
    ("train", ["--model", "lstm", "--save-every", "-1"], "--save-every"),
    ("train", ["--model", "transformer", "--device", "tpu"], "--device"),
    ("train", ["--model", "lstm", "--bogus"], "--bogus"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", "{lstm}", "--resume", "--hidden-dim", "9",
               "--wordvec-dim", "8"], "model_config"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", run_with_edited_last(missing_param), "--resume",
               "--batch-size", "16", *SMALL["lstm"]], "lacks parameter(s) W_embed"),
    ("train", ["--model", "lstm", "--data-dir", "{data}", "--out", run_with_edited_last(nan_param), "--resume",
               "--batch-size", "16", *SMALL["lstm"]], "NaN"),
    ("train", ["--model", "lstm", "--objective", "scst", "--data-dir", "{data}", "--out", "{tmp}/s", "--init-from",
               "{tmp}/none.npz"], "--init-from"),
    ("train", ["--model", "rnn", "--objective", "scst", "--data-dir", "{data}", "--out", "{tmp}/s", "--init-from",
               "{lstm}/best.npz"], "--model lstm"),
    ("train", ["--model", "lstm", "--objective", "scst", "--data-dir", other_vocab, "--out", "{tmp}/s",
               "--init-from", "{lstm}/best.npz"], "vocabulary"),
    ("train", ["--model", "lstm", "--objective", "scst", "--data-dir", other_width, "--out", "{tmp}/s",
               "--init-from", "{lstm}/best.npz"], "features of shape (32,)"),
    ("train", ["--model", "lstm", "--objective", "scst", "--data-dir", "{data}", "--out", "{lstm}", "--init-from",
               "{lstm}/best.npz"], "overwrite"),
    ("train", ["--model", "lstm", "--objective", "scst", "--scst-samples", "1"], "--scst-samples"),
    ("train", ["--model", "lstm", "--objective", "scst", "--hidden-dim", "9"], "--hidden-dim"),
    ("train", ["--model", "lstm", "--objective", "scst", "--shuffle-features"], "--shuffle-features"),
    ("train", ["--model", "lstm", "--scst-baseline", "median"], "--scst-baseline"),
    ("train", ["--model", "att_lstm", "--data-dir", "{data}", "--out", "{tmp}/a"], "grid"),
    ("train", ["--model", "transformer", "--data-dir", "{data}", "--out", "{tmp}/t", "--memory", "cells"], "memory"),
    ("train", ["--model", "lstm", "--att-dim", "8"], "--att-dim"),
    ("train", ["--model", "att_lstm", "--att-penalty", "-1"], "--att-penalty"),
    ("infer", ["--model", "lstm", "--checkpoint", "{tmp}/none.npz"], "training.py --model lstm"),
    ("infer", ["--model", "rnn", "--checkpoint", "{lstm}/best.npz"], "--model lstm"),
    ("infer", ["--model", "lstm", "--checkpoint", "{file}"], "should end in"),
    ("infer", ["--model", "lstm", "--checkpoint", truncated], "corrupt"),
    ("infer", ["--model", "lstm", "--checkpoint", checkpoint_edit(missing_param)], "lacks parameter(s) W_embed"),
    ("infer", ["--model", "lstm", "--checkpoint", checkpoint_edit(nan_param)], "NaN"),
    ("infer", ["--model", "lstm", "--checkpoint", checkpoint_edit(config_edit(hidden_dim=-4))], "hidden_dim"),
    ("infer", ["--model", "lstm", "--checkpoint", checkpoint_edit(config_edit(input_dim=None))], "does not match"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--data-dir", other_width], "--data-dir"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--image", "{tmp}/x.png"], "encoder.json"),
    ("infer", ["--model", "lstm", "--image", "x.png", "--evaluate"], "--image"),
    ("infer", ["--model", "transformer", "--checkpoint", "{transformer}/best.pt", "--max-length", "100"],
     "--max-length"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--evaluate", "--output", "{tmp}"], "--output"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--evaluate", "--output",
               "/proc/forbidden/x.json"], "--output"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--out", "{file}"], "--out"),
    ("infer", ["--model", "lstm", "--beam-size", "0"], "--beam-size"),
    ("infer", ["--model", "lstm", "--temperature", "0"], "--temperature"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--temperature", "1", "--beam-size", "2"],
     "temperature"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--length-penalty", "-1"], "length penalty"),
    ("infer", ["--model", "lstm", "--seed", "-5"], "--seed"),
    ("infer", ["--model", "lstm", "--split", "train2"], "--split"),
    ("infer", ["--model", "lstm", "--coco-results", "{tmp}/r.json"], "--coco-results"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--evaluate", "--coco-results", "{tmp}"],
     "--coco-results"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--evaluate", "--split", "test"],
     "no test split"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--evaluate", "--split", "novel", "--output",
               "{tmp}/novel.json"], "no novel split"),
    ("infer", ["--model", "lstm", "--checkpoint", "{lstm}/best.npz", "--device", "tpu"], "--device"),
    ("extract", ["--encoder", "vgg16"], "--out"),
    ("extract", ["--encoder", "vgg16", "--out", "{tmp}/f", "--images-dir", "{tmp}/nope"], "--images-dir"),
    ("extract", ["--encoder", "vgg16", "--out", "{tmp}/f", "--images-dir", "{tmp}", "--train-list", "x"],
     "--images-dir"),
    ("extract", ["--encoder", "vgg16", "--out", "{file}", "--images-dir", "{tmp}"], "--out"),
    ("extract", ["--encoder", "vgg16", "--out", "{tmp}/f", "--images-dir", no_images], "no .jpg"),
    ("extract", ["--encoder", "shapes"], "--data-dir"),
    ("extract", ["--encoder", "shapes", "--data-dir", "{data}"], "shapes_images.h5"),
    ("extract", ["--encoder", "vgg16", "--pca-dim", "0"], "--pca-dim"),
    ("extract", ["--encoder", "vgg16", "--batch-size", "-3"], "--batch-size"),
    ("extract", ["--encoder", "vgg16", "--limit", "0"], "--limit"),
    ("extract", ["--encoder", "vgg16", "--device", "tpu"], "--device"),
    ("results", ["--models", "gru"], "--models"),
    ("results", ["--beam-size", "0"], "--beam-size"),
    ("results", ["--seed", "-1"], "--seed"),
    ("shapes", ["--num-train", "0"], "--num-train"),
    ("shapes", ["--out", "{tmp}/s", "--image-size", "50"], "image size"),
    ("shapes", ["--out", "{tmp}/s", "--num-novel", "-1"], "--num-novel"),
    ("shapes", ["--out", "{tmp}/s", "--novel-colour-pairs", "7"], "--novel-colour-pairs"),
    ("shapes", ["--out", "{tmp}/s", "--novel-size-pairs", "5"], "--novel-size-pairs"),
    ("shapes", ["--out", "{tmp}/s", "--novel-colour-pairs", "0", "--novel-size-pairs", "0"], "needs held-out pairs"),
    ("shapes", ["--out", "{tmp}/s", "--num-train", "100", "--pca-dim", "600"], "pca_dim"),
    ("shapes", ["--out", "{lstm}", "--num-train", "64", "--pca-dim", "8"], "not a shapes dataset"),
    ("coco", ["--dir", "{tmp}/c", "--url", "notaurl"], "--url"),
    ("coco", ["--dir", "{tmp}/c", "--sha256", "abc"], "--sha256"),
]


def expand(arg, world, tmp_path):
    if callable(arg):
        return arg(world, tmp_path)
    return arg.format(data=world / "data", lstm=world / "lstm", transformer=world / "transformer",
                      file=world / "a_file", tmp=tmp_path)


@pytest.mark.parametrize("script, argv, fragment", FLAG_CASES,
                         ids=[f"{case[0]} {' '.join(a if isinstance(a, str) else a.__name__ for a in case[1])}"
                              for case in FLAG_CASES])
def test_a_bad_flag_or_file_is_one_line(world, tmp_path, capsys, script, argv, fragment):
    before = digest(world)
    assert_one_line_exit(MAINS[script], [expand(arg, world, tmp_path) for arg in argv], capsys, fragment)
    assert digest(world) == before


def test_a_second_run_on_a_held_folder_is_refused(world, tmp_path, capsys):
    before = digest(world)
    with FolderLock(world / "lstm", "--out"):
        argv = ["--model", "lstm", "--data-dir", str(world / "data"), "--out", str(world / "lstm"), "--resume",
                *SMALL["lstm"]]
        assert_one_line_exit(MAINS["train"], argv, capsys, "in use by another run (PID")
    assert digest(world) == before


def test_a_dry_run_never_replaces_a_trained_run(world, capsys):
    before = digest(world)
    argv = ["--model", "lstm", "--data-dir", str(world / "data"), "--out", str(world / "lstm"), "--dry-run",
            "--no-progress", *SMALL["lstm"]]
    assert training.main(argv) == 0
    assert {k: v for k, v in digest(world).items() if not k.startswith("lstm/dry-run/")} == before
    assert (world / "lstm" / "dry-run" / "best.npz").is_file()
    shutil.rmtree(world / "lstm" / "dry-run")


@pytest.mark.parametrize("damage, fragment", [(lambda path: path.write_bytes(path.read_bytes()[:200]), "not a valid"),
                                              (lambda path: np.savez(path, mean=np.full(4, np.nan),
                                                                     components=np.eye(2, 4),
                                                                     explained_variance=np.ones(2)), "NaN")])
def test_a_truncated_or_nan_pca_file_is_one_line(tmp_path, damage, fragment):
    from core.features.pca import fit_pca, load_pca, save_pca
    from core.runtime.errors import UserError

    path = tmp_path / "pca.npz"
    save_pca(path, fit_pca(np.random.default_rng(0).standard_normal((10, 4)), dim=2))
    damage(path)
    with pytest.raises(UserError, match=fragment) as raised:
        load_pca(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def assert_one_line_exit(main, argv, capsys, fragment):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.run(lambda: main(argv))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exited.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
