"""Checking shapes-world captions against the scenes they describe.

The generated world knows every object exactly, so a caption's claims can be verified instead of only
compared with reference sentences. ``parse_caption`` reads a caption with the grammar of
``core.shapes_world.spec`` and the words of a world (a ``WorldSpec``: the default world's, or the harder world's
synonyms, shapes, colours and relations); ``grounding_metrics`` scores many captions against their scenes.

Occlusion (the harder world): an object with less than ``VISIBLE_THRESHOLD`` of itself visible is not required, so a
caption that leaves it out misses nothing, but it is in the scene, so naming it is no hallucination.

What a caption claims, and how each claim is scored (all figures are micro-averaged over captions):
- Objects. Each noun phrase is a mention ``(colour, shape)``; either may be None (``a circle``,
  ``two red things``, ``three shapes``). A caption's mentions are reduced to a set of keys.
  * precision: a key is correct iff some object of the scene has every attribute the key names.
    Keys naming neither colour nor shape (``three shapes``) say nothing about identity and are skipped.
  * recall: the share of the scene's distinct ``(colour, shape)`` pairs of required objects named by a caption
    with both words. A partial mention such as ``a circle`` cannot say which circle, so it earns no recall.
  * f1: harmonic mean of the two micro-averaged figures.
- hallucination_rate: share of captions with at least one key (as for precision) matching no object,
  in the spirit of CHAIR-i.
- count_accuracy: a mention with a numeral (``one``, ``two``, ...; the article ``a`` is not a count
  claim) is right iff exactly that many objects match it: ``two red circles`` needs exactly two red
  circles, ``three shapes`` exactly three objects (hidden objects may be counted or not: between the required
  matches and all matches).
- relation_accuracy: ``A left of B`` is right iff some object matching A and a different object
  matching B satisfy it: left ``a.x < b.x``, right ``a.x > b.x``, above ``a.y < b.y``, below ``a.y > b.y``
  (x to the right, y downwards); next ``a`` and ``b`` within ``NEAR_REACH`` times their radii's sum; top ``a``
  covers ``b`` (``b`` in ``a["covers"]``), behind ``b`` covers ``a``; ``A between B and C`` needs a third object
  matching C with ``a.x`` between ``b.x`` and ``c.x``. A phrase matching no object makes the claim wrong.
- size_accuracy: a mention with a size word whose other attributes match some object is right iff one
  of those objects has that size. Mentions matching no object are left to the hallucination figures.
An accuracy over zero claims is NaN; the ``n_*`` entries give the number of claims behind each figure.
"""
from collections import Counter
from dataclasses import dataclass, field, replace

from core.evaluation.relations import relation_holds
from core.runtime.errors import UserError
from core.shapes_world.spec import DEFAULT_WORLD, required_objects

# Articles -> the number they imply. They are not count claims: "a red circle" stays true when the
# scene holds two red circles, while "one red circle" does not.
ARTICLES = {"a": 1, "an": 1, "the": None}


@dataclass(frozen=True)
class Mention:
    """One noun phrase: canonical colour/shape/size (None where the phrase does not say) and count.

    ``count`` is the number the phrase states (``a``/``one`` -> 1, ``two`` -> 2), None without a
    determiner; ``counted`` is True only for numerals, the phrases that make a count claim. ``words`` is where
    the phrase stands in its caption, (first word, one past the noun), and takes no part in comparisons.
    """
    colour: str | None
    shape: str | None
    size: str | None = None
    count: int | None = None
    counted: bool = False
    words: tuple = field(default=(0, 0), compare=False)

    def matches(self, obj):
        """True iff the scene object ``obj`` (a scene dict entry) has every attribute this names."""
        return all(want is None or obj.get(key) == want for key, want in
                   (("colour", self.colour), ("shape", self.shape), ("size", self.size)))


@dataclass(frozen=True)
class Relation:
    """The claim ``a <relation> b`` with relation one of the world's relation names (``c``: the third phrase of
    "between", else None); ``words`` is where the relation words stand in the caption, (first, one past the last),
    and takes no part in comparisons."""
    a: Mention
    relation: str
    b: Mention
    words: tuple = field(default=(0, 0), compare=False)
    c: Mention | None = None


@dataclass(frozen=True)
class ParsedCaption:
    """Every mention of a caption in reading order, and the relations stated between them."""
    mentions: tuple
    relations: tuple


def _read_phrase(words, noun_pos, floor, world):
    """The mention ending at ``words[noun_pos]`` and the index where its phrase starts.

    Walks left over the optional ``[article|count] [size] colour`` in that order, never past
    ``floor`` (the end of the previous phrase), so phrases never overlap.
    """
    shape = world.noun_shapes[words[noun_pos]]
    start = noun_pos
    colour = size = count = None
    counted = False
    if start - 1 >= floor and words[start - 1] in world.colour_of_word:
        start -= 1
        colour = world.colour_of_word[words[start]]
    if start - 1 >= floor and words[start - 1] in world.size_of_word:
        start -= 1
        size = world.size_of_word[words[start]]
    if start - 1 >= floor and (words[start - 1] in ARTICLES or words[start - 1] in world.numerals):
        start -= 1
        counted = words[start] in world.numerals
        count = world.numerals[words[start]] if counted else ARTICLES[words[start]]
    return Mention(colour, shape, size, count, counted, (start, noun_pos + 1)), start


