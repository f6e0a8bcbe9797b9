"""End-to-end tests of features_extraction.py on a handful of tiny images and random VGG16 weights."""
import json
import subprocess
import sys
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import features_extraction
from core.data.store import read_features_h5
from core.features.encoders import load_encoder
from core.features.extract import extract_features
from core.features.pca import load_pca
from core.features.shapes_cnn import ShapesEncoder, ShapesEncoderConfig, save_shapes_encoder
from core.runtime.cli import run
from tests.test_features import random_vgg16_state_dict

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "vgg16-random.pth"
    torch.save(random_vgg16_state_dict(seed=1), path)
    return path


def write_images(folder, count, seed):
    """``count`` small images of varied sizes and modes (RGB png, jpg, grayscale png, RGBA png)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shapes = [(40, 60, 3), (50, 34, 3), (36, 36), (30, 45, 4)]
    names = []
    for i in range(count):
        name = f"img{i}.jpg" if i % 4 == 1 else f"img{i}.png"
        iio.imwrite(folder / name, rng.integers(0, 256, shapes[i % 4], dtype=np.uint8))
        names.append(folder / name)
    return names


def run_script(argv, capsys):
    """(exit code, stderr) of features_extraction run in-process the way its __main__ runs it."""
    with pytest.raises(SystemExit) as exit_info:
        run(lambda: features_extraction.main(argv))
    return exit_info.value.code, capsys.readouterr().err


def test_every_flag_has_help():
    for action in features_extraction.build_parser()._actions:
        assert action.help, action.option_strings


def test_images_dir_end_to_end(tmp_path, weights, capsys):
    train = write_images(tmp_path / "images" / "train2014", 4, seed=0)
    val = write_images(tmp_path / "images" / "val2014", 2, seed=1)
    out = tmp_path / "out"
    code, err = run_script(["--images-dir", str(tmp_path / "images"), "--vgg16-weights", str(weights),
                            "--out", str(out), "--pca-dim", "2", "--batch-size", "2", "--device", "cpu",
                            "--limit", "3"], capsys)
    assert code == 0 and "Traceback" not in err
    pca = load_pca(out / "pca.npz")
    assert pca.components.shape == (2, 4096)
    for split, paths in (("train", train[:3]), ("val", val)):
        with read_features_h5(out / f"{split}2014_vgg16_fc7.h5", expected_dim=4096) as raw, \
                read_features_h5(out / f"{split}2014_vgg16_fc7_pca.h5", expected_dim=2) as reduced:
            raw, reduced = np.asarray(raw), np.asarray(reduced)
        assert raw.shape == (len(paths), 4096) and np.all(raw >= 0)
        np.testing.assert_allclose(reduced, pca.project(raw), rtol=1e-5, atol=1e-5)
        assert (out / f"{split}2014_urls.txt").read_text().splitlines() == [str(p) for p in paths]
    info = json.loads((out / "encoder.json").read_text())
    assert info["name"] == "vgg16" and info["feature_dim"] == 4096
    # The first train image, encoded straight from its pixels, gives the stored fc7 (up to the
    # uint8 rounding of the working copy the image reader makes).
    encoder = load_encoder("vgg16", weights=weights, device="cpu")
    with torch.no_grad():
        direct = encoder(encoder.preprocess(iio.imread(train[0])[None])).numpy()[0]
    with read_features_h5(out / "train2014_vgg16_fc7.h5") as raw:
        stored = raw[0]
    assert np.abs(stored - direct).max() <= 0.02 * np.abs(direct).max()


def test_image_lists_end_to_end(tmp_path, weights, capsys):
    paths = write_images(tmp_path / "pool", 3, seed=2)
    (tmp_path / "train.txt").write_text("pool/img0.png\npool/img1.jpg\n")
    (tmp_path / "val.txt").write_text(f"{paths[2]}\n")
    out = tmp_path / "out"
    code, err = run_script(["--train-list", str(tmp_path / "train.txt"), "--val-list", str(tmp_path / "val.txt"),
                            "--vgg16-weights", str(weights), "--out", str(out), "--pca-dim", "1",
                            "--device", "cpu"], capsys)
    assert code == 0
    assert (out / "train2014_urls.txt").read_text().splitlines() == [str(paths[0]), str(paths[1])]
    with read_features_h5(out / "val2014_vgg16_fc7_pca.h5", expected_dim=1) as reduced:
        assert reduced.shape == (1, 1)


def test_shapes_re_extraction(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data_dir = tmp_path / "shapes"
    data_dir.mkdir()
    with h5py.File(data_dir / "shapes_images.h5", "w") as f:
        f["train_images"] = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
        f["val_images"] = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    torch.manual_seed(0)  # the encoder's random init; its weights go through encoder.pt anyway
    config = ShapesEncoderConfig(image_size=16, widths=(4, 8), pools=(True, False), feature_dim=8)
    encoder = ShapesEncoder(config).eval()
    save_shapes_encoder(data_dir, encoder)
    info_before = (data_dir / "encoder.json").read_text()
    code, err = run_script(["--encoder", "shapes", "--data-dir", str(data_dir), "--pca-dim", "3",
                            "--device", "cpu", "--batch-size", "4"], capsys)
    assert code == 0
    with h5py.File(data_dir / "shapes_images.h5", "r") as f:
        expected = extract_features(encoder, f["train_images"], device="cpu")
    with read_features_h5(data_dir / "train2014_vgg16_fc7.h5", expected_dim=8) as raw:
        np.testing.assert_allclose(np.asarray(raw), expected, rtol=1e-5, atol=1e-6)
    assert (data_dir / "val2014_urls.txt").read_text().splitlines() == [f"shapes://val/{i}" for i in range(3)]
    assert json.loads((data_dir / "encoder.json").read_text()) == json.loads(info_before)
    code, err = run_script(["--encoder", "shapes", "--data-dir", str(data_dir), "--pca-dim", "2",
                            "--device", "cpu", "--limit", "4", "--out", str(tmp_path / "copy")], capsys)
    assert code == 0
    with read_features_h5(tmp_path / "copy" / "train2014_vgg16_fc7_pca.h5", expected_dim=2) as reduced:
        assert reduced.shape == (4, 2)
    copied = load_encoder("shapes", base_dir=tmp_path / "copy", device="cpu")
    for key, value in encoder.state_dict().items():
        assert torch.equal(copied.state_dict()[key], value), key


def bad_input_cases(tmp_path, weights):
    """(argv, text the one error line must contain) for inputs rejected before any extraction."""
    images = tmp_path / "images"
    write_images(images / "train2014", 3, seed=4)
    write_images(images / "val2014", 1, seed=5)
    (tmp_path / "corrupt.pth").write_bytes(b"\x00not a checkpoint")
    common = ["--out", str(tmp_path / "out"), "--device", "cpu", "--pca-dim", "2"]
    return [
        (["--images-dir", str(tmp_path / "nowhere"), "--vgg16-weights", str(weights)] + common, "--images-dir"),
        (["--images-dir", str(tmp_path), "--vgg16-weights", str(weights)] + common, "train2014"),
        (["--images-dir", str(images), "--vgg16-weights", str(tmp_path / "missing.pth")] + common, "missing.pth"),
        (["--images-dir", str(images), "--vgg16-weights", str(tmp_path / "corrupt.pth")] + common, "corrupt.pth"),
        (["--images-dir", str(images), "--vgg16-weights", str(weights), "--out", str(tmp_path / "out"),
          "--pca-dim", "3"], "--pca-dim 3"),
        (["--images-dir", str(images), "--vgg16-weights", str(weights)], "--out"),
        (["--encoder", "shapes"], "--data-dir"),
        (["--encoder", "shapes", "--data-dir", str(images)], "shapes_images.h5"),
        (["--images-dir", str(images), "--vgg16-weights", str(weights), "--device", "tpu"] + common[:2],
         "--device"),
        (["--images-dir", str(images), "--batch-size", "0"], "--batch-size"),
    ]


def test_bad_inputs_exit_2_with_one_line(tmp_path, weights, capsys):
    for argv, needle in bad_input_cases(tmp_path, weights):
        code, err = run_script(argv, capsys)
        assert code == 2, argv
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needle in err, (argv, err)
    assert not (tmp_path / "out").exists()


def test_unreadable_image_exits_2_naming_it(tmp_path, weights, capsys):
    write_images(tmp_path / "images" / "train2014", 3, seed=6)
    write_images(tmp_path / "images" / "val2014", 1, seed=7)
    (tmp_path / "images" / "train2014" / "img1.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")
    code, err = run_script(["--images-dir", str(tmp_path / "images"), "--vgg16-weights", str(weights),
                            "--out", str(tmp_path / "out"), "--pca-dim", "2", "--device", "cpu"], capsys)
    error_lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err
    assert len(error_lines) == 1 and "img1.jpg: cannot read image" in error_lines[0]
    assert not (tmp_path / "out" / "train2014_vgg16_fc7.h5").exists()


def test_script_process_reports_bad_weights_without_traceback(tmp_path):
    write_images(tmp_path / "images" / "train2014", 2, seed=8)
    write_images(tmp_path / "images" / "val2014", 1, seed=9)
    result = subprocess.run(
        [sys.executable, str(REPO / "features_extraction.py"), "--images-dir", str(tmp_path / "images"),
         "--vgg16-weights", str(tmp_path / "absent.pth"), "--out", str(tmp_path / "out"), "--pca-dim", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "absent.pth" in result.stderr
    assert "Traceback" not in result.stderr
