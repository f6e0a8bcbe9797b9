"""Caption templates of the harder shapes world: five differently worded captions per scene, in the grammar of
``spec`` with the words of ``hard_spec`` (synonyms chosen at random phrase by phrase).

A caption must name the scene's required objects (``spec.required_objects``: at least ``VISIBLE_THRESHOLD`` of each
visible); an object hidden beyond it is never required but may be named in a stacking relation ("a red circle on top
of a blue star"). Six objects do not fit in ``MAX_CAPTION_WORDS`` words, so a caption names as many as fit, the
template's own first, and says how many required objects it leaves unnamed ("and two other shapes"): a generic
phrase after "other" makes no count claim. Templates:

- list:        "[prefix] a small red circle and a big blue star"
- count:       "[three shapes including] two red circles and one blue star" (counts of required objects)
- horizontal:  "a red circle between a blue star and a green cross", "... left of ...", "... next to ..."
- stack:       "a red circle on top of a blue star", "a blue star partly hidden by a red circle" where one object
               covers another, else a clear "above"/"below", else "next to"
- background:  "a red circle and a blue star on a striped background"

Sizes are said in about half the captions, and dropped where saying them would exceed the word limit.
"""
import math

from core.shapes_world.captions import vertical_relation
from core.shapes_world.hard_spec import HARD_WORLD
from core.shapes_world.spec import ARTICLES, MAX_CAPTION_WORDS, NEAR_REACH, required_objects

_PREFIXES = (("an", "image", "of"), ("a", "picture", "of"), ("a", "scene", "with"), ("a", "drawing", "of"),
             ("a", "photo", "of"), ("a", "view", "of"), ("a", "sketch", "of"), ("there", "is"), ("we", "can", "see"),
             ("this", "image", "shows"), ("here", "we", "have"), ("the", "picture", "shows"), ("a", "canvas", "with"),
             ("an", "illustration", "of"), ("a", "collage", "of"), ("a", "rendering", "of"),
             ("a", "diagram", "with"), ("a", "display", "of"), ("an", "arrangement", "of"), ("you", "can", "see"), ())
_NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
_MANY = "several"  # more than the counts the world's words have: no count claim
_TEXTURE_WORDS = {"plain": ("plain", "blank", "empty"), "striped": ("striped", "stripy", "lined"),
                  "checkered": ("checkered", "chequered", "tiled"), "dotted": ("dotted", "spotted"),
                  "cluttered": ("cluttered", "busy", "messy", "noisy")}
# The background is said after the last phrase, where no relation is read, so "in front of" here claims none.
_BACKGROUND_LEADS = (("on", "a"), ("against", "a"), ("in", "front", "of", "a"), ("set", "against", "a"),
                     ("drawn", "on", "a"), ("placed", "on", "a"), ("lying", "on", "a"))
_BACKGROUND_NOUNS = ("background", "backdrop", "surface", "field")
_OTHER = ("other", "more")  # between a number and a generic noun: the phrase claims no count


def _pick(rng, options):
    """One element of a tuple, chosen with ``rng``."""
    return options[int(rng.integers(len(options)))]


def _phrase(objects, rng, with_size, counted=False):
    """``[article|count] [size] colour noun`` naming ``objects`` (all of one colour and shape); a number word when
    ``counted`` or for several objects, an article for one."""
    first, count = objects[0], len(objects)
    words = []
    if with_size and all(obj["size"] == first["size"] for obj in objects):
        words.append(_pick(rng, HARD_WORLD.size_words[first["size"]]))
    singular, plural = HARD_WORLD.shape_nouns[first["shape"]]
    words += [_pick(rng, HARD_WORLD.colour_words[first["colour"]]), _pick(rng, singular if count == 1 else plural)]
    if counted or count > 1:
        return [_NUMBERS.get(count, _MANY)] + words
    return [ARTICLES[1] if words[0][0] in "aeiou" else ARTICLES[0]] + words


def _relation(rng, name):
    return list(_pick(rng, HARD_WORLD.relation_words[name]))


def _chunks(objects, rng, with_size, skip=()):
    """One chunk ``(words, required objects named)`` per object not in ``skip`` (indices), left to right."""
    return [(_phrase([obj], rng, with_size), 1) for k, obj in enumerate(objects) if k not in skip]


def _list(scene, objects, rng, with_size, image_size):
    return list(_pick(rng, _PREFIXES)), _chunks(objects, rng, with_size), []


def _count(scene, objects, rng, with_size, image_size):
    """Required objects grouped by colour and shape under number words; sometimes led by their total."""
    groups = {}
    for obj in objects:
        groups.setdefault((obj["colour"], obj["shape"]), []).append(obj)
    chunks = [(_phrase(group, rng, with_size, counted=True), len(group)) for group in groups.values()]
    lead = []
    if rng.integers(2):
        lead = [_NUMBERS.get(len(objects), _MANY), _pick(rng, HARD_WORLD.generic_nouns[len(objects) > 1]), "including"]
    return lead, chunks, []


def _near(a, b):
    return math.hypot(a["x"] - b["x"], a["y"] - b["y"]) <= NEAR_REACH * (a["r"] + b["r"])


