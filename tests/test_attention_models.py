"""The attention models end to end: the registry's att_lstm and grid Transformer train and caption through the
scripts' engines, attention is recorded per word, maps are drawn and attention correctness is reported."""
import json

import numpy as np
import pytest

import inference
import training
from core.data.loader import load_coco_data
from core.datasets.shapes_build import ShapesConfig, build_shapes_dataset
from core.evaluation.attention import greedy_with_attention
from core.model.registry import load_model, model_kind
from core.training.engine import TrainSettings, run_training
from tests.conftest import write_tiny_cs231n
from tests.test_bad_inputs import assert_one_line_exit

SMALL = {"att_lstm": {"wordvec_dim": 8, "hidden_dim": 16, "att_dim": 8},
         "transformer": {"wordvec_dim": 16, "num_heads": 2, "num_layers": 1, "dim_feedforward": 32}}
TINY_WORLD = ShapesConfig(num_train=64, num_val=16, num_test=8, num_novel=8, encoder_epochs=1, pca_dim=16,
                          probe_epochs=2)


def train(model, data_dir, out, epochs=2, **options):
    settings = TrainSettings(model=model, data_dir=str(data_dir), out=str(out), epochs=epochs, batch_size=16,
                             progress=False, model_config=dict(SMALL[model], **options))
    return run_training(settings)


@pytest.mark.parametrize("model", ["att_lstm", "transformer"])
def test_attention_models_train_on_grid_features(model, tiny_grid_dataset, tmp_path):
    summary = train(model, tiny_grid_dataset, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())["model_config"]
    assert (config["num_cells"], config["input_dim"]) == (4, 8)  # the 2 x 2 map of 8 channels
    assert np.isfinite(summary["best_val_loss"])


def test_the_transformer_attends_over_cells_where_the_data_has_them(tiny_dataset, tiny_grid_dataset, tmp_path):
    grid = model_kind("transformer").make_config({}, has_grid=True)
    assert grid.memory == "grid" and model_kind("transformer").make_config({}, has_grid=False).memory == "pooled"
    train("transformer", tiny_dataset, tmp_path / "pooled")
    train("transformer", tiny_grid_dataset, tmp_path / "forced", memory="pooled")
    for name in ("pooled", "forced"):
        assert json.loads((tmp_path / name / "config.json").read_text())["model_config"]["memory"] == "pooled"


def test_recorded_attention_is_each_steps_own(tiny_grid_dataset, tmp_path):
    """Rows leave the state as their captions end: the recorder must still file each step under its row."""
    train("att_lstm", tiny_grid_dataset, tmp_path)
    model, _ = load_model(tmp_path / "best.npz")
    features = load_coco_data(tiny_grid_dataset, grid=True)["val_grid"][np.arange(6)]  # (6, 4, 8)
    captions, weights = greedy_with_attention(model, features, 8, num_cells=4)
    np.testing.assert_array_equal(captions, model.sample(features, 8))
    for row in range(6):
        state, token = model.init_decode(features[row:row + 1]), np.array([model.start_idx])
        for t in range(8):
            _, state = model.decode_step(token, state)
            np.testing.assert_allclose(weights[row, t], model.attention(state)[0], rtol=1e-6, atol=1e-7)
            token = captions[row:row + 1, t]
            if token[0] == model.end_idx:
                assert not weights[row, t + 1:].any()  # nothing after a caption's end
                break


def test_an_attention_model_on_data_without_grid_features_is_one_line(tiny_dataset, tmp_path, capsys):
    argv = ["--model", "att_lstm", "--data-dir", str(tiny_dataset), "--out", str(tmp_path / "a"), "--no-progress"]
    assert_one_line_exit(training.main, argv, capsys, "grid")


def test_scst_trains_an_attention_model(tiny_grid_dataset, tmp_path):
    train("att_lstm", tiny_grid_dataset, tmp_path / "xe")
    run_training(TrainSettings(model="att_lstm", data_dir=str(tiny_grid_dataset), out=str(tmp_path / "scst"),
                               objective="scst", init_from=str(tmp_path / "xe" / "best.npz"), epochs=2, batch_size=8,
                               progress=False))
    history = json.loads((tmp_path / "scst" / "history.json").read_text())
    assert history["metric"] == "CIDEr-D" and len(history["epoch_val_loss"]) == 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny shapes world (with its 8 x 8 grid) and an attention LSTM trained on it briefly."""
    root = tmp_path_factory.mktemp("attention_world")
    data = build_shapes_dataset(root / "data", TINY_WORLD, progress=False)
    train("att_lstm", data, root / "att_lstm", epochs=10, hidden_dim=64, wordvec_dim=32, att_penalty=0.0)
    return root


def test_inference_draws_attention_maps_and_evaluates_attention_correctness(world, capsys):
    checkpoint = str(world / "att_lstm" / "best.npz")
    assert inference.main(["--model", "att_lstm", "--checkpoint", checkpoint, "--split", "val", "--num_samples", "3",
                           "--attention-maps", "2", "--no-progress"]) == 0
    maps = sorted((world / "att_lstm").glob("attention_val_*.png"))
    assert len(maps) == 2 and all(path.stat().st_size > 2000 for path in maps)
    output = world / "eval.json"
    assert inference.main(["--model", "att_lstm", "--checkpoint", checkpoint, "--evaluate", "--output", str(output),
                           "--no-progress"]) == 0
    attention = json.loads(output.read_text())["attention"]
    assert attention["n_scored_words"] > 0
    assert 0 < attention["uniform_baseline"] < 1 and 0 <= attention["attention_correctness"] <= 1
    assert "attention_correctness" in capsys.readouterr().out


def test_no_maps_with_attention_maps_zero_or_for_pooled_models(world):
    out = world / "none"
    assert inference.main(["--model", "att_lstm", "--checkpoint", str(world / "att_lstm" / "best.npz"), "--split",
                           "val", "--num_samples", "2", "--attention-maps", "0", "--out", str(out),
                           "--no-progress"]) == 0
    assert not list(out.glob("attention_*.png"))


def test_grid_features_of_another_shape_than_the_checkpoints_are_one_line(tiny_grid_dataset, tmp_path, capsys):
    train("att_lstm", tiny_grid_dataset, tmp_path / "run")
    other = write_tiny_cs231n(tmp_path / "wide", dim=48, grid=True)  # 4 cells of 12 channels, not 8
    argv = ["--model", "att_lstm", "--checkpoint", str(tmp_path / "run" / "best.npz"), "--data-dir", str(other),
            "--evaluate", "--no-progress"]
    assert_one_line_exit(inference.main, argv, capsys, "expects features of shape (4, 8)")
