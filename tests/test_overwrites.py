"""Outputs never replace inputs or finished work: a new run on a trained run's folder, inference outputs naming
the files the command reads (or each other), a dataset builder pointed at another dataset. Each refusal is exit
code 2, one line on stderr, and every earlier file byte for byte as it was."""
import json
import os
import shutil

import training
from core.datasets import shapes_build
from core.runtime.outputs import check_outputs
from tests.test_bad_inputs import MAINS, SMALL, assert_one_line_exit, digest, world  # noqa: F401 (fixture)


def train_argv(world, out, *extra):
    return ["--model", "lstm", "--data-dir", str(world / "data"), "--out", str(out), "--no-progress",
            "--batch-size", "16", "--epochs", "1", *SMALL["lstm"], *extra]


def test_a_new_run_on_a_trained_run_is_refused(world, capsys):
    before = digest(world)
    assert_one_line_exit(MAINS["train"], train_argv(world, world / "lstm"), capsys, "--resume to continue it")
    assert_one_line_exit(MAINS["train"], train_argv(world, world / "lstm", "--resume", "--overwrite"), capsys,
                         "pass one of them")
    assert digest(world) == before


def test_overwrite_starts_over(world, tmp_path):
    run = shutil.copytree(world / "lstm", tmp_path / "run")
    before = (run / "best.npz").read_bytes()
    assert training.main(train_argv(world, run, "--overwrite", "--seed", "3")) == 0
    assert (run / "best.npz").read_bytes() != before


def infer_argv(world, *extra):
    return ["--model", "lstm", "--checkpoint", str(world / "lstm" / "best.npz"), "--evaluate", "--no-progress",
            *extra]


def test_inference_outputs_never_name_what_it_reads(world, tmp_path, capsys):
    os.link(world / "lstm" / "best.npz", tmp_path / "linked.npz")
    cases = [(["--output", str(world / "lstm" / "best.npz")], "the checkpoint"),
             (["--output", str(tmp_path / "linked.npz")], "the checkpoint"),
             (["--output", str(world / "lstm" / ".." / "data" / "coco2014_vocab.json")], "a dataset file"),
             (["--coco-results", str(world / "data" / "coco2014_captions.h5")], "a dataset file"),
             (["--output", str(tmp_path / "r.json"), "--coco-results", str(tmp_path / "." / "r.json")],
              "name the same file")]
    for extra, fragment in cases:
        before = digest(world)
        assert_one_line_exit(MAINS["infer"], infer_argv(world, *extra), capsys, fragment)
        assert digest(world) == before
    assert not (tmp_path / "r.json").exists()


def test_check_outputs_passes_distinct_files(tmp_path):
    (tmp_path / "in.txt").write_text("x")
    check_outputs([(tmp_path / "a.json", "--a"), (None, "--b"), (tmp_path / "b.json", "--c")],
                  [(tmp_path / "in.txt", "the input")])


def test_shapes_build_never_replaces_another_dataset(tmp_path, capsys):
    own = tmp_path / "own"
    own.mkdir()
    (own / "manifest.json").write_text(json.dumps({"builder": "own_data", "config": {}}))
    (own / "coco2014_vocab.json").write_text("{}")
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    (shapes / "manifest.json").write_text(json.dumps({"builder_version": shapes_build.BUILDER_VERSION,
                                                      "config": {"seed": 99}}))
    before = digest(tmp_path)
    small = ["--num-train", "64", "--pca-dim", "8", "--num-val", "8", "--num-test", "0"]
    assert_one_line_exit(MAINS["shapes"], ["--out", str(own), *small], capsys, "not a shapes dataset")
    assert_one_line_exit(MAINS["shapes"], ["--out", str(shapes), *small], capsys, "--overwrite")
    assert digest(tmp_path) == before
