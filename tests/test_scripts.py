"""training.py and inference.py end to end on a tiny CS231n-layout dataset, and their bad-input exits."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import inference
import training
from core.coco_utils import load_coco_data
from core.model.rnn_model import feature_scale

ROOT = Path(__file__).resolve().parents[1]
FAST = {"rnn": ["--hidden-dim", "16", "--wordvec-dim", "8"], "lstm": ["--hidden-dim", "16", "--wordvec-dim", "8"],
        "transformer": ["--num-layers", "1", "--num-heads", "2", "--wordvec-dim", "16"]}


def test_feature_scale_is_the_typical_entry_size():
    features = np.random.default_rng(0).standard_normal((500, 64)) * 7
    assert feature_scale(features) == pytest.approx(7, rel=0.05)
    assert feature_scale(np.zeros((4, 3))) == 1.0


@pytest.mark.parametrize("model", ["rnn", "lstm", "transformer"])
def test_train_resume_infer_evaluate(model, tiny_dataset, tmp_path, monkeypatch):
    if model != "lstm":  # METEOR starts a JVM (seconds); one model checks it, the others skip it
        monkeypatch.setattr("core.evaluation.metrics.java_available", lambda: False)
    out = tmp_path / "run"
    common = ["--model", model, "--data-dir", str(tiny_dataset), "--out", str(out), "--batch-size", "8",
              "--no-progress", *FAST[model]]
    assert training.main(common + ["--epochs", "1"]) == 0
    suffix = ".pt" if model == "transformer" else ".npz"
    assert (out / f"last{suffix}").is_file() and (out / f"best{suffix}").is_file()
    assert training.main(common + ["--epochs", "2", "--resume"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["epoch_val_loss"]) == 2 and len(history["train_loss"]) == 2 * 6  # 48 captions / 8
    for name in ("loss.png", "config.json"):
        assert (out / name).stat().st_size > 0
    if model != "transformer":  # the RNNs divide features by their typical scale, measured on train
        data = load_coco_data(tiny_dataset)
        config = json.loads((out / "config.json").read_text())["model_config"]
        assert config["feature_scale"] == pytest.approx(feature_scale(data["train_features"]))

    assert inference.main(["--model", model, "--checkpoint", str(out / f"best{suffix}"), "--num_samples", "3",
                           "--no-fetch"]) == 0
    for split in ("train", "val"):
        assert (out / f"gallery_{split}.png").stat().st_size > 1000

    output = tmp_path / "val.json"
    assert inference.main(["--model", model, "--checkpoint", str(out / f"best{suffix}"), "--evaluate",
                           "--beam-size", "2", "--output", str(output)]) == 0
    record = json.loads(output.read_text())
    assert len(record["predictions"]) == 8 and set(record["predictions"]) == set(record["references"])
    assert {"BLEU-4", "CIDEr", "ROUGE-L"} <= set(record["metrics"])
    assert record["decoding"]["beam_size"] == 2


def test_dry_run_takes_one_step(tiny_dataset, tmp_path):
    out = tmp_path / "dry"
    assert training.main(["--model", "lstm", "--data-dir", str(tiny_dataset), "--out", str(out), "--dry-run",
                          "--no-progress", *FAST["lstm"]]) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 1


def run_script(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def assert_clean_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_lstm(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("lstm")
    training.main(["--model", "lstm", "--data-dir", str(tiny_dataset), "--out", str(out), "--epochs", "1",
                   "--no-progress", *FAST["lstm"]])
    return out / "best.npz"


def test_bad_training_flags(tiny_dataset, tmp_path):
    data = ["--data-dir", str(tiny_dataset), "--out", str(tmp_path / "x")]
    assert_clean_error(run_script("training.py", "--model", "gru"), "--model", "invalid choice")
    assert_clean_error(run_script("training.py", "--model", "rnn", "--num_samples", "0"), "--num_samples")
    assert_clean_error(run_script("training.py", "--model", "rnn", "--num_samples", "ten"), "--num_samples")
    assert_clean_error(run_script("training.py", "--model", "rnn", "--num_samples", "1000", *data), "1000")
    assert_clean_error(run_script("training.py", "--model", "rnn", "--data-dir", str(tmp_path / "nope")),
                       "--data-dir")
    assert_clean_error(run_script("training.py", "--model", "rnn", "--data-dir", str(tiny_dataset),
                                  "--out", "/proc/forbidden"), "--out")
    assert_clean_error(run_script("training.py", "--model", "rnn", "--resume", *data), "--resume")
    from core.data.layout import default_data_dir

    if not default_data_dir("coco_captioning").exists():
        assert_clean_error(run_script("training.py", "--model", "rnn", "--dataset", "coco"), "get_datasets.sh")


def test_bad_inference_inputs(trained_lstm, tiny_dataset, tmp_path):
    assert_clean_error(run_script("inference.py", "--model", "lstm", "--checkpoint", str(tmp_path / "none.npz")),
                       "training.py --model lstm")
    assert_clean_error(run_script("inference.py", "--model", "rnn", "--checkpoint", str(trained_lstm)),
                       "'lstm'", "--model lstm")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"garbage")
    assert_clean_error(run_script("inference.py", "--model", "lstm", "--checkpoint", str(corrupt)), "corrupt")
    other = tmp_path / "other"
    from tests.conftest import write_tiny_cs231n

    write_tiny_cs231n(other, dim=48)
    assert_clean_error(run_script("inference.py", "--model", "lstm", "--checkpoint", str(trained_lstm),
                                  "--data-dir", str(other)), "--data-dir")
    assert_clean_error(run_script("inference.py", "--model", "lstm", "--checkpoint", str(trained_lstm),
                                  "--image", str(tmp_path / "missing.png")), "encoder.json")


def test_ctrl_c_saves_a_resumable_checkpoint(tiny_dataset, tmp_path):
    import signal
    import time

    out = tmp_path / "interrupted"
    args = [sys.executable, "training.py", "--model", "rnn", "--data-dir", str(tiny_dataset), "--out", str(out),
            "--epochs", "100000", "--batch-size", "8", "--no-progress", *FAST["rnn"]]
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (out / "history.json").exists() and time.monotonic() < deadline:  # the first epoch has ended
        time.sleep(0.2)
    assert (out / "history.json").exists(), "training did not finish an epoch in time"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert "--resume" in stderr, (stdout, stderr, sorted(p.name for p in out.iterdir()))
    from core.runtime.checkpoint import load_training_state

    step = load_training_state(out / "last.npz")[0]["run"]["step"]
    assert step >= 6
    assert training.main(["--model", "rnn", "--data-dir", str(tiny_dataset), "--out", str(out), "--epochs",
                          str(step // 6 + 1), "--batch-size", "8", "--no-progress", "--resume", *FAST["rnn"]]) == 0
    assert load_training_state(out / "last.npz")[0]["run"]["step"] == 6 * (step // 6 + 1)


def test_caption_your_own_image_on_a_shapes_dataset(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    from core.datasets.shapes_build import ShapesConfig, build_shapes_dataset
    from core.shapes_world.render import render_scene, sample_scenes

    data_dir = build_shapes_dataset(tmp_path / "shapes", ShapesConfig(num_train=64, num_val=16, num_test=4, num_novel=4,
                                                                      encoder_epochs=1, pca_dim=16, probe_epochs=2,
                                                                      threads=1))
    out = tmp_path / "run"
    assert training.main(["--model", "lstm", "--data-dir", str(data_dir), "--out", str(out), "--epochs", "1",
                          "--no-progress", *FAST["lstm"]]) == 0
    image = tmp_path / "mine.png"
    iio.imwrite(image, render_scene(sample_scenes(1, np.random.default_rng(5), 64)[0], 64))
    output = tmp_path / "mine.json"
    assert inference.main(["--model", "lstm", "--checkpoint", str(out / "best.npz"), "--image", str(image),
                           "--output", str(output)]) == 0
    caption = json.loads(output.read_text())["predictions"][str(image)]
    assert isinstance(caption, str) and (out / "gallery_images.png").stat().st_size > 1000
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert_clean_error(run_script("inference.py", "--model", "lstm", "--checkpoint", str(out / "best.npz"),
                                  "--image", str(bad)), "bad.png")
