"""Caption templates of the generated shapes world: five differently worded captions per scene.

Every caption names every object by colour and shape, follows the grammar of ``shapes_spec`` and has at
most ``MAX_CAPTION_WORDS`` words. Most templates name objects left to right (as COCO captions name the
salient things first), which makes the word order predictable from the image. Templates:

- list:      "a small red circle and a big blue star"
- scene:     "a picture of a red circle and a blue star"
- count:     "two red circles and one blue star"
- left/right "a red circle left of a blue star and a green square"
- vertical:  "a red circle above a blue star" when some pair has a clear vertical gap, else another
             left/right wording ("a blue star to the right of a red circle" names the right one first).

Sizes are said in about half the captions, and dropped where saying them would exceed the word limit.
"""
from core.shapes_world.spec import (
    COUNT_WORDS,
    MAX_CAPTION_WORDS,
    RELATION_WORDS,
    SHAPE_NOUNS,
    SIZE_WORDS,
)

_SCENE_PREFIXES = (("an", "image", "of"), ("a", "picture", "of"), ("a", "scene", "with"))
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
# A vertical relation is stated only when the centres are this far apart (as a share of the image side)
# and the objects' extents do not overlap vertically, so "above" is plain to see.
_MIN_VERTICAL_GAP = 0.2


def _pick(rng, options):
    """One element of a tuple, chosen with ``rng``."""
    return options[int(rng.integers(len(options)))]


def _article(next_word):
    """The indefinite article that goes before ``next_word``."""
    return COUNT_WORDS[1][1] if next_word[0] in "aeiou" else COUNT_WORDS[1][0]


def _noun_phrase(objects, rng, with_size, count_word=None):
    """Words naming ``objects`` (all of one colour and shape): ``[article|count] [size] colour noun``.

    The size is said only when ``with_size`` and all objects share it; without ``count_word`` a single
    object gets an indefinite article and several get their number word.
    """
    first, count = objects[0], len(objects)
    words = []
    if with_size and all(obj["size"] == first["size"] for obj in objects):
        words.append(_pick(rng, SIZE_WORDS[first["size"]]))
    singular, plural = SHAPE_NOUNS[first["shape"]]
    words += [first["colour"], _pick(rng, singular if count == 1 else plural)]
    if count_word is None:
        count_word = _article(words[0]) if count == 1 else _NUMBER_WORDS[count]
    return [count_word] + words


def _join(phrases):
    """Noun phrases joined by "and": ``a and b and c``."""
    words = list(phrases[0])
    for phrase in phrases[1:]:
        words += ["and"] + phrase
    return words


def _relation(rng, name):
    """One wording of the relation ``name`` ("left", "right", "above" or "below")."""
    return list(_pick(rng, RELATION_WORDS[name]))


def vertical_relation(a, b, image_size):
    """ "above" if object ``a`` is clearly above ``b``, "below" if clearly below, else None."""
    gap = b["y"] - a["y"]
    extents = a["r"] + b["r"]
    if abs(gap) < max(_MIN_VERTICAL_GAP * image_size, extents):
        return None
    return "above" if gap > 0 else "below"


def _list_caption(objects, rng, with_size, image_size):
    return _join([_noun_phrase([obj], rng, with_size) for obj in objects])


def _scene_caption(objects, rng, with_size, image_size):
    return list(_pick(rng, _SCENE_PREFIXES)) + _list_caption(objects, rng, with_size, image_size)


def _count_caption(objects, rng, with_size, image_size):
    """Objects of one colour and shape grouped under a number word, groups in left-to-right order."""
    groups = {}
    for obj in objects:
        groups.setdefault((obj["colour"], obj["shape"]), []).append(obj)
    return _join([_noun_phrase(group, rng, with_size, _NUMBER_WORDS[len(group)])
                  for group in groups.values()])


def _horizontal_caption(objects, rng, with_size, image_size, right_first=False):
    """A left/right relation between neighbours; a third object joins with "and"."""
    phrases = [_noun_phrase([obj], rng, with_size) for obj in objects]
    if len(phrases) == 1:
        return phrases[0] + ["on", "its", "own"]
    if right_first and len(phrases) == 2:
        return phrases[1] + _relation(rng, "right") + phrases[0]
    pair_start = int(rng.integers(len(phrases) - 1))
    related = phrases[pair_start] + _relation(rng, "left") + phrases[pair_start + 1]
    others = phrases[:pair_start] + [related] + phrases[pair_start + 2:]
    return _join(others)


def _vertical_caption(objects, rng, with_size, image_size):
    """A clear above/below relation, left object named first; else a different left/right wording."""
    pairs = [(i, j) for i in range(len(objects)) for j in range(i + 1, len(objects))
             if vertical_relation(objects[i], objects[j], image_size)]
    if not pairs:
        return _horizontal_caption(objects, rng, with_size, image_size, right_first=True)
    i, j = _pick(rng, pairs)
    name = vertical_relation(objects[i], objects[j], image_size)
    phrases = [_noun_phrase([obj], rng, with_size) for obj in objects]
    related = phrases[i] + _relation(rng, name) + phrases[j]
    rest = [k for k in range(len(objects)) if k not in (i, j)]
    if rest and rest[0] < i:
        return _join([phrases[rest[0]], related])
    return _join([related] + [phrases[k] for k in rest])


_TEMPLATES = (_list_caption, _scene_caption, _count_caption, _horizontal_caption, _vertical_caption)


def scene_captions(scene, rng, image_size):
    """Five captions of one scene, one per template.

    Inputs:
    - scene: dict with "objects" listed left to right (see ``core.shapes_world.render``).
    - rng: np.random.Generator choosing synonyms, articles and whether sizes are said.
    - image_size: int S, the image side in pixels (vertical relations need a clear gap relative to it).

    Returns:
    - captions: list of 5 lower-case strings of at most MAX_CAPTION_WORDS words.
    """
    captions = []
    for template in _TEMPLATES:
        with_size = bool(rng.integers(2))
        words = template(scene["objects"], rng, with_size, image_size)
        if len(words) > MAX_CAPTION_WORDS:
            words = template(scene["objects"], rng, False, image_size)
        captions.append(" ".join(words))
    return captions
