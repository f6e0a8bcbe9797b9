"""The harder shapes world's scenes, pixels and captions: deterministic by seed, overlapping objects with occlusion
bookkeeping, textured backgrounds, canvases too small for the objects refused, and captions whose every claim the
grounding parser finds true, in a vocabulary of at least 150 words."""
import numpy as np
import pytest

from core.data.layout import SPECIAL_TOKENS
from core.data.vocab import build_vocab
from core.evaluation.grounding import grounding_metrics, missed_pairs, parse_caption
from core.runtime.errors import UserError
from core.shapes_world import hard
from core.shapes_world.hard_captions import hard_scene_captions
from core.shapes_world.hard_spec import HARD_WORLD
from core.shapes_world.spec import MAX_CAPTION_WORDS


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


def captioned(seed, count, size=96):
    """``count`` scenes and their five captions each, from one seed."""
    rng = np.random.default_rng(seed)
    scenes = [hard.sample_scene(rng, size) for _ in range(count)]
    return scenes, [hard_scene_captions(scene, rng, size) for scene in scenes]


def test_the_words_name_the_worlds_shapes_colours_and_sizes_in_order():
    assert HARD_WORLD.shapes == hard.SHAPES and HARD_WORLD.colours == hard.COLOURS and HARD_WORLD.sizes == hard.SIZES
    assert HARD_WORLD.max_objects == hard.MAX_OBJECTS and max(HARD_WORLD.count_words) == 4


def test_captions_are_deterministic_by_seed_five_per_scene_and_short():
    scenes, captions = captioned(5, 40)
    assert captioned(5, 40) == (scenes, captions) and captioned(6, 40)[1] != captions
    for texts in captions:
        assert len(texts) == 5 and len(set(texts)) > 1
        assert all(1 <= len(text.split()) <= MAX_CAPTION_WORDS and text == text.lower() for text in texts)


def test_every_claim_of_the_reference_captions_is_true():
    scenes, captions = captioned(7, 150, size=128)
    predictions = {(i, k): text for i, texts in enumerate(captions) for k, text in enumerate(texts)}
    figures = grounding_metrics(predictions, {(i, k): scenes[i] for i, k in predictions}, HARD_WORLD)
    assert figures["object_precision"] == 1.0 and figures["hallucination_rate"] == 0.0
    for kind in ("count", "relation", "size"):
        assert figures[f"{kind}_accuracy"] == 1.0 and figures[f"n_{kind}_claims"] > 50, kind
    relations = {r.relation for text in predictions.values() for r in parse_caption(text, HARD_WORLD).relations}
    assert relations == set(HARD_WORLD.relation_words)


def test_a_caption_leaves_a_required_object_out_only_to_say_how_many_it_left():
    scenes, captions = captioned(8, 80)
    for scene, texts in zip(scenes, captions):
        for text in texts:
            if missed_pairs(parse_caption(text, HARD_WORLD), scene["objects"]):
                assert {"other", "more"} & set(text.split()), text


def test_an_object_hidden_beyond_the_threshold_is_never_required_in_captions():
    objects = [obj("square", "green", 48.0, 48.0, 12.0, 0), obj("circle", "red", 50.0, 48.0, 16.0, 1),
               obj("star", "blue", 85.0, 20.0, 8.0, 2)]
    hard._occlusion(objects, 96)
    scene = {"background": [200, 200, 200], "texture": "striped", "noise_seed": 0, "objects": objects}
    rng = np.random.default_rng(0)
    texts = [text for _ in range(20) for text in hard_scene_captions(scene, rng, 96)]
    assert all(not missed_pairs(parse_caption(text, HARD_WORLD), objects) for text in texts)
    named = [m for text in texts for m in parse_caption(text, HARD_WORLD).mentions]
    assert ("green", "square") in {(m.colour, m.shape) for m in named}       # named under the circle, not required
    assert all(not ({"other", "more"} & set(text.split())) for text in texts)


def test_the_vocabulary_of_a_normal_size_caption_sample_has_150_words():
    _, captions = captioned(9, 1000)
    _, idx_to_word = build_vocab([text for texts in captions for text in texts])
    assert len(idx_to_word) - len(SPECIAL_TOKENS) >= 150
