"""Attention correctness on the hard world: each object's pixels are what it shows in the image (a part hidden by an
object drawn over it is not its own), captions are read in the world's words (synonyms), an object hidden entirely
adds no cells, and a tiny hard dataset evaluated with an attention model reports the figure."""
import json
import math

import numpy as np
import pytest

import inference
from core.datasets.shapes_build import build_shapes_dataset
from core.datasets.shapes_config import ShapesConfig
from core.evaluation.attention_correctness import attention_correctness, scene_cell_masks, word_correctness
from core.shapes_world.hard import object_alpha, sample_scene
from core.shapes_world.worlds import WORLDS
from core.training.engine import TrainSettings, run_training

HARD = WORLDS["hard"]
SIZE, SIDE = 96, 4  # cells of 24 x 24 pixels
# A square's reach is 1.2 r to its corners; this r makes an unrotated square's half side 23 px.
HALF_23 = 23 * math.sqrt(2) / 1.2


def square(colour, x, y, z):
    return {"shape": "square", "colour": colour, "size": "large", "x": x, "y": y, "r": HALF_23, "angle": 0.0, "z": z}


# A red square over pixels 25..70 (cells 1-2 both ways), its right part (pixels 47..70) under a blue square drawn
# after it (pixels 47..92 across); a small red circle in the bottom left cell; a green triangle under the blue square.
RED, BLUE = square("red", 48.0, 48.0, 0), square("blue", 70.0, 48.0, 2)
CIRCLE = {"shape": "circle", "colour": "red", "size": "small", "x": 12.0, "y": 84.0, "r": 6.0, "angle": 0.0, "z": 3}
HIDDEN = {"shape": "triangle", "colour": "green", "size": "small", "x": 70.0, "y": 48.0, "r": 5.0, "angle": 0.0,
          "z": 1}
SCENE = {"objects": [CIRCLE, RED, HIDDEN, BLUE]}
IDX_CIRCLE, IDX_RED, IDX_HIDDEN, IDX_BLUE = range(4)


def cells(*rows):
    """A (R,) mask from SIDE strings of SIDE characters, '#' for a covered cell, top row first."""
    return np.array([[c == "#" for c in row] for row in rows]).ravel()


def uniform(num_words, num_cells=SIDE * SIDE):
    return np.full((num_words, num_cells), 1.0 / num_cells)


def test_the_hidden_part_of_an_occluded_object_is_not_its_own():
    pixels = HARD.object_pixels(SCENE, SIZE)  # (N, S, S): [y, x]
    assert object_alpha(RED, SIZE)[30, 60] == 1.0 and not pixels[IDX_RED, 30, 60]  # under the blue square
    assert pixels[IDX_RED, 30, 40] and pixels[IDX_BLUE, 30, 60]
    assert np.array_equal(np.flatnonzero(pixels[IDX_RED].any(axis=0)), np.arange(25, 47))  # its columns left
    assert pixels.sum(axis=0).max() == 1  # no pixel shows two objects
    masks = scene_cell_masks(SCENE, SIDE, SIZE, HARD)
    assert np.array_equal(masks[IDX_RED], cells("....", ".#..", ".#..", "...."))
    assert np.array_equal(masks[IDX_BLUE], cells("....", ".###", ".###", "...."))
    assert np.array_equal(masks[IDX_CIRCLE], cells("....", "....", "....", "#..."))
    on_top = {"objects": [CIRCLE, dict(RED, z=4), HIDDEN, BLUE]}  # drawn last, the red square shows whole
    assert np.array_equal(scene_cell_masks(on_top, SIDE, SIZE, HARD)[IDX_RED], cells("....", ".##.", ".##.", "...."))


def test_an_occluded_object_is_scored_on_what_is_visible_of_it():
    masks = scene_cell_masks(SCENE, SIDE, SIZE, HARD)
    on_hidden_part = cells("....", "..#.", "..#.", "....") / 2.0  # where the red square would be, unoccluded
    alphas = np.stack([uniform(1)[0], uniform(1)[0], on_hidden_part])
    assert word_correctness("a large red square", np.vstack([uniform(1), alphas]), SCENE, SIZE, world=HARD) == [
        (3, "square", 0.0, masks[IDX_RED].mean())]


