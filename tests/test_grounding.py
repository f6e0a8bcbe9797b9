"""Tests for core.evaluation.grounding: the caption parser and the scene-grounded metrics."""
import math

import pytest

from core.evaluation.grounding import Mention, Relation, grounding_metrics, parse_caption
from core.runtime.errors import UserError


def obj(colour, shape, x, y, size="small"):
    return {"shape": shape, "colour": colour, "size": size, "x": float(x), "y": float(y), "r": 5.0}


# Two red circles on the left, a large blue star at the top right, a green square at the bottom.
SCENE = {"objects": [obj("red", "circle", 10, 30), obj("red", "circle", 20, 50),
                     obj("blue", "star", 50, 10, size="large"), obj("green", "square", 40, 60)]}


@pytest.mark.parametrize("caption, mentions", [
    ("a red circle", [Mention("red", "circle", count=1)]),
    ("a red disc", [Mention("red", "circle", count=1)]),
    ("two blue boxes", [Mention("blue", "square", count=2, counted=True)]),
    ("three shapes", [Mention(None, None, count=3, counted=True)]),
    ("one green thing", [Mention("green", None, count=1, counted=True)]),
    ("a small yellow triangle", [Mention("yellow", "triangle", "small", 1)]),
    ("a big purple star", [Mention("purple", "star", "large", 1)]),
    ("a little square", [Mention(None, "square", "small", 1)]),
    ("an orange circle", [Mention("orange", "circle", count=1)]),
    ("red circles and stars", [Mention("red", "circle"), Mention(None, "star")]),
    ("two objects", [Mention(None, None, count=2, counted=True)]),
    ("red red circle circle <UNK>", [Mention("red", "circle"), Mention(None, "circle")]),
    ("", []),
])
def test_parse_mentions(caption, mentions):
    assert list(parse_caption(caption).mentions) == mentions


@pytest.mark.parametrize("caption, relation", [
    ("a red circle left of a blue star", "left"),
    ("a red circle to the left of a blue star", "left"),
    ("a red circle to the right of a blue star", "right"),
    ("a red circle right of a blue star", "right"),
    ("a red circle above a blue star", "above"),
    ("a red circle below a blue star", "below"),
    ("a red circle under a blue star", "below"),
    ("a red circle is left of the blue star", "left"),
])
def test_parse_relations(caption, relation):
    parsed = parse_caption(caption)
    assert parsed.relations == (Relation(parsed.mentions[0], relation, parsed.mentions[1]),)
    assert (parsed.mentions[0].colour, parsed.mentions[0].shape) == ("red", "circle")
    assert (parsed.mentions[1].colour, parsed.mentions[1].shape) == ("blue", "star")


def test_parse_no_relation_without_relation_words():
    parsed = parse_caption("a red circle and a blue star")
    assert parsed.relations == ()
    assert len(parsed.mentions) == 2


def test_parse_relation_links_neighbouring_phrases_only():
    parsed = parse_caption("two red circles and a green square above a blue star")
    assert len(parsed.relations) == 1
    claim = parsed.relations[0]
    assert (claim.a.shape, claim.relation, claim.b.shape) == ("square", "above", "star")


def test_perfect_caption_scores_one():
    caption = "two red circles left of a large blue star and a green square"
    m = grounding_metrics({0: caption}, {0: SCENE})
    assert m["object_precision"] == m["object_recall"] == m["object_f1"] == 1.0
    assert m["hallucination_rate"] == 0.0
    assert (m["count_accuracy"], m["n_count_claims"]) == (1.0, 1)
    assert (m["relation_accuracy"], m["n_relation_claims"]) == (1.0, 1)
    assert (m["size_accuracy"], m["n_size_claims"]) == (1.0, 1)


def test_hallucinated_object_is_counted():
    m = grounding_metrics({0: "a red circle and a yellow triangle", 1: "a blue star"},
                          {0: SCENE, 1: SCENE})
    assert m["hallucination_rate"] == 0.5
    assert m["object_precision"] == pytest.approx(2 / 3)  # red circle, blue star right; triangle not
    assert m["object_recall"] == pytest.approx(2 / 6)  # two of the three pairs of each scene
    assert m["object_f1"] == pytest.approx(2 * (2 / 3) * (1 / 3) / (2 / 3 + 1 / 3))
    assert m["n_object_mentions"] == 3 and m["n_scene_pairs"] == 6


def test_mention_without_colour_counts_for_precision_not_recall():
    m = grounding_metrics({0: "a circle and a triangle"}, {0: SCENE})
    assert m["object_precision"] == 0.5
    assert m["object_recall"] == 0.0
    assert m["hallucination_rate"] == 1.0


def test_wrong_colour_is_a_hallucination():
    m = grounding_metrics({0: "a blue circle"}, {0: SCENE})
    assert m["object_precision"] == 0.0 and m["hallucination_rate"] == 1.0


def test_counts():
    scenes = {i: SCENE for i in range(5)}
    m = grounding_metrics({0: "two red circles", 1: "three red circles", 2: "four shapes",
                           3: "three shapes", 4: "one blue star"}, scenes)
    # "four" is no count word, so caption 2 makes no claim; 3 claims of 4 shapes is wrong.
    assert m["n_count_claims"] == 4
    assert m["count_accuracy"] == 0.5


def test_article_is_not_a_count_claim():
    m = grounding_metrics({0: "a red circle"}, {0: SCENE})
    assert m["n_count_claims"] == 0 and math.isnan(m["count_accuracy"])


def test_relations():
    captions = {0: "a red circle left of a blue star",      # right
                1: "a blue star left of a red circle",      # wrong: the star is rightmost
                2: "a blue star above a green square",      # right
                3: "a green square above a blue star",      # wrong
                4: "a red circle below a red circle",       # right: two different red circles
                5: "a yellow star right of a red circle"}   # wrong: no yellow star
    m = grounding_metrics(captions, {i: SCENE for i in captions})
    assert m["n_relation_claims"] == 6
    assert m["relation_accuracy"] == 0.5


def test_relation_needs_two_different_objects():
    scene = {"objects": [obj("red", "circle", 10, 10), obj("blue", "star", 30, 30)]}
    m = grounding_metrics({0: "a red circle left of a red circle"}, {0: scene})
    assert m["relation_accuracy"] == 0.0


def test_sizes():
    m = grounding_metrics({0: "a small red circle", 1: "a small blue star", 2: "a large purple star"},
                          {i: SCENE for i in range(3)})
    # The purple star is a hallucination, not a size claim.
    assert m["n_size_claims"] == 2 and m["size_accuracy"] == 0.5


def test_no_claims_gives_nan_not_error():
    m = grounding_metrics({0: "something else entirely"}, {0: SCENE})
    assert math.isnan(m["object_precision"]) and m["object_recall"] == 0.0
    assert math.isnan(m["object_f1"]) and m["hallucination_rate"] == 0.0


def test_unknown_id_is_a_user_error():
    with pytest.raises(UserError, match="no scene"):
        grounding_metrics({"x": "a red circle"}, {0: SCENE})
