"""Tests for core.evaluation.attention_correctness: per-word scores on hand-made scenes, and cell masks against the
renderer."""
import math

import numpy as np
import pytest

from core.evaluation.attention_correctness import attention_correctness, scene_cell_masks, word_correctness
from core.shapes_world import render
from core.shapes_world.render import PALETTE, render_scene, sample_scene
from core.shapes_world.worlds import WORLDS

SIDE, CELLS = 8, 64


def obj(colour, shape, x, y, size="small", r=5.0):
    return {"shape": shape, "colour": colour, "size": size, "x": float(x), "y": float(y), "r": r, "angle": 5.0}


# One object near each corner of the 64 px image: red circles top left and bottom right, a large blue
# star top right, a large green square bottom left.
SCENE = {"background": [200, 200, 200], "noise_seed": 0,
         "objects": [obj("red", "circle", 12, 12), obj("green", "square", 14, 50, "large", 10.0),
                     obj("blue", "star", 50, 14, "large", 10.0), obj("red", "circle", 52, 52)]}
CIRCLE_A, SQUARE, STAR, CIRCLE_B = range(4)
# A small and a large red circle, to see a size word pick one.
SIZED = {"objects": [obj("red", "circle", 12, 32), obj("red", "circle", 45, 32, "large", 11.0)]}


def masks(scene=SCENE):
    return scene_cell_masks(scene, SIDE)


def on_cells(cells):
    """One attention row of shape (R,) spread evenly over ``cells`` (bool of shape (R,))."""
    return cells / cells.sum()


def uniform_rows(num_words):
    return np.full((num_words, CELLS), 1.0 / CELLS)


def attend(caption, rows_by_position):
    """Alphas for ``caption``: uniform except the rows given, plus a trailing <END> row."""
    alphas = uniform_rows(len(caption.split()) + 1)
    for pos, row in rows_by_position.items():
        alphas[pos] = row
    return alphas


def test_masks_are_distinct_and_in_the_right_corners():
    m = masks().reshape(4, SIDE, SIDE)  # (N, side, side): [y, x]
    assert m[CIRCLE_A, 1, 1] and m[STAR, 1, 6] and m[SQUARE, 6, 1] and m[CIRCLE_B, 6, 6]
    assert not (m[CIRCLE_A] & m[STAR]).any() and not (m[SQUARE] & m[CIRCLE_B]).any()
    assert m[STAR].sum() > m[CIRCLE_A].sum()  # the large object covers more cells


def test_attention_all_on_the_object_scores_one():
    star = masks()[STAR]
    scores = word_correctness("a blue star", attend("a blue star", {2: on_cells(star)}), SCENE)
    assert scores == [(2, "star", pytest.approx(1.0), star.mean())]


def test_attention_on_another_object_scores_zero():
    square = masks()[SQUARE]
    scores = word_correctness("a blue star", attend("a blue star", {2: on_cells(square)}), SCENE)
    assert scores == [(2, "star", 0.0, masks()[STAR].mean())]


def test_uniform_attention_scores_the_baseline():
    caption = "a blue star and a green square and two red circles"
    result = attention_correctness({7: caption}, {7: uniform_rows(len(caption.split()))}, {7: SCENE})
    m = masks()
    expected = np.mean([m[STAR].mean(), m[SQUARE].mean(), (m[CIRCLE_A] | m[CIRCLE_B]).mean()])
    assert result["n_scored_words"] == 3
    assert result["attention_correctness"] == pytest.approx(expected, abs=1e-12)
    assert result["uniform_baseline"] == pytest.approx(expected, abs=1e-12)
    assert result["correctness_ratio"] == pytest.approx(1.0)


def test_plural_phrase_takes_the_union_of_its_objects():
    m = masks()
    half_each = 0.5 * on_cells(m[CIRCLE_A]) + 0.5 * on_cells(m[CIRCLE_B])
    for caption in ("two red circles", "a red thing"):  # a generic noun with a colour names both too
        noun = len(caption.split()) - 1
        [(_, _, correctness, baseline)] = word_correctness(caption, attend(caption, {noun: half_each}), SCENE)
        assert correctness == pytest.approx(1.0)
        assert baseline == (m[CIRCLE_A] | m[CIRCLE_B]).mean()


def test_words_not_naming_present_objects_are_not_scored():
    caption = "a yellow triangle and three shapes and <UNK> a red circle"
    scores = word_correctness(caption, uniform_rows(len(caption.split())), SCENE)
    assert [(pos, word) for pos, word, _, _ in scores] == [(10, "circle")]
    nothing = attention_correctness({0: "a purple star"}, {0: uniform_rows(3)}, {0: SCENE})
    assert nothing["n_scored_words"] == 0 and math.isnan(nothing["attention_correctness"])