def test_synonyms_name_the_right_object():
    masks = scene_cell_masks(SCENE, SIDE, SIZE, HARD)
    caption = "a scarlet disc beside a cobalt box"
    alphas = uniform(len(caption.split()))
    alphas[2], alphas[6] = masks[IDX_CIRCLE] / masks[IDX_CIRCLE].sum(), masks[IDX_BLUE] / masks[IDX_BLUE].sum()
    scores = word_correctness(caption, alphas, SCENE, SIZE, world=HARD)
    assert scores == [(2, "disc", pytest.approx(1.0), masks[IDX_CIRCLE].mean()),
                      (6, "box", pytest.approx(1.0), masks[IDX_BLUE].mean())]
    plural = word_correctness("two scarlet figures", uniform(3), SCENE, SIZE, world=HARD)  # both red objects
    assert plural == [(2, "figures", pytest.approx((masks[IDX_CIRCLE] | masks[IDX_RED]).mean()),
                       (masks[IDX_CIRCLE] | masks[IDX_RED]).mean())]


def test_an_object_hidden_entirely_adds_no_cells():
    assert not HARD.object_pixels(SCENE, SIZE)[IDX_HIDDEN].any() and object_alpha(HIDDEN, SIZE).max() == 1.0
    assert not scene_cell_masks(SCENE, SIDE, SIZE, HARD)[IDX_HIDDEN].any()
    result = attention_correctness({0: "a green triangle"}, {0: uniform(3)}, {0: SCENE}, SIZE, world=HARD)
    assert result["n_scored_words"] == 0 and math.isnan(result["attention_correctness"])
    caption = "a green triangle behind a blue square"
    assert [s[:2] for s in word_correctness(caption, uniform(7), SCENE, SIZE, world=HARD)] == [(6, "square")]


def test_sampled_scenes_show_each_pixel_as_one_object_at_most():
    rng = np.random.default_rng(5)
    for _ in range(4):
        scene = sample_scene(rng, SIZE)
        pixels = HARD.object_pixels(scene, SIZE)  # (N, S, S)
        covered = np.stack([object_alpha(obj, SIZE) >= 0.5 for obj in scene["objects"]])
        assert pixels.sum(axis=0).max() <= 1 and not (pixels & ~covered).any()
        assert np.array_equal(pixels.any(axis=0), covered.any(axis=0))  # every covered pixel shows some object
        top = max(range(len(pixels)), key=lambda i: scene["objects"][i]["z"])
        assert np.array_equal(pixels[top], covered[top])  # nothing hides the object drawn last


TINY_HARD = ShapesConfig.for_world("hard", num_train=48, num_val=8, num_test=8, num_novel=0, encoder_epochs=1,
                                   pca_dim=16, probe_epochs=1, threads=1)


def test_a_tiny_hard_dataset_reports_attention_correctness(tmp_path):
    """Briefly trained, the model names few objects of its scenes: its 48 training images give it some to score."""
    data = build_shapes_dataset(tmp_path / "data", TINY_HARD, progress=False)
    run_training(TrainSettings(model="att_lstm", data_dir=str(data), out=str(tmp_path / "att"), epochs=8,
                               batch_size=16, lr=1e-2, progress=False,
                               model_config={"wordvec_dim": 16, "hidden_dim": 32, "att_dim": 16, "att_penalty": 0.0}))
    output = tmp_path / "eval.json"
    assert inference.main(["--model", "att_lstm", "--checkpoint", str(tmp_path / "att" / "best.npz"), "--evaluate",
                           "--split", "train", "--output", str(output), "--no-progress"]) == 0
    attention = json.loads(output.read_text())["attention"]
    assert attention["n_scored_words"] > 0 and 0 < attention["uniform_baseline"] < 1
    assert math.isfinite(attention["attention_correctness"]) and 0 <= attention["attention_correctness"] <= 1

