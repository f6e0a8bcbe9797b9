"""The words of the generated shapes world, shared by the caption writer and the grounding parser.

Caption grammar (every template obeys it, and the grounding parser relies on it):
- An object is named by a noun phrase ``[article|count] [size] colour shape``: the colour word stands
  right before the shape noun, a size word (if any) right before the colour.
- Plural nouns (``circles``) go with a count word (``two red circles``).
- ``object``/``shape`` and their plurals name objects without saying which (``three shapes``).
- A relation stands between two noun phrases: ``<phrase> <relation words> <phrase>``, read as
  "first phrase is <relation> of the second", e.g. ``a red circle left of a blue star``.
Captions are lower-case words separated by single spaces, at most 15 words, no punctuation.
"""

SHAPES = ("circle", "square", "triangle", "star")
# Canonical shape -> (singular nouns, plural nouns) used in captions.
SHAPE_NOUNS = {
    "circle": (("circle", "disc"), ("circles", "discs")),
    "square": (("square", "box"), ("squares", "boxes")),
    "triangle": (("triangle",), ("triangles",)),
    "star": (("star",), ("stars",)),
}
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES = ("small", "large")
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
GENERIC_NOUNS = (("object", "shape", "thing"), ("objects", "shapes", "things"))
# "an" is the article before a vowel ("an orange star"); it counts one object like "a".
COUNT_WORDS = {1: ("a", "an", "one"), 2: ("two",), 3: ("three",)}
# Canonical relation -> the word sequences that express it between two noun phrases.
RELATION_WORDS = {
    "left": (("left", "of"), ("to", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of")),
    "above": (("above",),),
    "below": (("below",), ("under",)),
}
MAX_CAPTION_WORDS = 15
