"""Malformed files, each read where the project reads it: checkpoints lacking their vocabulary, parameters or data
record; ``last`` checkpoints with a bad position, history or optimizer state; HDF5 datasets and vocabularies of the
wrong kind. Each is exit code 2, one line naming the file and what is wrong, and earlier files left as they were."""
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import write_tiny_cs231n
from tests.test_bad_inputs import (
    MAINS,
    SMALL,
    assert_one_line_exit,
    checkpoint_edit,
    digest,
    rewrite_h5,
    run_with_edited_last,
    world,  # noqa: F401 (a fixture, passed by pytest)
)


def meta_change(change):
    def edit(arrays):
        meta = json.loads(str(arrays["meta"]))
        change(meta)
        arrays["meta"] = np.array(json.dumps(meta))
    return edit


def run_change(**values):
    return meta_change(lambda meta: meta["run"].update(values))


def wrong_optim_shape(arrays):
    key = next(k for k in arrays if k.startswith("optim/Wx/") and arrays[k].ndim)
    arrays[key] = np.zeros((3, 3), arrays[key].dtype)


def torch_payload(change, name):
    """A copy of the Transformer dry run (checkpoint ``name``) with ``change(payload)`` applied."""
    def make(world, tmp_path):
        run = shutil.copytree(world / "transformer", tmp_path / "run")
        payload = torch.load(run / name, weights_only=True)
        change(payload)
        torch.save(payload, run / name)
        return str(run / name) if name == "best.pt" else str(run)
    return make


def wrong_torch_optim(payload):
    state = payload["optim"]["state"]
    first = next(iter(state))
    state[first]["exp_avg"] = torch.zeros(3)


LSTM_INFER = ["--model", "lstm", "--no-progress", "--checkpoint"]
LSTM_RESUME = ["--model", "lstm", "--data-dir", "{data}", "--resume", "--batch-size", "16", "--epochs", "2",
               "--no-progress", *SMALL["lstm"], "--out"]
CHECKPOINTS = [
    ("no vocabulary", LSTM_INFER, checkpoint_edit(meta_change(lambda m: m.pop("idx_to_word"))), "not a list"),
    ("vocabulary not a list", LSTM_INFER, checkpoint_edit(meta_change(lambda m: m.update(idx_to_word={"a": 0}))),
     "not a list"),
    ("vocabulary without <START>", LSTM_INFER,
     checkpoint_edit(meta_change(lambda m: m["idx_to_word"].__setitem__(1, "start"))), "special tokens"),
    ("no data record", LSTM_INFER, checkpoint_edit(meta_change(lambda m: m.pop("data"))), "data record"),
    ("no model type", LSTM_INFER, checkpoint_edit(meta_change(lambda m: m.pop("model_type"))), "model_type"),
    ("numpy optimizer state of another shape", LSTM_INFER, checkpoint_edit(wrong_optim_shape), "optimizer state"),
    ("torch checkpoint without parameters", ["--model", "transformer", "--checkpoint"],
     torch_payload(lambda p: p.pop("params"), "best.pt"), "'params'"),
    ("negative step in last", LSTM_RESUME, run_with_edited_last(run_change(step=-3)), "training step -3"),
    ("broken history in last", LSTM_RESUME, run_with_edited_last(run_change(history={"train_loss": "x"})),
     "broken history"),
    ("no run record in last", LSTM_RESUME, run_with_edited_last(meta_change(lambda m: m.pop("run"))), "'run'"),
    ("optimizer state of another shape in last", LSTM_RESUME, run_with_edited_last(wrong_optim_shape),
     "optimizer state"),
    ("torch optimizer state of another shape in last",
     ["--model", "transformer", "--data-dir", "{data}", "--resume", "--batch-size", "16", "--epochs", "1",
      "--no-progress", *SMALL["transformer"], "--out"], torch_payload(wrong_torch_optim, "last.pt"),
     "optimizer state exp_avg"),
]


@pytest.mark.parametrize("name, argv, make, fragment", CHECKPOINTS, ids=[case[0] for case in CHECKPOINTS])
def test_a_malformed_checkpoint_is_one_line(world, tmp_path, capsys, name, argv, make, fragment):
    before = digest(world)
    path = make(world, tmp_path)
    script = "infer" if "--checkpoint" in argv else "train"
    resolved = [arg.format(data=world / "data") for arg in argv] + [path]
    assert_one_line_exit(MAINS[script], resolved, capsys, fragment)
    assert digest(world) == before


def group_for(key):
    def damage(base):
        with h5py.File(base / "coco2014_captions.h5", "a") as f:
            del f[key]
            f.create_group(key)
    return damage


def zero_width(base):
    rewrite_h5(base / "train2014_vgg16_fc7_pca.h5", features=np.zeros((4, 0), np.float32))


def vocab_json(change):
    def damage(base):
        path = base / "coco2014_vocab.json"
        vocab = json.loads(path.read_text())
        change(vocab)
        path.write_text(json.dumps(vocab))
    return damage


def wordless(base):
    with h5py.File(base / "coco2014_captions.h5", "r") as f:
        captions = f["train_captions"][()]
    captions[3, 1:] = 0
    captions[3, 1] = 2  # <START> <END>
    rewrite_h5(base / "coco2014_captions.h5", train_captions=captions)


DATASETS = [
    ("a group where the captions belong", group_for("train_captions"), "a group where dataset 'train_captions'"),
    ("features of width 0", zero_width, "at least one row and column"),
    ("float vocabulary ids", vocab_json(lambda v: v.update(word_to_idx={w: float(i) for w, i in
                                                                        v["word_to_idx"].items()})), "integer ids"),
    ("idx_to_word not a list", vocab_json(lambda v: v.update(idx_to_word={"0": "<NULL>"})), "a list"),
    ("captions with no word", wordless, "holds no word"),
]


@pytest.mark.parametrize("name, damage, fragment", DATASETS, ids=[case[0] for case in DATASETS])
def test_a_malformed_dataset_file_is_one_line(world, tmp_path, capsys, name, damage, fragment):
    for model in ("lstm", "transformer"):
        bad = write_tiny_cs231n(tmp_path / model / "bad")
        damage(bad)
        before = digest(world)
        argv = ["--model", model, "--data-dir", str(bad), "--out", str(tmp_path / model / "run"), "--no-progress",
                *SMALL[model]]
        assert_one_line_exit(MAINS["train"], argv, capsys, fragment)
        assert digest(world) == before
        assert not (tmp_path / model / "run" / "config.json").exists()
