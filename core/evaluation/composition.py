"""Compositional generalisation on the shapes world, measured exactly from the scenes: how often captions state the
attribute-shape pairs of the objects (``core.shapes_world.composition``), above all the pairs held out of training
(the recall of held-out adjective-noun pairs of Nikolaus et al. 2019, "Compositional Generalization in Image
Captioning").

Captions are read by the grounding parser (``core.evaluation.grounding.parse_caption``), so synonyms ("disc",
"little"), plurals and counted phrases ("two red stars") count as they do there. A phrase states its colour-shape
pair when it names a colour and a shape, its size-shape pair when it names a size and a shape.

For a set of target pairs T, the held-out ones ("novel") or the seen ones ("seen"), and captions of their scenes
(every key below is prefixed with T):
- pair_recall: over the occurrences (required object, target pair it holds; an object hidden beyond the harder
  world's visibility threshold is not required), the share whose pair the caption states; one
  phrase recalls every object holding its pair ("two red stars" both red stars, "a red star" too: a count is no
  part of a pair). By kind: colour_pair_recall, size_pair_recall (reference captions say sizes in about half of
  them, so size-shape recall is bounded by the references' own, which the evaluation loop reports beside it).
- pair_precision: over the distinct target pairs each caption states, the share that some object of its scene holds.
- substitution_rate: over the occurrences, the share whose caption states instead a pair seen in training, of
  the same kind and sharing the attribute or the shape, that no object of the scene holds ("a red circle" for a
  red star in a scene without red circles).
Each share comes with its 95% Wilson interval (``*_low``, ``*_high``; objects are counted as independent, although
those of one image are not quite) and the ``n_*`` counts behind it; a share of nothing is NaN.
"""
from collections import Counter

from core.evaluation.grounding import parse_caption
from core.evaluation.relation_probe import wilson_interval
from core.runtime.errors import UserError
from core.shapes_world.composition import object_pairs, pair_kind
from core.shapes_world.spec import DEFAULT_WORLD, required_objects


def stated_pairs(caption, world=DEFAULT_WORLD):
    """The distinct (attribute, shape) pairs a caption in ``world``'s words states, colour-shape and size-shape
    alike."""
    pairs = set()
    for mention in parse_caption(caption, world).mentions:
        if mention.shape is not None:
            pairs.update((attribute, mention.shape) for attribute in (mention.colour, mention.size)
                         if attribute is not None)
    return pairs


def _substitutes(pair, stated, true_pairs, held_out, world):
    """True iff ``stated`` holds a false, seen pair of ``pair``'s kind sharing its attribute or its shape."""
    kind = pair_kind(pair[0], world)
    return any(other not in true_pairs and other not in held_out and pair_kind(other[0], world) == kind
               and (other[0] == pair[0] or other[1] == pair[1]) for other in stated)


def _tallies(caption, objects, held_out, novel, world):
    """Counts of one caption against its scene's objects, for the target pairs (held out iff ``novel``); only the
    required objects' pairs are to be recalled, any object's pair may be stated."""
    stated = stated_pairs(caption, world)
    true_pairs = {pair for obj in objects for pair in object_pairs(obj)}
    counts = Counter()
    for obj in required_objects({"objects": objects}):
        for pair in object_pairs(obj):
            if (pair in held_out) != novel:
                continue
            kind = pair_kind(pair[0], world)
            recalled = pair in stated
            counts.update({"occurrences": 1, "recalled": recalled, f"{kind}_occurrences": 1,
                           f"{kind}_recalled": recalled,
                           "substituted": not recalled and _substitutes(pair, stated, true_pairs, held_out, world)})
    targets = [pair for pair in stated if (pair in held_out) == novel]
    counts.update({"stated": len(targets), "stated_true": sum(pair in true_pairs for pair in targets)})
    return counts


def _share(name, correct, total):
    """``{name: correct / total, name_low, name_high}`` with the Wilson interval; NaN over nothing."""
    low, high = wilson_interval(correct, total)
    return {name: correct / total if total else float("nan"), f"{name}_low": low, f"{name}_high": high}


def pair_metrics(predictions, scenes, held_out, novel=True, world=DEFAULT_WORLD):
    """Recall, precision and seen-pair substitution of attribute-shape pairs (module docstring).

    Inputs:
    - predictions: dict id -> caption (str); every id must be a key of ``scenes``.
    - scenes: dict id -> scene (``{"objects": [{"shape", "colour", "size", ...}, ...]}``).
    - held_out: collection of (attribute, shape) pairs held out of training.
    - novel: score the held-out pairs (True) or the seen ones (False).
    - world: the WorldSpec whose words the captions use.

    Returns, with T "novel" or "seen" (the target pairs):
    - dict of floats T_pair_recall, T_colour_pair_recall, T_size_pair_recall, T_pair_precision,
      T_substitution_rate (each with ``_low`` and ``_high``) and ints n_T_occurrences, n_T_colour_occurrences,
      n_T_size_occurrences, n_T_stated.
    """
    missing = [key for key in predictions if key not in scenes]
    if missing:
        raise UserError(f"{len(missing)} captions have no scene (e.g. id {missing[0]!r}); score captions against "
                        "the scenes of the split they were generated for")
    held_out = {tuple(pair) for pair in held_out}
    totals = Counter()
    for key, caption in predictions.items():
        totals.update(_tallies(caption, scenes[key]["objects"], held_out, novel, world))
    target = "novel" if novel else "seen"
    result = {}
    for kind in ("", "colour_", "size_"):
        result.update(_share(f"{target}_{kind}pair_recall", totals[f"{kind}recalled"], totals[f"{kind}occurrences"]))
        result[f"n_{target}_{kind}occurrences"] = totals[f"{kind}occurrences"]
    result.update(_share(f"{target}_pair_precision", totals["stated_true"], totals["stated"]))
    result.update(_share(f"{target}_substitution_rate", totals["substituted"], totals["occurrences"]))
    result[f"n_{target}_stated"] = totals["stated"]
    return result
