"""The words of the generated shapes world, shared by the caption writer and the grounding parser.

Caption grammar (every template obeys it, and the grounding parser relies on it):
- An object is named by a noun phrase ``[article|count] [size] colour shape``: the colour word stands
  right before the shape noun, a size word (if any) right before the colour.
- Plural nouns (``circles``) go with a count word (``two red circles``).
- ``object``/``shape`` and their plurals name objects without saying which (``three shapes``).
- A relation stands between two noun phrases: ``<phrase> <relation words> <phrase>``, read as
  "first phrase is <relation> of the second", e.g. ``a red circle left of a blue star``.
Captions are lower-case words separated by single spaces, at most 15 words, no punctuation.

The harder world (``hard_spec``) keeps this grammar with more words: colour synonyms, counts up to four, and the
relations "next to", "on top of", "behind" and the three-phrase ``<phrase> between <phrase> and <phrase>``.
``WorldSpec`` holds one world's words; ``DEFAULT_WORLD`` is the default world's.
"""
from dataclasses import dataclass
from functools import cached_property

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
VISIBLE_THRESHOLD = 0.5  # an object with less of itself visible (hidden by others) is not required in captions
ARTICLES = ("a", "an")  # count words that say one object without claiming a count
# "next to" holds when the centres are at most this many times the sum of the two radii apart.
NEAR_REACH = 2.5


def required_objects(scene, threshold=VISIBLE_THRESHOLD):
    """The objects a caption must name: those with at least ``threshold`` of themselves visible (every object of the
    default world, which records no ``visible``: its objects never overlap)."""
    return [obj for obj in scene["objects"] if obj.get("visible", 1.0) >= threshold]


@dataclass(frozen=True)
class WorldSpec:
    """The words and object limits of one generated world: what its captions say, what its grounding parser reads
    and what its encoder's heads predict. Canonical names are the dict keys, in their canonical order."""
    name: str
    shape_nouns: dict      # shape -> (singular nouns, plural nouns)
    colour_words: dict     # colour -> the words that say it
    size_words: dict       # size -> the words that say it
    count_words: dict      # number -> the words that say it (ARTICLES among those of 1)
    relation_words: dict   # relation -> its word sequences (grammar above)
    max_objects: int       # the most objects a scene holds
    generic_nouns: tuple = GENERIC_NOUNS

    @property
    def shapes(self):
        return tuple(self.shape_nouns)

    @property
    def colours(self):
        return tuple(self.colour_words)

    @property
    def sizes(self):
        return tuple(self.size_words)

    @cached_property
    def noun_shapes(self):
        """Noun -> canonical shape, singular and plural alike; generic nouns ("things") -> None."""
        nouns = {word: shape for shape, forms in self.shape_nouns.items() for words in forms for word in words}
        nouns.update({word: None for words in self.generic_nouns for word in words})
        return nouns

    @cached_property
    def colour_of_word(self):
        return {word: colour for colour, words in self.colour_words.items() for word in words}

    @cached_property
    def size_of_word(self):
        return {word: size for size, words in self.size_words.items() for word in words}

    @cached_property
    def numerals(self):
        """Count word -> number, for the words that claim a count (not the articles)."""
        return {word: n for n, words in self.count_words.items() for word in words if word not in ARTICLES}

    @cached_property
    def relation_sequences(self):
        """(word sequence, relation), longest first, so that "to the left of" is not read as a bare "left of"."""
        return sorted(((tuple(seq), rel) for rel, seqs in self.relation_words.items() for seq in seqs),
                      key=lambda item: -len(item[0]))


DEFAULT_WORLD = WorldSpec("default", SHAPE_NOUNS, {colour: (colour,) for colour in COLOURS}, SIZE_WORDS,
                          COUNT_WORDS, RELATION_WORDS, max_objects=3)