def _relation_before(gap, world):
    """The canonical relation that the words ``gap`` between two phrases end with and how many words state it;
    (None, 0) when they state none."""
    for sequence, relation in world.relation_sequences:
        if tuple(gap[len(gap) - len(sequence):]) == sequence:
            return relation, len(sequence)
    return None, 0


def _open_between(relations, mentions, gap):
    """True iff the phrase after the words ``gap`` is the third of a "between" that the previous phrase left open:
    ``<a> between <b> and <c>``."""
    last = relations[-1] if relations else None
    return last is not None and last.relation == "between" and last.c is None and last.b is mentions[-1] \
        and gap == ["and"]


def parse_caption(caption, world=DEFAULT_WORLD):
    """Read a shapes-world caption into its mentions and relation claims.

    Unknown words are skipped, so model output with stray or repeated words parses without error.

    Inputs:
    - caption: str, lower-case words separated by spaces.
    - world: the WorldSpec whose words the caption uses (``core.shapes_world.worlds``).

    Returns:
    - ParsedCaption with ``mentions`` (tuple of Mention) and ``relations`` (tuple of Relation).
    """
    words = caption.lower().split()
    mentions, relations = [], []
    prev_end = 0
    for pos, word in enumerate(words):
        if word not in world.noun_shapes:
            continue
        mention, start = _read_phrase(words, pos, prev_end, world)
        gap = words[prev_end:start]
        relation, length = _relation_before(gap, world) if mentions else (None, 0)
        if _open_between(relations, mentions, gap):
            relations[-1] = replace(relations[-1], c=mention)
        elif relation is not None:
            relations.append(Relation(mentions[-1], relation, mention, (start - length, start)))
        mentions.append(mention)
        prev_end = pos + 1
    return ParsedCaption(tuple(mentions), tuple(relations))


def _present(mention, objects):
    """True iff some object of the scene matches ``mention``."""
    return any(mention.matches(obj) for obj in objects)


@dataclass(frozen=True)
class Claim:
    """One claim of a caption checked against a scene: its kind (``CLAIM_KINDS``), whether the scene bears it
    out, and the Mention or Relation that makes it (whose ``words`` say where it stands)."""
    kind: str
    correct: bool
    said: Mention | Relation


CLAIM_KINDS = ("object", "count", "size", "relation")


def caption_claims(parsed, objects):
    """Every claim of a parsed caption against a scene's objects (module docstring): for each phrase in reading
    order its identity (colour and shape, unless it names neither), its numeral, its size word (when its colour
    and shape match some object); then each relation."""
    claims = []
    for m in parsed.mentions:
        identity = Mention(m.colour, m.shape)
        if (m.colour, m.shape) != (None, None):
            claims.append(Claim("object", _present(identity, objects), m))
        if m.counted:
            claims.append(Claim("count", _count_holds(m, objects), m))
        if m.size is not None and _present(identity, objects):
            claims.append(Claim("size", _present(m, objects), m))
    claims += [Claim("relation", relation_holds(r, objects), r) for r in parsed.relations]
    return claims


def _count_holds(mention, objects):
    """True iff the mention's number lies between the required objects it matches and all it matches."""
    required = sum(mention.matches(obj) for obj in required_objects({"objects": objects}))
    return required <= mention.count <= sum(mention.matches(obj) for obj in objects)


def _required_pairs(objects):
    """The distinct (colour, shape) pairs of the scene's required objects (``core.shapes_world.hard``)."""
    return {(obj["colour"], obj["shape"]) for obj in required_objects({"objects": objects})}


def missed_pairs(parsed, objects):
    """The (colour, shape) pairs of the scene's required objects that no phrase of the caption names with both
    words, sorted."""
    named = {(m.colour, m.shape) for m in parsed.mentions}
    return sorted(_required_pairs(objects) - named)


def _caption_tallies(parsed, objects):
    """Counts of claims and correct claims of one caption against one scene's objects; an identity named by
    several phrases counts once."""
    claims = caption_claims(parsed, objects)
    keys = {(c.said.colour, c.said.shape): c.correct for c in claims if c.kind == "object"}
    scene_pairs = _required_pairs(objects)
    tallies = {"keys": len(keys), "keys_correct": sum(keys.values()), "pairs": len(scene_pairs),
               "pairs_named": len(scene_pairs) - len(missed_pairs(parsed, objects)),
               "hallucinated": int(not all(keys.values()))}
    for kind, name in (("count", "counts"), ("size", "sizes"), ("relation", "relations")):
        tallies[name] = sum(c.kind == kind for c in claims)
        tallies[f"{name}_correct"] = sum(c.kind == kind and c.correct for c in claims)
    return tallies