def test_size_word_narrows_the_referents_and_a_wrong_one_is_ignored():
    small, large = masks(SIZED)
    for caption, cells in (("a big red circle", large), ("a little red circle", small),
                           ("a red circle", small | large)):
        [(_, _, _, baseline)] = word_correctness(caption, uniform_rows(len(caption.split())), SIZED)
        assert baseline == cells.mean(), caption
    [(_, _, _, baseline)] = word_correctness("a small blue star", uniform_rows(4), SCENE)
    assert baseline == masks()[STAR].mean()  # the star is large, but the phrase still names it


def test_attribute_words_scored_on_request():
    caption = "a big blue star and a box"
    alphas = attend(caption, {1: on_cells(masks()[STAR])})  # only the size word looks at the star
    assert [s[:2] for s in word_correctness(caption, alphas, SCENE)] == [(3, "star"), (6, "box")]
    scores = word_correctness(caption, alphas, SCENE, include_attributes=True)
    assert [s[:2] for s in scores] == [(1, "big"), (2, "blue"), (3, "star"), (6, "box")]
    assert scores[0][2] == pytest.approx(1.0) and scores[1][2] < 0.5


def test_end_row_is_optional():
    star = on_cells(masks()[STAR])
    with_end = word_correctness("a blue star", np.stack([star] * 4), SCENE)
    assert word_correctness("a blue star", np.stack([star] * 3), SCENE) == with_end


@pytest.mark.parametrize("alphas, match", [
    (uniform_rows(2), "L >= 3"),
    (np.full(CELLS, 1.0 / CELLS), "shape"),
    (np.full((3, 60), 1.0 / 60), "square grid"),
    (2 * uniform_rows(3), "distribution"),
    (np.where(np.arange(CELLS) < 2, [-1.0, 2.0] * 32, 0.0)[None].repeat(3, axis=0), "distribution"),
])
def test_bad_alphas_raise(alphas, match):
    with pytest.raises(ValueError, match=match):
        word_correctness("a blue star", alphas, SCENE)


def test_captions_without_attention_or_scene_raise():
    with pytest.raises(ValueError, match="lack attention"):
        attention_correctness({0: "a blue star", 1: "a blue star"}, {0: uniform_rows(3)}, {0: SCENE, 1: SCENE})


def cells_of_pixel(p, size, side):
    """The cells whose span overlaps pixel p's [p, p+1) along one axis."""
    return range(math.floor(p * side / size), math.ceil((p + 1) * side / size))


@pytest.mark.parametrize("side", [8, 14])
def test_masks_match_where_the_renderer_draws(side):
    """Each object is rendered alone and compared with the empty scene (same noise): the colour shift of a pixel,
    projected on the object's colour, is its coverage to within 0.02 (rounding); a mid-grey background keeps
    clipping away."""
    rng = np.random.default_rng(3)
    for _ in range(6):
        scene = dict(sample_scene(rng), background=[128, 128, 128])
        empty = render_scene(dict(scene, objects=[]), 64).astype(np.float64)
        for obj_, mask in zip(scene["objects"], scene_cell_masks(scene, side)):
            shift = render_scene(dict(scene, objects=[obj_]), 64) - empty  # (S, S, 3)
            colour = np.asarray(PALETTE[obj_["colour"]], dtype=np.float64) - 128.0
            coverage = shift @ colour / (colour @ colour)  # (S, S)
            mask = mask.reshape(side, side)  # [y, x]
            reached = np.zeros_like(mask)
            for y, x in zip(*np.nonzero(coverage >= 0.45)):
                reached[np.ix_(cells_of_pixel(y, 64, side), cells_of_pixel(x, 64, side))] = True
            for y, x in zip(*np.nonzero(coverage >= 0.55)):
                assert mask[np.ix_(cells_of_pixel(y, 64, side), cells_of_pixel(x, 64, side))].all()
            assert not (mask & ~reached).any()  # every masked cell holds a pixel the renderer drew


def test_default_world_masks_are_the_renderers_drawing():
    """The default world's pixels are those its renderer draws at least half in the object's colour: each object
    drawn alone on a black canvas (the private rasteriser, so no noise) and cut at half its brightest channel."""
    rng = np.random.default_rng(11)
    for image_size in (64, 96):
        for _ in range(8):
            scene = sample_scene(rng, image_size)
            drawn = []
            for obj_ in scene["objects"]:
                canvas = np.zeros((image_size, image_size, 3))
                render._draw_object(canvas, obj_)
                colour = np.asarray(PALETTE[obj_["colour"]], dtype=np.float64)
                drawn.append(canvas[:, :, colour.argmax()] >= 0.5 * colour.max())
            assert np.array_equal(WORLDS["default"].object_pixels(scene, image_size), np.stack(drawn))
