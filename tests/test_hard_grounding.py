"""Grounding and pair recall on hand-made scenes of the harder world: its synonyms, shapes, colours, counts up to
four and relations are read from its words (and not from the default world's), objects hidden beyond the visibility
threshold are not required, and naming them is no hallucination."""
import math

import pytest

from core.evaluation.composition import pair_metrics, stated_pairs
from core.evaluation.grounding import Mention, caption_findings, grounding_metrics, parse_caption
from core.evaluation.relations import relation_holds
from core.shapes_world.hard_spec import HARD_WORLD


def obj(colour, shape, x, y, size="medium", r=8.0, visible=1.0, covers=()):
    return {"shape": shape, "colour": colour, "size": size, "x": float(x), "y": float(y), "r": r,
            "visible": visible, "covers": list(covers)}


# A navy hexagon mostly hidden under a grey cross (the cross covers object 1), a pink diamond far right, two lime
# pentagons at the bottom left.
SCENE = {"objects": [obj("lime", "pentagon", 10, 90), obj("navy", "hexagon", 40, 40, visible=0.2),
                     obj("grey", "cross", 44, 42, size="large", r=14.0, covers=[1]), obj("lime", "pentagon", 60, 95),
                     obj("pink", "diamond", 110, 30, size="small", r=5.0)]}


def parsed(caption):
    return parse_caption(caption, HARD_WORLD)


@pytest.mark.parametrize("caption, mention", [
    ("a scarlet disk", Mention("red", "circle", count=1)),
    ("two gray pluses", Mention("grey", "cross", count=2, counted=True)),
    ("four figures", Mention(None, None, count=4, counted=True)),
    ("a huge turquoise rhombus", Mention("teal", "diamond", "large", 1)),
    ("a midsize violet hexagon", Mention("purple", "hexagon", "medium", 1)),
    ("three tiny chartreuse blocks", Mention("lime", "square", "small", 3, True)),
])
def test_synonyms_plurals_and_counts_read_as_the_canonical_attributes(caption, mention):
    assert parsed(caption).mentions == (mention,)


def test_the_default_worlds_words_do_not_read_the_hard_worlds():
    assert parse_caption("a scarlet hexagon").mentions == ()
    assert parse_caption("a scarlet disc").mentions == (Mention(None, "circle"),)  # "scarlet": an unknown word


def test_the_new_relations_are_read_and_checked_against_the_scene():
    objects = SCENE["objects"]
    cases = {"a grey cross on top of a navy hexagon": True, "a navy hexagon partly hidden by a silver plus": True,
             "a navy hexagon on top of a grey cross": False, "a grey cross behind a navy hexagon": False,
             "a grey cross next to a navy hexagon": True, "a grey cross beside a pink diamond": False,
             "a grey cross between a lime pentagon and a pink diamond": True,
             "a pink diamond between a lime pentagon and a grey cross": False,
             "a lime pentagon to the left of a pink diamond": True, "a pink diamond higher than a lime pentagon": True}
    for caption, truth in cases.items():
        (relation,) = parsed(caption).relations
        assert relation_holds(relation, objects) == truth, caption
    between = parsed("a grey cross between a lime pentagon and a pink diamond and two other shapes").relations[0]
    assert (between.relation, between.b.shape, between.c.shape) == ("between", "pentagon", "diamond")
    assert len(parsed("a grey cross between a lime pentagon").relations) == 1
    assert not relation_holds(parsed("a grey cross between a lime pentagon").relations[0], objects)


def test_a_hidden_object_is_not_required_and_naming_it_is_no_hallucination():
    captions = {0: "a grey cross and two lime pentagons and a pink diamond",
                1: "a grey cross on top of a navy hexagon and two lime pentagons and a pink diamond",
                2: "a grey cross and a red hexagon"}
    figures = grounding_metrics(captions, {i: SCENE for i in captions}, HARD_WORLD)
    assert figures["object_recall"] == pytest.approx((3 + 3 + 1) / 9)
    assert figures["hallucination_rate"] == pytest.approx(1 / 3)   # only the red hexagon is not there
    assert figures["relation_accuracy"] == 1.0
    assert caption_findings(captions[0], SCENE["objects"], HARD_WORLD)["missed"] == []
    assert caption_findings(captions[2], SCENE["objects"], HARD_WORLD)["missed"] == ["lime pentagon", "pink diamond"]


def test_counts_may_count_a_hidden_object_or_leave_it_out():
    scene = {"objects": SCENE["objects"] + [obj("navy", "hexagon", 100, 100)]}
    captions = {0: "one navy hexagon", 1: "two navy hexagons", 2: "three navy hexagons", 3: "four shapes",
                4: "two lime pentagons", 5: "one lime pentagon"}
    figures = grounding_metrics(captions, {i: scene for i in captions}, HARD_WORLD)
    assert figures["n_count_claims"] == 6 and figures["count_accuracy"] == pytest.approx(3 / 6)
    marks = caption_findings("three navy hexagons", scene["objects"], HARD_WORLD)["marks"]
    assert [mark["kind"] for mark in marks] == ["count"]


def test_pair_recall_reads_synonyms_and_skips_hidden_objects():
    assert stated_pairs("a huge scarlet disk and two gray pluses", HARD_WORLD) == {
        ("red", "circle"), ("large", "circle"), ("grey", "cross")}
    held_out = {("navy", "hexagon"), ("lime", "pentagon")}
    figures = pair_metrics({0: "two chartreuse pentagons", 1: "a navy hexagon"}, {0: SCENE, 1: SCENE}, held_out,
                           world=HARD_WORLD)
    assert figures["n_novel_occurrences"] == 4               # two pentagons per caption; the hidden hexagon is not one
    assert figures["novel_pair_recall"] == pytest.approx(2 / 4)
    assert figures["novel_pair_precision"] == 1.0            # the hexagon is there, hidden
    empty = pair_metrics({0: "a pink diamond"}, {0: {"objects": [SCENE["objects"][1]]}}, held_out, world=HARD_WORLD)
    assert empty["n_novel_occurrences"] == 0 and math.isnan(empty["novel_pair_recall"])