# What a wrong claim of each kind shows as on a caption.
MARK_OF_CLAIM = {"object": "hallucination", "count": "count", "size": "size", "relation": "relation"}


def caption_findings(caption, objects, world=DEFAULT_WORLD):
    """What one caption gets wrong about its scene's objects, to show on the caption: the wrong claims of
    ``caption_claims`` and the scene's pairs it leaves unnamed (``missed_pairs``).

    Returns a JSON-able dict: ``marks``, one per wrong claim in caption order, ``{"kind": MARK_OF_CLAIM[kind],
    "words": [first, one past the last] word positions, "note": what the scene has instead}``; ``missed``, the
    unnamed pairs as ``"colour shape"``; ``hallucinated``, whether the caption counts towards hallucination_rate.
    ``world``: the WorldSpec whose words the caption uses.
    """
    parsed = parse_caption(caption, world)
    marks = []
    for claim in caption_claims(parsed, objects):
        if not claim.correct:
            marks.append({"kind": MARK_OF_CLAIM[claim.kind], "words": list(claim.said.words),
                          "note": _note(claim, objects)})
    marks.sort(key=lambda mark: mark["words"])
    return {"marks": marks, "missed": [f"{colour} {shape}" for colour, shape in missed_pairs(parsed, objects)],
            "hallucinated": any(mark["kind"] == "hallucination" for mark in marks)}


def _name(mention):
    """A phrase's object in canonical words: ``large red circle``, ``red thing``, ``circle``, ``object``."""
    return " ".join(word for word in (mention.size, mention.colour, mention.shape or
                                      ("thing" if mention.colour else "object")) if word)


def _note(claim, objects):
    """One line saying why a wrong claim is wrong."""
    said = claim.said
    if claim.kind == "object":
        return f"no {_name(Mention(said.colour, said.shape))} in the scene"
    if claim.kind == "count":
        present = sum(said.matches(obj) for obj in objects)
        return f"the scene has {present} {_name(said)}{'' if present == 1 else 's'}, not {said.count}"
    if claim.kind == "size":
        return f"no {_name(said)} in the scene"
    third = f" and a {_name(said.c)}" if said.c is not None else ""
    return f"no {_name(said.a)} {_RELATION_NOTES.get(said.relation, said.relation)} a {_name(said.b)}{third} in " \
           "the scene"


# How a note says each relation, where its canonical name is not the words.
_RELATION_NOTES = {"left": "left of", "right": "right of", "next": "next to", "top": "on top of"}


def _ratio(numerator, denominator):
    """``numerator / denominator`` as a float, NaN over nothing."""
    return float(numerator) / denominator if denominator else float("nan")


def _f1(precision, recall):
    """Harmonic mean; 0 when both are 0, NaN when either is undefined."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return precision + recall  # 0.0, or NaN propagated from an undefined operand


def grounding_metrics(predictions, scenes, world=DEFAULT_WORLD):
    """Score captions against the scenes they describe (definitions in the module docstring).

    Inputs:
    - predictions: dict id -> caption (str); every id must be a key of ``scenes``.
    - scenes: dict id -> scene (``{"objects": [{"shape", "colour", "size", "x", "y", "r"}, ...]}``, with
      ``visible`` and ``covers`` in the harder world).
    - world: the WorldSpec whose words the captions use.

    Returns:
    - dict with floats ``object_precision``, ``object_recall``, ``object_f1``, ``hallucination_rate``,
      ``count_accuracy``, ``relation_accuracy``, ``size_accuracy`` and ints ``n_captions``,
      ``n_object_mentions``, ``n_scene_pairs``, ``n_count_claims``, ``n_relation_claims``,
      ``n_size_claims``.
    """
    missing = [key for key in predictions if key not in scenes]
    if missing:
        raise UserError(f"{len(missing)} captions have no scene (e.g. id {missing[0]!r}); "
                        "score captions against the scenes of the split they were generated for")
    totals = Counter()
    for key, caption in predictions.items():
        totals.update(_caption_tallies(parse_caption(caption, world), scenes[key]["objects"]))
    precision = _ratio(totals["keys_correct"], totals["keys"])
    recall = _ratio(totals["pairs_named"], totals["pairs"])
    return {
        "object_precision": precision, "object_recall": recall, "object_f1": _f1(precision, recall),
        "hallucination_rate": _ratio(totals["hallucinated"], len(predictions)),
        "count_accuracy": _ratio(totals["counts_correct"], totals["counts"]),
        "relation_accuracy": _ratio(totals["relations_correct"], totals["relations"]),
        "size_accuracy": _ratio(totals["sizes_correct"], totals["sizes"]),
        "n_captions": len(predictions), "n_object_mentions": totals["keys"],
        "n_scene_pairs": totals["pairs"], "n_count_claims": totals["counts"],
        "n_relation_claims": totals["relations"], "n_size_claims": totals["sizes"],
    }
