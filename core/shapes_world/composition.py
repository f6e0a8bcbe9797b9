"""Attribute-shape pairs of the shapes world, and the seeded choice of pairs held out of training.

A pair is ``(attribute, shape)`` with the attribute a colour (``("red", "star")``) or a size
(``("small", "circle")``); colour and size words are disjoint, so the attribute alone says which kind it is.
Every object holds two pairs, its colour-shape and its size-shape pair. The held-out pairs never occur in the
train, val or test scenes; the novel-composition split holds scenes with at least one of them (after Nikolaus et
al. 2019, "Compositional Generalization in Image Captioning", which holds adjective-noun pairs out of COCO).
Each shape and each attribute is still seen in training with other partners: a colour is held out with one shape
at most, a shape loses at most ceil(colour pairs / shapes) colours, and a shape keeps at least one size.
"""
import math

from core.shapes_world.spec import DEFAULT_WORLD, required_objects


def max_held_out(world=DEFAULT_WORLD):
    """The most pairs of each kind that can be held out of ``world`` under the rules of the module docstring."""
    return {"colour": len(world.colours), "size": len(world.shapes) * (len(world.sizes) - 1)}


def pair_kind(attribute, world=DEFAULT_WORLD):
    """ "colour" or "size": the kind of pair a canonical attribute of ``world`` makes."""
    if attribute in world.colours:
        return "colour"
    if attribute in world.sizes:
        return "size"
    raise ValueError(f"{attribute!r} is neither a colour {world.colours} nor a size {world.sizes}")


def object_pairs(obj):
    """The two pairs a scene object holds: (colour, shape) and (size, shape)."""
    return (obj["colour"], obj["shape"]), (obj["size"], obj["shape"])


def holds_any(scene, pairs):
    """True iff some required object of ``scene`` (one a caption must name) holds one of ``pairs``."""
    return any(not pairs.isdisjoint(object_pairs(obj)) for obj in required_objects(scene))


def _greedy(candidates, count, shape_cap, unique_attribute):
    """The first ``count`` candidates, in their given order, that keep each shape within ``shape_cap`` picks
    and, with ``unique_attribute``, each attribute to one pick."""
    chosen, per_shape, taken = [], {}, set()
    for attribute, shape in candidates:
        if len(chosen) == count:
            break
        if per_shape.get(shape, 0) < shape_cap and not (unique_attribute and attribute in taken):
            chosen.append((attribute, shape))
            per_shape[shape] = per_shape.get(shape, 0) + 1
            taken.add(attribute)
    return chosen


def choose_held_out_pairs(rng, colour_pairs, size_pairs, world=DEFAULT_WORLD):
    """A seeded set of held-out pairs of ``world``'s shapes, colours and sizes obeying the rules of the module
    docstring.

    Inputs:
    - rng: np.random.Generator, the only source of randomness.
    - colour_pairs, size_pairs: how many pairs of each kind, at most ``max_held_out(world)`` of that kind.

    Returns:
    - pairs: sorted tuple of (attribute, shape).
    """
    limit = max_held_out(world)
    if not 0 <= colour_pairs <= limit["colour"] or not 0 <= size_pairs <= limit["size"]:
        raise ValueError(f"held-out pairs: colour 0..{limit['colour']}, size 0..{limit['size']}, "
                         f"got {colour_pairs} and {size_pairs}")
    shapes = world.shapes
    colour_candidates = [(c, s) for c in world.colours for s in shapes]
    size_candidates = [(z, s) for z in world.sizes for s in shapes]
    # Greedy picking in a shuffled order never gets stuck: every colour pairs with every shape, and the caps
    # leave room for all the pairs asked for.
    colour_chosen = _greedy([colour_candidates[i] for i in rng.permutation(len(colour_candidates))], colour_pairs,
                            math.ceil(colour_pairs / len(shapes)), unique_attribute=True)
    size_chosen = _greedy([size_candidates[i] for i in rng.permutation(len(size_candidates))], size_pairs,
                          len(world.sizes) - 1, unique_attribute=False)
    return tuple(sorted(colour_chosen + size_chosen))


def pair_words(pair, world=DEFAULT_WORLD):
    """The manifest's record of a pair of ``world``: its kind and the words captions use for it, synonyms and
    plurals included.

    In a caption the attribute word stands before the noun, a size word before the colour ("a small red circle").
    """
    attribute, shape = pair
    kind = pair_kind(attribute, world)
    singular, plural = world.shape_nouns[shape]
    words = world.size_words if kind == "size" else world.colour_words
    return {"pair": [attribute, shape], "kind": kind, "attribute_words": list(words[attribute]),
            "shape_words": [*singular, *plural]}
