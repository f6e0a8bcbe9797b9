"""The harder shapes world's scenes and pixels: deterministic by seed, overlapping objects with occlusion
bookkeeping, textured backgrounds, and canvases too small for the objects refused."""
import numpy as np
import pytest

from core.runtime.errors import UserError
from core.shapes_world import hard


def scenes(seed, count=6, size=96):
    rng = np.random.default_rng(seed)
    return [hard.sample_scene(rng, size) for _ in range(count)]


def test_scenes_and_pixels_are_deterministic_by_seed():
    first, again, other = scenes(0), scenes(0), scenes(1)
    assert first == again and first != other
    for scene in first:
        assert np.array_equal(hard.render_scene(scene, 96), hard.render_scene(scene, 96))
    assert not np.array_equal(hard.render_scene(first[0], 96), hard.render_scene(other[0], 96))


def test_scenes_hold_two_to_six_objects_inside_left_to_right():
    for scene in scenes(2, count=30, size=128):
        objects = scene["objects"]
        assert hard.MIN_OBJECTS <= len(objects) <= hard.MAX_OBJECTS
        assert [o["x"] for o in objects] == sorted(o["x"] for o in objects)
        assert sorted(o["z"] for o in objects) == list(range(len(objects)))
        assert all(0 < o["x"] < 128 and 0 < o["y"] < 128 and 0 <= o["visible"] <= 1 for o in objects)
        assert scene["texture"] in hard.TEXTURES


def obj(shape, colour, x, y, r, z):
    return {"shape": shape, "colour": colour, "size": "large", "x": x, "y": y, "r": r, "angle": 0.0, "z": z}


def test_an_object_hidden_beyond_the_threshold_is_not_required():
    objects = [obj("square", "green", 48.0, 48.0, 12.0, 0), obj("circle", "red", 50.0, 48.0, 16.0, 1),
               obj("star", "blue", 85.0, 20.0, 8.0, 2)]
    hard._occlusion(objects, 96)
    square, circle, star = objects
    assert square["visible"] < 0.1 and circle["visible"] == star["visible"] == 1.0
    assert circle["covers"] == [0] and square["covers"] == [] and star["covers"] == []
    scene = {"objects": objects}
    assert hard.required_objects(scene) == [circle, star]
    assert hard.required_objects(scene, threshold=0.0) == objects
    pixels = hard.render_scene({"background": [200, 200, 200], "texture": "plain", "noise_seed": 0,
                                "objects": objects}, 96)
    assert np.abs(pixels[48, 50].astype(int) - hard.PALETTE["red"]).max() < 25   # the circle is drawn on top


def test_partly_hidden_objects_occur_in_sampled_scenes():
    visible = [o["visible"] for scene in scenes(3, count=40, size=96) for o in scene["objects"]]
    assert min(visible) < hard.VISIBLE_THRESHOLD and np.mean(np.array(visible) < 1) > 0.05


@pytest.mark.parametrize("texture", hard.TEXTURES)
def test_every_texture_renders(texture):
    scene = dict(scenes(4, count=1)[0], texture=texture)
    image = hard.render_scene(scene, 96)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8


def test_a_canvas_that_cannot_hold_the_objects_is_refused():
    hard.check_canvas(96)
    hard.check_canvas(128)
    for size, count in ((64, 6), (100, 6), (96, 12)):
        with pytest.raises(UserError, match="--image-size"):
            hard.check_canvas(size, count)
