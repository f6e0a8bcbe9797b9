"""The words of the harder shapes world (``hard``): the default world's grammar (``spec``) with synonyms for most
colours, shapes and sizes, counts up to four and more relations.

Relations, each read "first phrase <relation> second phrase" and checked against the scene by the grounding parser:
left/right/above/below as in the default world; "next" (next to, beside, near) when the centres are close
(``NEAR_REACH``); "top" (on top of, over, covering) when the first object hides part of the second (the scene's
``covers``), "behind" (behind, partly hidden by) the other way round; "between" takes a third phrase,
``<a> between <b> and <c>``, and holds when a's centre lies between b's and c's left to right.
"""
from core.shapes_world import hard
from core.shapes_world.spec import GENERIC_NOUNS, WorldSpec

_SHAPE_NOUNS = {
    "circle": (("circle", "disc", "disk"), ("circles", "discs", "disks")),
    "square": (("square", "box", "block"), ("squares", "boxes", "blocks")),
    "triangle": (("triangle",), ("triangles",)),
    "star": (("star",), ("stars",)),
    "diamond": (("diamond", "rhombus"), ("diamonds", "rhombuses")),
    "pentagon": (("pentagon",), ("pentagons",)),
    "hexagon": (("hexagon",), ("hexagons",)),
    "cross": (("cross", "plus"), ("crosses", "pluses")),
}
_COLOUR_WORDS = {
    "red": ("red", "scarlet"), "pink": ("pink", "rose"), "orange": ("orange", "tangerine"),
    "brown": ("brown", "chocolate"),
    "yellow": ("yellow", "golden", "lemon"), "lime": ("lime", "chartreuse"), "green": ("green", "emerald"),
    "teal": ("teal", "turquoise"), "blue": ("blue", "cobalt"), "navy": ("navy",), "purple": ("purple", "violet"),
    "grey": ("grey", "gray", "silver"),
}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("medium", "midsize", "average"),
               "large": ("large", "big", "huge", "giant")}
_RELATION_WORDS = {
    "left": (("left", "of"), ("to", "the", "left", "of"), ("on", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of"), ("on", "the", "right", "of")),
    "above": (("above",), ("higher", "than")),
    "below": (("below",), ("beneath",), ("lower", "than")),
    "next": (("next", "to"), ("beside",), ("near",), ("close", "to")),
    "between": (("between",),),
    "top": (("on", "top", "of"), ("over",), ("covering",), ("in", "front", "of")),
    "behind": (("behind",), ("partly", "hidden", "by"), ("half", "hidden", "by")),
}

HARD_WORLD = WorldSpec("hard", _SHAPE_NOUNS, _COLOUR_WORDS, _SIZE_WORDS,
                       {1: ("a", "an", "one"), 2: ("two",), 3: ("three",), 4: ("four",)}, _RELATION_WORDS,
                       max_objects=hard.MAX_OBJECTS,
                       generic_nouns=(GENERIC_NOUNS[0] + ("figure",), GENERIC_NOUNS[1] + ("figures",)))