def _pair_chunk(objects, i, j, words, rng, with_size):
    """The chunk ``<objects[i]> <words> <objects[j]>``, then the other objects' chunks."""
    related = _phrase([objects[i]], rng, with_size) + words + _phrase([objects[j]], rng, with_size)
    return [], [(related, 2)] + _chunks(objects, rng, with_size, skip=(i, j)), []


def _horizontal(scene, objects, rng, with_size, image_size):
    """Three neighbours left to right as "b between a and c", or two as "left of"/"right of"/"next to"."""
    if len(objects) < 2:
        return _stack(scene, objects, rng, with_size, image_size)
    if len(objects) >= 3 and rng.integers(2):
        start = int(rng.integers(len(objects) - 2))
        a, b, c = (_phrase([obj], rng, with_size) for obj in objects[start:start + 3])
        ends = (a, c) if rng.integers(2) else (c, a)
        related = b + _relation(rng, "between") + ends[0] + ["and"] + ends[1]
        return [], [(related, 3)] + _chunks(objects, rng, with_size, skip=range(start, start + 3)), []
    i = int(rng.integers(len(objects) - 1))
    if _near(objects[i], objects[i + 1]) and rng.integers(2):
        return _pair_chunk(objects, i, i + 1, _relation(rng, "next"), rng, with_size)
    if rng.integers(2):
        return _pair_chunk(objects, i + 1, i, _relation(rng, "right"), rng, with_size)
    return _pair_chunk(objects, i, i + 1, _relation(rng, "left"), rng, with_size)


def _stack(scene, objects, rng, with_size, image_size):
    """A covering pair ("on top of", "behind"), the hidden one possibly not required; else a clear vertical pair;
    else a near pair; else the list."""
    everything = scene["objects"]
    covering = [(i, j) for i, obj in enumerate(everything) for j in obj["covers"] if obj in objects]
    if covering:
        i, j = _pick(rng, covering)
        top, hidden = everything[i], everything[j]
        named = [top, hidden] + [obj for obj in objects if obj is not top and obj is not hidden]
        order, name = ((0, 1), "top") if rng.integers(2) else ((1, 0), "behind")
        lead, chunks, tail = _pair_chunk(named, *order, _relation(rng, name), rng, with_size)
        chunks[0] = (chunks[0][0], 1 + (hidden in objects))  # the hidden object may not be a required one
        return lead, chunks, tail
    pairs = [(i, j) for i in range(len(objects)) for j in range(i + 1, len(objects))]
    vertical = [(i, j) for i, j in pairs if vertical_relation(objects[i], objects[j], image_size)]
    if vertical:
        i, j = _pick(rng, vertical)
        return _pair_chunk(objects, i, j, _relation(rng, vertical_relation(objects[i], objects[j], image_size)),
                           rng, with_size)
    near = [(i, j) for i, j in pairs if _near(objects[i], objects[j])]
    if near:
        return _pair_chunk(objects, *_pick(rng, near), _relation(rng, "next"), rng, with_size)
    return _list(scene, objects, rng, with_size, image_size)


def _background(scene, objects, rng, with_size, image_size):
    texture = [_pick(rng, _TEXTURE_WORDS[scene["texture"]]), _pick(rng, _BACKGROUND_NOUNS)]
    return [], _chunks(objects, rng, with_size), list(_pick(rng, _BACKGROUND_LEADS)) + texture


_TEMPLATES = (_list, _count, _horizontal, _stack, _background)


def _others(count, rng):
    """Words saying how many required objects a caption leaves unnamed ("and two other shapes"), none for 0."""
    if not count:
        return []
    return ["and", _NUMBERS.get(count, _MANY), _pick(rng, _OTHER), _pick(rng, HARD_WORLD.generic_nouns[count > 1])]


def _fit(template, scene, objects, rng, image_size):
    """The template's words within ``MAX_CAPTION_WORDS``, naming as many chunks as fit: each count of chunks is
    tried with sizes (in about half of the captions), then without, then without the lead and tail words."""
    with_size = bool(rng.integers(2))
    wordings = [template(scene, objects, rng, sizes, image_size) for sizes in dict.fromkeys((with_size, False))]
    for keep in range(max(len(chunks) for _, chunks, _ in wordings), 0, -1):
        for lead, chunks, tail in wordings:
            words = [word for words, _ in chunks[:keep] for word in ["and"] + words][1:]
            rest = _others(sum(n for _, n in chunks[keep:]), rng)
            for framed in (lead + words + rest + tail, words + rest):
                if len(framed) <= MAX_CAPTION_WORDS:
                    return framed
    raise AssertionError(f"no caption of {template.__name__} fits {MAX_CAPTION_WORDS} words")


def hard_scene_captions(scene, rng, image_size):
    """Five captions of one hard-world scene, one per template.

    Inputs:
    - scene: dict of ``core.shapes_world.hard`` (objects listed left to right, with ``visible`` and ``covers``).
    - rng: np.random.Generator choosing synonyms, articles, pairs and whether sizes are said.
    - image_size: int S, the image side in pixels (vertical relations need a clear gap relative to it).

    Returns:
    - captions: list of 5 lower-case strings of at most MAX_CAPTION_WORDS words.
    """
    objects = required_objects(scene)
    return [" ".join(_fit(template, scene, objects, rng, image_size)) for template in _TEMPLATES]
